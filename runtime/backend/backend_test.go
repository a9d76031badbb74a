package backend

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

func TestParseTier(t *testing.T) {
	for name, want := range map[string]Tier{"purego": PureGo, "avx2": AVX2, "vnni": VNNI} {
		got, err := ParseTier(name)
		if err != nil || got != want || got.String() != name {
			t.Errorf("ParseTier(%q) = %v, %v; want %v", name, got, err, want)
		}
	}
	for _, bad := range []string{"", "auto", "AVX2", "avx512", "sse"} {
		if _, err := ParseTier(bad); err == nil || !strings.Contains(err.Error(), "accepted: purego, avx2, vnni, auto") {
			t.Errorf("ParseTier(%q): error %v, want one listing the accepted names", bad, err)
		}
	}
	if !VNNI.AtLeast(AVX2) || !AVX2.AtLeast(AVX2) || PureGo.AtLeast(AVX2) {
		t.Error("AtLeast does not order purego < avx2 < vnni")
	}
	if got := strings.Join(VNNI.Requires(), ","); got != "avx2,fma,avx512f,avx512bw,avx512vnni" {
		t.Errorf("vnni requires %s", got)
	}
}

func TestParseThreads(t *testing.T) {
	for s, want := range map[string]int{"1": 1, "16": 16, "0": 0, " 3 ": 3} {
		if got, err := ParseThreads(s); err != nil || got != want {
			t.Errorf("ParseThreads(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "two", "1.5"} {
		if _, err := ParseThreads(bad); err == nil {
			t.Errorf("ParseThreads(%q) accepted", bad)
		}
	}
}

// SetTier caps: the active tier is the best usable one not above the cap,
// an unknown name changes nothing, and purego is always usable.
func TestSetTierCaps(t *testing.T) {
	defer SetTier(Active().String())
	usable := Usable()
	if usable[len(usable)-1] != PureGo || !CanRun(PureGo) {
		t.Fatalf("usable %v lacks purego", usable)
	}
	for _, capName := range []string{"vnni", "avx2", "purego"} {
		capTier, _ := ParseTier(capName)
		got, err := SetTier(capName)
		if err != nil {
			t.Fatal(err)
		}
		want := PureGo
		for _, u := range usable {
			if u <= capTier {
				want = u
				break
			}
		}
		if got != want || Active() != want {
			t.Errorf("SetTier(%s) = %v (active %v), want %v", capName, got, Active(), want)
		}
	}
	before := Active()
	if _, err := SetTier("avx-512"); err == nil || Active() != before {
		t.Errorf("unknown tier: err %v, active %v (was %v)", err, Active(), before)
	}
	if got, _ := SetTier("auto"); got != usable[0] {
		t.Errorf("auto = %v, want the best usable %v", got, usable[0])
	}
	for _, u := range usable {
		found := false
		for _, c := range Compiled() {
			found = found || c == u
		}
		if !found {
			t.Errorf("usable tier %v not compiled", u)
		}
	}
}

func TestThreads(t *testing.T) {
	prev := SetThreads(3)
	defer SetThreads(prev)
	if Threads() != 3 {
		t.Errorf("Threads() = %d after SetThreads(3)", Threads())
	}
	if p := SetThreads(0); p != 3 || Threads() != runtime.GOMAXPROCS(0) {
		t.Errorf("SetThreads(0): previous %d, Threads %d; want 3, GOMAXPROCS", p, Threads())
	}
	SetThreads(-5)
	if Threads() != runtime.GOMAXPROCS(0) {
		t.Errorf("negative threads: %d", Threads())
	}
}

// The environment is read once at start-up, so each case runs this test
// binary again with it set and reports Active, Threads and EnvError.
func TestEnvironment(t *testing.T) {
	if os.Getenv("FLBQ_BACKEND_CHILD") != "" {
		msg := ""
		if err := EnvError(); err != nil {
			msg = err.Error()
		}
		os.Stdout.WriteString(Active().String() + " " + strconv.Itoa(Threads()) + " " + msg + "\n")
		return
	}
	best := Usable()[0]
	for _, c := range []struct {
		env, want string // want: prefix of "tier threads error"
	}{
		{"FLBQ_CPU=purego", "purego "},
		{"FLBQ_CPU=vnni", best.String() + " "},
		{"FLBQ_THREADS=5", best.String() + " 5 \n"},
		{"FLBQ_CPU=", best.String() + " "},
		{"FLBQ_CPU=fast", best.String() + " " + strconv.Itoa(runtime.GOMAXPROCS(0)) + ` FLBQ_CPU="fast": unknown CPU tier`},
		{"FLBQ_THREADS=-2", best.String() + " " + strconv.Itoa(runtime.GOMAXPROCS(0)) + ` FLBQ_THREADS="-2": bad thread count`},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestEnvironment$")
		cmd.Env = []string{"FLBQ_BACKEND_CHILD=1", c.env}
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, EnvTier+"=") && !strings.HasPrefix(kv, EnvThreads+"=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v", c.env, err)
		}
		if !strings.HasPrefix(string(out), c.want) {
			t.Errorf("%s: child reported %q, want prefix %q", c.env, out, c.want)
		}
	}
}
