package main

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
)

// runCLI runs the app in-process and returns stdout and the error.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := newApp()
	var out bytes.Buffer
	app.Writer = &out
	app.ErrWriter = io.Discard
	// Commands print with fmt to os.Stdout; capture it too.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan struct{})
	var piped bytes.Buffer
	go func() { io.Copy(&piped, r); close(done) }()
	runErr := app.Run(append([]string{"flbq"}, args...))
	w.Close()
	os.Stdout = old
	<-done
	return out.String() + piped.String(), runErr
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
