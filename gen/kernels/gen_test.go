package kernels

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
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
	dir := filepath.Join("..", "..", "generated", "kernels")
	files, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s is stale or missing: run go generate ./generated/kernels", name)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if _, ok := files[e.Name()]; !ok {
			t.Errorf("unexpected file %s in %s", e.Name(), dir)
		}
	}
}

func TestStaleRemoved(t *testing.T) {
	d := t.TempDir()
	stale := filepath.Join(d, "old_amd64.s")
	keep := filepath.Join(d, "handwritten.go")
	os.WriteFile(stale, []byte(Header+"\n\npackage kernels\n"), 0o644)
	os.WriteFile(keep, []byte("package kernels\n"), 0o644)
	if err := Write(d); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Fatal("stale generated file kept")
	}
	if _, err := os.Stat(keep); err != nil {
		t.Fatal("hand-written file removed")
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
