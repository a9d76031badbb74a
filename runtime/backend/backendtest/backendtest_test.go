package backendtest

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/flbq/flbq/runtime/backend"
)

func TestMain(m *testing.M) { Main(m) }

// mainChild marks the child processes of TestRequireTier, which run with
// Main's checks (unlike RunInChild's).
const mainChild = "FLBQ_BACKENDTEST_MAIN_CHILD"

// A run that requires a tier it does not execute fails, and one that does
// passes; both print the active tier.
func TestRequireTier(t *testing.T) {
	if os.Getenv(mainChild) != "" {
		ForEachTier(t, func(t *testing.T, tier backend.Tier) {
			if backend.Active() != tier {
				t.Errorf("ForEachTier ran %s with %s active", tier, backend.Active())
			}
		})
		return
	}
	best := backend.Usable()[0].String()
	for _, c := range []struct {
		env  []string
		pass bool
		want string
	}{
		{[]string{"FLBQ_CPU=purego", EnvRequire + "=purego"}, true, "backend: tier purego active"},
		{[]string{EnvRequire + "=" + best}, true, "backend: tier " + best + " active"},
		{[]string{"FLBQ_CPU=purego", EnvRequire + "=avx2"}, false, "the active tier is purego"},
		{[]string{EnvRequire + "=sse"}, false, `FLBQ_TEST_REQUIRE_TIER="sse"`},
		{[]string{"FLBQ_CPU=avx3"}, false, `FLBQ_CPU="avx3"`},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRequireTier$", "-test.v")
		cmd.Env = append([]string{mainChild + "=1"}, c.env...)
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "FLBQ_") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		out, err := cmd.CombinedOutput()
		if (err == nil) != c.pass || !strings.Contains(string(out), c.want) {
			t.Errorf("%v: err %v, output:\n%s\nwant pass=%v and %q", c.env, err, out, c.pass, c.want)
		}
	}
	if !backend.CanRun(backend.VNNI) {
		// A required tier the CPU lacks fails ForEachTier instead of skipping.
		cmd := exec.Command(os.Args[0], "-test.run=^TestRequireTier$")
		cmd.Env = append(os.Environ(), mainChild+"=1", EnvRequire+"=vnni")
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("required vnni on a CPU without it passed:\n%s", out)
		}
	}
}

// RunInChild gives the child the environment asked for and skips Main's
// checks there, so that code can be tested against a bad value.
func TestRunInChild(t *testing.T) {
	if InChild() {
		if err := backend.EnvError(); err == nil || !strings.Contains(err.Error(), `FLBQ_CPU="avx3"`) {
			t.Fatalf("child EnvError = %v", err)
		}
		return
	}
	out, err := RunInChild(t, "TestRunInChild", "FLBQ_CPU=avx3")
	if err != nil || !strings.Contains(out, "--- PASS: TestRunInChild") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
