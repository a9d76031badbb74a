// Package backendtest lets tests run on every CPU tier and require one.
//
// With FLBQ_TEST_REQUIRE_TIER=<tier> set (as zeebo/blake3's
// BLAKE3_TEST_REQUIRE_ASM), a test binary whose TestMain calls Main fails at
// once unless that tier is the active one, and ForEachTier fails instead of
// skipping when it cannot run that tier; so an emulator or lent machine that
// silently fell back to a lower tier cannot pass. Every run logs the tier.
package backendtest

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/flbq/flbq/runtime/backend"
)

// EnvRequire names the tier a test run must execute.
const EnvRequire = "FLBQ_TEST_REQUIRE_TIER"

// Required returns the tier FLBQ_TEST_REQUIRE_TIER names (ok false when unset).
func Required() (t backend.Tier, ok bool, err error) {
	v := strings.TrimSpace(os.Getenv(EnvRequire))
	if v == "" {
		return 0, false, nil
	}
	t, err = backend.ParseTier(v)
	if err != nil {
		return 0, false, fmt.Errorf("%s=%q: %w", EnvRequire, v, err)
	}
	return t, true, nil
}

// check returns why this process does not satisfy FLBQ_TEST_REQUIRE_TIER and
// the backend environment (nil when it does).
func check() error {
	if err := backend.EnvError(); err != nil {
		return err
	}
	req, ok, err := Required()
	if err != nil || !ok {
		return err
	}
	if !backend.CanRun(req) {
		return fmt.Errorf("%s=%s: this CPU and build cannot run it (usable: %v)", EnvRequire, req, backend.Usable())
	}
	if a := backend.Active(); a != req {
		return fmt.Errorf("%s=%s: the active tier is %s (FLBQ_CPU caps it?)", EnvRequire, req, a)
	}
	return nil
}

// Main is a TestMain for packages whose code dispatches on the tier: it
// prints the active tier and threads, fails the run when the backend
// environment is bad or the required tier is not active, then runs the tests.
func Main(m *testing.M) {
	if os.Getenv(envChild) != "" {
		os.Exit(m.Run()) // RunInChild: the bad environment is the point
	}
	fmt.Printf("backend: tier %s active (usable %v), %d threads\n", backend.Active(), backend.Usable(), backend.Threads())
	if err := check(); err != nil {
		fmt.Fprintln(os.Stderr, "backendtest:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// ForEachTier runs f as a subtest with each compiled tier active in turn
// (best first), restoring the tier active before. A tier this CPU cannot run
// is skipped, or fails the test when FLBQ_TEST_REQUIRE_TIER names it.
func ForEachTier(t *testing.T, f func(t *testing.T, tier backend.Tier)) {
	t.Helper()
	req, required, err := Required()
	if err != nil {
		t.Fatal(err)
	}
	prev := backend.Active()
	defer backend.SetTier(prev.String())
	for _, tier := range backend.Compiled() {
		t.Run(tier.String(), func(t *testing.T) {
			got, err := backend.SetTier(tier.String())
			if err != nil {
				t.Fatal(err)
			}
			if got != tier {
				if required && req == tier {
					t.Fatalf("%s=%s but this CPU runs at most %s", EnvRequire, req, got)
				}
				t.Skipf("tier %s cannot run on this CPU (best here: %s)", tier, backend.Usable()[0])
			}
			f(t, tier)
			if a := backend.Active(); a != tier {
				t.Fatalf("active tier changed to %s during the %s run", a, tier)
			}
		})
	}
	if required && !backend.CanRun(req) {
		t.Fatalf("%s=%s: not usable here (usable: %v)", EnvRequire, req, backend.Usable())
	}
}

// envChild marks a process started by RunInChild.
const envChild = "FLBQ_BACKENDTEST_CHILD"

// InChild reports whether this test process was started by RunInChild.
func InChild() bool { return os.Getenv(envChild) != "" }

// RunInChild runs the test named test of this binary again in a child
// process with the backend environment replaced by env (e.g. "FLBQ_CPU=x"):
// FLBQ_CPU and FLBQ_THREADS are read once per process, so testing how code
// reacts to them needs a process of its own. Main skips its checks in the
// child. It returns the child's combined output and exit error.
func RunInChild(t *testing.T, test string, env ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+test+"$", "-test.count=1", "-test.v")
	cmd.Env = []string{envChild + "=1"}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, backend.EnvTier+"=") && !strings.HasPrefix(kv, backend.EnvThreads+"=") && !strings.HasPrefix(kv, EnvRequire+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}
