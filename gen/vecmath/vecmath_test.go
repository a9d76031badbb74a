package vecmath

import (
	"bytes"
	"path/filepath"
	"regexp"
	"strings"
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

// TestVEXRegistersOnly: avo's allocator may hand out X16–X31/Y16–Y31, which
// only EVEX (AVX-512) encodes; these kernels must run on AVX2-only CPUs.
func TestVEXRegistersOnly(t *testing.T) {
	files, err := Files()
	if err != nil {
		t.Fatal(err)
	}
	evex := regexp.MustCompile(`\b([XY](1[6-9]|2[0-9]|3[01])|Z[0-9]+|K[0-7])\b`)
	for i, line := range strings.Split(string(files["vecmath_amd64.s"]), "\n") {
		if m := evex.FindString(line); m != "" {
			t.Errorf("vecmath_amd64.s:%d uses %s: %s", i+1, m, strings.TrimSpace(line))
		}
	}
}
