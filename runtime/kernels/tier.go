// Package kernels runs quantized linear layers (F-LBQ weights of 1–8 bits per
// channel tile, int8 dynamic activations) on the generated micro-kernels of
// generated/kernels. It owns the kernel ABI as seen by the model runtime:
// CPU-tier selection, the activation quantizer, multi-threaded GEMM, the
// per-layer QLinear type and a pure-Go reference oracle.
//
// The computation, for a weight matrix packed by runtime/qformat, is
//
//	y[m,n] = sx[m]·sw[n]·(Σk q[n,k]·x[m,k] − z[n]·Σk x[m,k]) + bias[n]
//
// with the integer part accumulated exactly in int32 (K ≤ qformat.MaxK).
//
// # Tiers
//
// "vnni" (AVX-512 VNNI, VPDPBUSD), "avx2" (VPMADDUBSW+VPMADDWD) and "purego".
// The best tier the CPU supports (golang.org/x/sys/cpu, read once) is used,
// capped by the environment variable FLBQ_CPU=vnni|avx2|purego (read once at
// start-up) and by SetTier. ActiveTier reports the tier in use. Every tier
// computes bit-identical int32 accumulators and float32 outputs.
package kernels

import (
	"fmt"
	"os"
	"strings"
	"sync/atomic"

	"golang.org/x/sys/cpu"

	gk "github.com/flbq/flbq/generated/kernels"
)

// EnvCPU is the environment variable that caps the tier.
const EnvCPU = "FLBQ_CPU"

var (
	usable []*gk.Tier // supported tiers, best first
	active atomic.Pointer[gk.Tier]
	envErr error
)

func hasFeature(f string) bool {
	switch f {
	case "avx2":
		return cpu.X86.HasAVX2
	case "avx512f":
		return cpu.X86.HasAVX512F
	case "avx512bw":
		return cpu.X86.HasAVX512BW
	case "avx512vnni":
		return cpu.X86.HasAVX512VNNI
	}
	return false
}

func init() {
	for _, t := range gk.Tiers {
		ok := true
		for _, f := range t.Requires {
			ok = ok && hasFeature(f)
		}
		if ok {
			usable = append(usable, t)
		}
	}
	active.Store(usable[0])
	if v := strings.TrimSpace(os.Getenv(EnvCPU)); v != "" {
		if err := capTier(v); err != nil {
			envErr = fmt.Errorf("%s=%s: %w", EnvCPU, v, err)
		}
	}
}

// capTier selects the best usable tier that is not above name.
func capTier(name string) error {
	if name == "auto" {
		active.Store(usable[0])
		return nil
	}
	pos := -1
	for i, t := range gk.Tiers {
		if t.Name == name {
			pos = i
		}
	}
	if pos < 0 {
		return fmt.Errorf("unknown CPU tier %q (want %s)", name, strings.Join(AllTiers(), ", "))
	}
	for _, t := range gk.Tiers[pos:] {
		for _, u := range usable {
			if u == t {
				active.Store(t)
				return nil
			}
		}
	}
	return fmt.Errorf("no usable tier at or below %q", name)
}

// EnvError reports a bad FLBQ_CPU value (nil if unset or valid).
func EnvError() error { return envErr }

// AllTiers lists the tiers compiled into this build, best first.
func AllTiers() []string {
	var s []string
	for _, t := range gk.Tiers {
		s = append(s, t.Name)
	}
	return s
}

// Tiers lists the tiers this CPU can run, best first.
func Tiers() []string {
	var s []string
	for _, t := range usable {
		s = append(s, t.Name)
	}
	return s
}

// ActiveTier returns the name of the tier in use.
func ActiveTier() string { return active.Load().Name }

// SetTier makes name ("vnni", "avx2", "purego", or "auto" for the best) the
// active tier for all subsequent calls. It fails if the CPU cannot run it.
func SetTier(name string) error {
	if name == "" || name == "auto" {
		active.Store(usable[0])
		return nil
	}
	t := tierByName(name)
	if t == nil {
		return fmt.Errorf("kernels: CPU tier %q is not usable here (usable: %s)", name, strings.Join(Tiers(), ", "))
	}
	active.Store(t)
	return nil
}

func tierByName(name string) *gk.Tier {
	for _, t := range usable {
		if t.Name == name {
			return t
		}
	}
	return nil
}

// Peak runs the register-only int8 multiply-accumulate loop of a tier for
// iters iterations and returns the multiply-accumulates performed (0 if the
// tier has no peak loop or is not usable).
func Peak(tier string, iters int) int64 {
	t := tierByName(tier)
	if t == nil || t.Peak == nil || iters <= 0 {
		return 0
	}
	t.Peak(iters)
	return int64(iters) * int64(t.PeakMACs)
}
