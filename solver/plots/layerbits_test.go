package plots

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flbq/flbq/solver"
)

func alloc(bits ...int) *solver.Allocation {
	a := &solver.Allocation{Solver: "dp"}
	// Two layers: "a" with groups of 10 and 30 weights, then "b".
	sizes := []int64{10, 30, 20}
	layers := []string{"a", "a", "b"}
	for i, b := range bits {
		a.Units = append(a.Units, solver.AllocUnit{UnitID: solver.UnitID{Layer: layers[i], Group: i}, Channels: [2]int{0, 1}, Weights: sizes[i], Bits: b})
	}
	a.AvgBits = solver.ComputeAvgBits(a.Units)
	return a
}

func TestLayerAverages(t *testing.T) {
	layers, bits := LayerAverages(alloc(2, 6, 3))
	// Layer a: (10·2 + 30·6) / 40 = 5.
	if strings.Join(layers, ",") != "a,b" || bits[0] != 5 || bits[1] != 3 {
		t.Fatalf("got %v %v; want [a b] [5 3]", layers, bits)
	}
}

func TestLayerBitsFiles(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"f.png", "f.svg"} {
		p := filepath.Join(dir, name)
		if err := LayerBits(p, "t", []LayerBitsSeries{{"dp", alloc(2, 6, 3)}, {"lg", alloc(4, 4, 4)}}); err != nil {
			t.Fatal(err)
		}
		if st, err := os.Stat(p); err != nil || st.Size() < 500 {
			t.Fatalf("%s not written: %v", name, err)
		}
	}
	// A highlight adds shaded bars and a legend entry: the SVG grows.
	plain, shaded := filepath.Join(dir, "plain.svg"), filepath.Join(dir, "shaded.svg")
	series := []LayerBitsSeries{{"dp", alloc(2, 6, 3)}}
	if err := LayerBits(plain, "t", series); err != nil {
		t.Fatal(err)
	}
	if err := LayerBits(shaded, "t", series, Highlight{Label: "global attention", Match: func(l string) bool { return l == "b" }}); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(plain)
	b, _ := os.ReadFile(shaded)
	if !bytes.Contains(b, []byte("global attention")) || len(b) <= len(a) {
		t.Errorf("highlighted figure: %d bytes (plain %d), legend present: %v", len(b), len(a), bytes.Contains(b, []byte("global attention")))
	}
	mismatch := alloc(2, 6, 3)
	mismatch.Units[2].Layer = "c"
	if err := LayerBits(filepath.Join(dir, "x.png"), "t", []LayerBitsSeries{{"dp", alloc(2, 6, 3)}, {"other", mismatch}}); err == nil {
		t.Fatal("allocations of different models accepted")
	}
	if _, err := os.Stat(filepath.Join(dir, "x.png")); err == nil {
		t.Fatal("file written despite the error")
	}
}
