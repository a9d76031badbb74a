// Package backend is flbq's one CPU backend layer: which instruction-set tier
// every kernel runs (the fp32 ops of runtime/nn and the int8 kernels of
// runtime/kernels alike) and how many goroutines one operation may use.
//
// # Tiers
//
// Best first: "vnni" (AVX-512 VNNI int8 kernels; fp32 on AVX2+FMA), "avx2"
// (AVX2+FMA fp32 and VPMADDUBSW+VPMADDWD int8 kernels) and "purego" (the
// readable Go twins of every kernel, on any architecture). The CPU's features
// are read once (golang.org/x/sys/cpu); the active tier is the best one the
// CPU runs, capped by the environment variable FLBQ_CPU (read once at start-up)
// and by SetTier. Every tier computes bit-identical int8 results; the fp32
// kernels agree within the bounds their tests state.
//
// # Threads
//
// Threads is the one parallelism setting: every kernel, op, detector stage,
// calibration and evaluation run splits its work across at most Threads()
// goroutines. It defaults to GOMAXPROCS and is set by FLBQ_THREADS or
// SetThreads.
//
// A bad FLBQ_CPU or FLBQ_THREADS value is not silently ignored: the defaults
// stay in force and EnvError reports it, naming the variable and the accepted
// values; the CLI and every model loader fail with it.
package backend

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
)

// Environment variables read once at start-up.
const (
	// EnvTier caps the tier: vnni, avx2, purego or auto.
	EnvTier = "FLBQ_CPU"
	// EnvThreads sets Threads: a positive integer, or 0 for GOMAXPROCS.
	EnvThreads = "FLBQ_THREADS"
)

// Tier is an instruction-set tier; a larger value is a better tier.
type Tier uint8

const (
	PureGo Tier = iota
	AVX2
	VNNI
	numTiers
)

var tierNames = [numTiers]string{PureGo: "purego", AVX2: "avx2", VNNI: "vnni"}

// tierRequires lists the x86 features (x/sys/cpu names) each tier needs.
var tierRequires = [numTiers][]string{
	AVX2: {"avx2", "fma"},
	VNNI: {"avx2", "fma", "avx512f", "avx512bw", "avx512vnni"},
}

// String returns the tier's name ("vnni", "avx2" or "purego").
func (t Tier) String() string {
	if t < numTiers {
		return tierNames[t]
	}
	return fmt.Sprintf("Tier(%d)", uint8(t))
}

// Requires lists the x86 features the tier needs (x/sys/cpu names).
func (t Tier) Requires() []string {
	if t >= numTiers {
		return nil
	}
	return append([]string(nil), tierRequires[t]...)
}

// AtLeast reports whether t is tier u or a better one (a VNNI host runs the
// AVX2 fp32 kernels, for example).
func (t Tier) AtLeast(u Tier) bool { return t >= u }

var (
	usable    []Tier // compiled and supported by this CPU, best first
	active    atomic.Uint32
	threadsN  atomic.Int32
	envErrors []error
)

func init() {
	for t := numTiers - 1; ; t-- {
		if compiled(t) && cpuHas(tierRequires[t]) {
			usable = append(usable, t)
		}
		if t == PureGo {
			break
		}
	}
	active.Store(uint32(usable[0]))
	// An empty value counts as unset, as for most environment variables.
	if v := os.Getenv(EnvTier); strings.TrimSpace(v) != "" {
		if _, err := SetTier(v); err != nil {
			envErrors = append(envErrors, fmt.Errorf("%s=%q: %w", EnvTier, v, err))
		}
	}
	if v := os.Getenv(EnvThreads); strings.TrimSpace(v) != "" {
		n, err := ParseThreads(v)
		if err != nil {
			envErrors = append(envErrors, fmt.Errorf("%s=%q: %w", EnvThreads, v, err))
		} else {
			SetThreads(n)
		}
	}
}

// ParseTier returns the tier named name ("auto" is not a tier: see SetTier).
func ParseTier(name string) (Tier, error) {
	for t, n := range tierNames {
		if n == name {
			return Tier(t), nil
		}
	}
	return 0, fmt.Errorf("unknown CPU tier %q (accepted: %s, auto)", name, strings.Join(tierNames[:], ", "))
}

// ParseThreads parses a thread setting: a positive integer, or 0 for
// GOMAXPROCS.
func ParseThreads(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad thread count %q (accepted: a positive integer, or 0 for all CPUs)", s)
	}
	return n, nil
}

// EnvError reports a bad FLBQ_CPU or FLBQ_THREADS value (nil when both are
// unset or valid). The defaults stay in force for a bad value.
func EnvError() error {
	switch len(envErrors) {
	case 0:
		return nil
	case 1:
		return envErrors[0]
	}
	return fmt.Errorf("%v; %v", envErrors[0], envErrors[1])
}

// Active returns the tier in use.
func Active() Tier { return Tier(active.Load()) }

// Usable lists the tiers this build and CPU can run, best first.
func Usable() []Tier { return append([]Tier(nil), usable...) }

// Compiled lists the tiers compiled into this build, best first (the purego
// build tag and non-amd64 builds have only PureGo).
func Compiled() []Tier {
	var ts []Tier
	for t := numTiers - 1; ; t-- {
		if compiled(t) {
			ts = append(ts, t)
		}
		if t == PureGo {
			return ts
		}
	}
}

// CanRun reports whether this build and CPU run tier t.
func CanRun(t Tier) bool {
	for _, u := range usable {
		if u == t {
			return true
		}
	}
	return false
}

// SetTier caps the active tier at name: the best usable tier not above it
// becomes active ("auto": the best usable tier). It returns the tier now
// active; an unknown name is an error and changes nothing.
func SetTier(name string) (Tier, error) {
	name = strings.TrimSpace(name)
	if name == "" || name == "auto" {
		active.Store(uint32(usable[0]))
		return usable[0], nil
	}
	want, err := ParseTier(name)
	if err != nil {
		return Active(), err
	}
	for _, u := range usable {
		if u <= want {
			active.Store(uint32(u))
			return u, nil
		}
	}
	panic("backend: purego is always usable")
}

// Threads returns how many goroutines one operation may use (≥ 1).
func Threads() int {
	if n := int(threadsN.Load()); n > 0 {
		return n
	}
	return runtime.GOMAXPROCS(0)
}

// SetThreads sets Threads (n ≤ 0: GOMAXPROCS) and returns the previous
// setting, so that `defer backend.SetThreads(backend.SetThreads(n))` restores it.
func SetThreads(n int) (prev int) { return int(threadsN.Swap(int32(max(n, 0)))) }
