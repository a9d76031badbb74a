package kernels

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/flbq/flbq/gen/genfiles"
)

func TestDeterministic(t *testing.T) {
	d1, d2 := t.TempDir(), t.TempDir()
	if err := Write(d1); err != nil {
		t.Fatal(err)
	}
	if err := Write(d2); err != nil {
		t.Fatal(err)
	}
	files, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		a, err1 := os.ReadFile(filepath.Join(d1, name))
		b, err2 := os.ReadFile(filepath.Join(d2, name))
		if err1 != nil || err2 != nil || !bytes.Equal(a, b) || !bytes.Equal(a, data) {
			t.Fatalf("%s differs between runs", name)
		}
		for _, bad := range []string{d1, "/tmp/", "command:", "go run"} {
			if bytes.Contains(data[:bytes.IndexByte(data, '\n')], []byte(bad)) {
				t.Fatalf("%s header mentions %q", name, bad)
			}
		}
	}
}

// TestCommitted checks that generated/kernels is what the generator emits
// (the same check as `make check-generated`, without touching the tree).
func TestCommitted(t *testing.T) {
	files, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range genfiles.Stale(filepath.Join("..", "..", "generated", "kernels"), files) {
		t.Errorf("generated/kernels: %s: run go generate ./generated/kernels", p)
	}
}

// TestVet compiles and vets (asmdecl included) the committed generated code
// for amd64, amd64 with the purego tag, and arm64.
func TestVet(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		if gobin, err = exec.LookPath("go"); err != nil {
			t.Skip("no go command")
		}
	}
	for _, env := range [][]string{{"GOARCH=amd64"}, {"GOARCH=amd64", "FLAGS=-tags=purego"}, {"GOARCH=arm64"}} {
		args := []string{"vet"}
		var envs []string
		for _, e := range env {
			if f, ok := strings.CutPrefix(e, "FLAGS="); ok {
				args = append(args, f)
			} else {
				envs = append(envs, e)
			}
		}
		args = append(args, "github.com/flbq/flbq/generated/kernels")
		cmd := exec.Command(gobin, args...)
		cmd.Env = append(os.Environ(), envs...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%v go %v: %v\n%s", envs, args, err, out)
		}
	}
}
