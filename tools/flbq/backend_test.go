package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/backend/backendtest"
)

// childArgsEnv makes the test binary run main() with these arguments
// (space-separated) instead of the tests: the backend environment is read
// once per process, so each case needs a process of its own. Otherwise
// TestMain logs the CPU tier and enforces FLBQ_TEST_REQUIRE_TIER.
const childArgsEnv = "FLBQ_TEST_MAIN_ARGS"

func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv(childArgsEnv); ok {
		os.Args = append([]string{"flbq"}, strings.Fields(args)...)
		main()
		os.Exit(0)
	}
	backendtest.Main(m)
}

// runMain runs flbq's main in a child process with extra environment
// variables; it returns stderr and whether the process exited 0.
func runMain(t *testing.T, env []string, args ...string) (string, bool) {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = []string{childArgsEnv + "=" + strings.Join(args, " ")}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, backend.EnvTier+"=") && !strings.HasPrefix(kv, backend.EnvThreads+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return stderr.String(), err == nil
}

// A mistyped FLBQ_CPU or FLBQ_THREADS fails every command before it does
// anything, naming the variable and the accepted values; valid values run.
func TestBackendEnvironment(t *testing.T) {
	dir := filepath.Join(cocoGoldens, "case1_small")
	evalArgs := []string{"eval-results", "--gt", filepath.Join(dir, "gt.json"), "--dets", filepath.Join(dir, "dets.json")}
	for _, c := range []struct {
		env  []string
		args []string
		want []string // in stderr; none: the command succeeds
	}{
		{[]string{"FLBQ_CPU=avx512"}, evalArgs, []string{`FLBQ_CPU="avx512"`, "unknown CPU tier", "accepted: purego, avx2, vnni, auto"}},
		{[]string{"FLBQ_THREADS=two"}, evalArgs, []string{`FLBQ_THREADS="two"`, "positive integer"}},
		{[]string{"FLBQ_THREADS=-1"}, evalArgs, []string{`FLBQ_THREADS="-1"`}},
		{[]string{"FLBQ_CPU=nope", "FLBQ_THREADS=x"}, evalArgs, []string{"FLBQ_CPU", "FLBQ_THREADS"}},
		// The bad value is reported even where the command would fail anyway.
		{[]string{"FLBQ_CPU=avx"}, []string{"eval-results", "--gt", "missing.json", "--dets", "missing.json"}, []string{`FLBQ_CPU="avx"`}},
		{nil, append(evalArgs, "--threads", "-2"), []string{"--threads -2"}},
		{[]string{"FLBQ_CPU=purego", "FLBQ_THREADS=1"}, evalArgs, nil},
		{[]string{"FLBQ_CPU=auto"}, append(evalArgs, "--threads", "3"), nil},
		{[]string{"FLBQ_CPU=", "FLBQ_THREADS= "}, evalArgs, nil}, // empty is unset
	} {
		stderr, ok := runMain(t, c.env, c.args...)
		if len(c.want) == 0 {
			if !ok {
				t.Errorf("%v %v: failed: %s", c.env, c.args, stderr)
			}
			continue
		}
		if ok {
			t.Errorf("%v %v: succeeded, want an error", c.env, c.args)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(stderr, w) {
				t.Errorf("%v %v: stderr %q lacks %q", c.env, c.args, stderr, w)
			}
		}
		if strings.Contains(stderr, "missing.json") {
			t.Errorf("%v: the command ran despite the bad environment: %s", c.env, stderr)
		}
	}
}
