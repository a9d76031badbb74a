package vecmath

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/flbq/flbq/gen/genfiles"
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
	files, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range genfiles.Stale(filepath.Join("..", "..", "generated", "vecmath"), files) {
		t.Errorf("generated/vecmath: %s: run go generate ./generated/vecmath", p)
	}
}
