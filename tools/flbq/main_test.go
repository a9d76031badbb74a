package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// runCLI runs the program in-process (run) and returns its stdout and the
// error; stderr is discarded.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(args, &out, io.Discard)
	return out.String(), err
}

func TestVersion(t *testing.T) {
	out, err := runCLI(t, "--version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, version) {
		t.Fatalf("--version printed %q, want it to contain %q", out, version)
	}
}

func TestUnknownCommandFails(t *testing.T) {
	if _, err := runCLI(t, "no-such-command"); err == nil {
		t.Fatal("unknown command succeeded")
	}
}
