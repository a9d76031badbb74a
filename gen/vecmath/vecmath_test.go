package vecmath

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestDeterministic(t *testing.T) {
	a, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	b, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range a {
		if !bytes.Equal(data, b[name]) {
			t.Fatalf("%s differs between runs", name)
		}
		first := data[:bytes.IndexByte(data, '\n')]
		if string(first) != Header {
			t.Fatalf("%s starts with %q, want %q", name, first, Header)
		}
	}
}

// TestCommitted checks that generated/vecmath is what the generator emits
// (the same check as `make check-generated`, without touching the tree).
func TestCommitted(t *testing.T) {
	dir := filepath.Join("..", "..", "generated", "vecmath")
	files, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil || !bytes.Equal(got, data) {
			t.Errorf("%s is stale or missing: run go generate ./generated/vecmath", name)
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if _, ok := files[e.Name()]; !ok {
			t.Errorf("unexpected file %s in %s", e.Name(), dir)
		}
	}
}

func TestWriteRemovesStale(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "old_amd64.s")
	mine := filepath.Join(dir, "notes.txt")
	os.WriteFile(stale, []byte(Header+"\n"), 0o644)
	os.WriteFile(mine, []byte("not generated\n"), 0o644)
	if err := Write(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale generated file kept")
	}
	if _, err := os.Stat(mine); err != nil {
		t.Errorf("non-generated file removed: %v", err)
	}
}
