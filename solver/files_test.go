package solver

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sampleCurves() *Curves {
	return &Curves{
		Bits: []int{2, 4, 8},
		Units: []CurveUnit{
			{UnitID: UnitID{"blocks.0.attn.qkv", 0}, Channels: [2]int{0, 32}, Weights: 32 * 96, Distortion: []float64{1.5, 0.1, 0.001}},
			{UnitID: UnitID{"blocks.0.attn.qkv", 1}, Channels: [2]int{32, 64}, Weights: 32 * 96, Distortion: []float64{2, 0.2, 0}},
		},
		Meta: map[string]any{"model": "test"},
	}
}

func sampleAlloc() *Allocation {
	return &Allocation{
		Solver: "dp", TargetBits: 3, AvgBits: 3, PredictedDistortion: 1.6,
		Units: []AllocUnit{
			{UnitID: UnitID{"blocks.0.attn.qkv", 0}, Channels: [2]int{0, 32}, Weights: 3072, Bits: 2},
			{UnitID: UnitID{"blocks.0.attn.qkv", 1}, Channels: [2]int{32, 64}, Weights: 3072, Bits: 4},
		},
		Meta: map[string]any{"floor": 1.0},
	}
}

func TestCurvesRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.json")
	c := sampleCurves()
	if err := WriteCurvesFile(p, c); err != nil {
		t.Fatal(err)
	}
	got, err := ReadCurvesFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Units) != 2 || got.Units[1].Distortion[1] != 0.2 || got.Units[1].Channels != [2]int{32, 64} || got.Meta["model"] != "test" {
		t.Fatalf("round trip changed the content: %+v", got)
	}
	// Writing what was read gives the same bytes.
	a, _ := MarshalCurves(c)
	b, _ := MarshalCurves(got)
	if !bytes.Equal(a, b) {
		t.Fatal("re-encoding is not byte-identical")
	}
}

func TestAllocRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "a.json")
	if err := WriteAllocFile(p, sampleAlloc()); err != nil {
		t.Fatal(err)
	}
	got, err := ReadAllocFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.Solver != "dp" || got.AvgBits != 3 || got.Units[1].Bits != 4 || got.BitsByUnit()[UnitID{"blocks.0.attn.qkv", 0}] != 2 {
		t.Fatalf("round trip changed the content: %+v", got)
	}
}

// mutate applies a textual substitution to a valid encoded file.
func mutate(t *testing.T, data []byte, old, new string) []byte {
	t.Helper()
	if !bytes.Contains(data, []byte(old)) {
		t.Fatalf("fixture lacks %q", old)
	}
	return bytes.Replace(data, []byte(old), []byte(new), 1)
}

func TestCurvesReaderRejects(t *testing.T) {
	good, err := MarshalCurves(sampleCurves())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ old, new, want string }{
		{`"flbq.curves/v1"`, `"flbq.curves/v2"`, `format "flbq.curves/v2" is not "flbq.curves/v1"`},
		{`"format": "flbq.curves/v1",`, ``, `missing field "format"`},
		{`"bits": [2,4,8]`, `"bits": [2,4,9]`, "bits[2] = 9 is outside 1..8"},
		{`"bits": [2,4,8]`, `"bits": [4,2,8]`, "strictly increasing"},
		{`"bits": [2,4,8]`, `"bits": []`, "bits: the list is empty"},
		{`"distortion":[1.5,0.1,0.001]`, `"distortion":[1.5,-0.1,0.001]`, `units[0] (layer "blocks.0.attn.qkv" group 0): distortion[1] (bits 4) is -0.1`},
		{`"distortion":[1.5,0.1,0.001]`, `"distortion":[1.5,0.1]`, "distortion has 2 entries, bits has 3"},
		{`"distortion":[1.5,0.1,0.001]`, `"distortion":[1.5,NaN,0]`, "line 5"},
		{`"distortion":[1.5,0.1,0.001]`, `"distortion":[1.5,1e999,0]`, "distortion"},
		{`"group":1`, `"group":0`, "units[1] (layer \"blocks.0.attn.qkv\" group 0): duplicate of units[0]"},
		{`"weights":3072,"distortion":[2`, `"distortion":[2`, `units[1] (layer "blocks.0.attn.qkv" group 1): missing field "weights"`},
		{`"weights":3072,"distortion":[2`, `"weights":-5,"distortion":[2`, "weights -5 is not positive"},
		{`"channels":[32,64]`, `"channels":[64,32]`, "channels [64, 32] is not a non-empty range"},
		{`"layer":"blocks.0.attn.qkv","group":1`, `"group":1`, `units[1]: missing field "layer"`},
		{`"distortion":[2`, `"distortions":[2`, `unknown field "distortions"`},
	} {
		_, err := ParseCurves(mutate(t, good, tc.old, tc.new))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s → %s: error %v, want it to contain %q", tc.old, tc.new, err, tc.want)
		}
	}
	for _, bad := range []string{"", "{", "[]", `{"format":"flbq.curves/v1","bits":[1],"units":[]}`, string(good) + "{}"} {
		if _, err := ParseCurves([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestAllocReaderRejects(t *testing.T) {
	good, err := MarshalAlloc(sampleAlloc())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ old, new, want string }{
		{`"flbq.alloc/v1"`, `"flbq.curves/v1"`, `format "flbq.curves/v1" is not "flbq.alloc/v1"`},
		{`"solver": "dp",`, ``, `missing field "solver"`},
		{`"avg_bits": 3,`, `"avg_bits": 3.5,`, "avg_bits 3.5 does not match the units' bits (they give 3)"},
		{`"bits":4}`, `"bits":9}`, `units[1] (layer "blocks.0.attn.qkv" group 1): bits 9 is outside 1..8`},
		{`"bits":4}`, `"bits":0}`, "bits 0 is outside 1..8"},
		{`"bits":4}`, `"bits":"4"}`, `field "units.bits"`},
		{`"group":1`, `"group":0`, "duplicate of units[0]"},
		{`"predicted_distortion": 1.6,`, `"predicted_distortion": -1,`, "predicted_distortion -1"},
		{`"target_bits": 3,`, `"target_bits": 0,`, "target_bits 0 is outside"},
	} {
		_, err := ParseAlloc(mutate(t, good, tc.old, tc.new))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s → %s: error %v, want it to contain %q", tc.old, tc.new, err, tc.want)
		}
	}
}

func TestWriterRefusesInvalidAndKeepsOldFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.json")
	if err := WriteCurvesFile(p, sampleCurves()); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(p)
	bad := sampleCurves()
	bad.Units[0].Distortion[0] = math.NaN()
	if err := WriteCurvesFile(p, bad); err == nil {
		t.Fatal("wrote NaN distortion")
	}
	bad = sampleCurves()
	bad.Units[1].Group = 0
	if err := WriteCurvesFile(p, bad); err == nil || !strings.Contains(err.Error(), "duplicate") {
		t.Fatalf("wrote duplicate units: %v", err)
	}
	after, _ := os.ReadFile(p)
	if !bytes.Equal(before, after) {
		t.Fatal("a refused write changed the existing file")
	}
}

func TestReadFileErrorsNameThePath(t *testing.T) {
	p := filepath.Join(t.TempDir(), "broken.json")
	os.WriteFile(p, []byte(`{"format": "flbq.curves/v1", "bits": [1], "units": [`), 0o644)
	if _, err := ReadCurvesFile(p); err == nil || !strings.Contains(err.Error(), "broken.json") {
		t.Fatalf("error %v does not name the file", err)
	}
}

func FuzzParseCurves(f *testing.F) {
	good, _ := MarshalCurves(sampleCurves())
	f.Add(good)
	f.Add([]byte(`{"format":"flbq.curves/v1","bits":[1,2],"units":[{"layer":"a","group":0,"channels":[0,1],"weights":3,"distortion":[1,0]}],"meta":{}}`))
	f.Add([]byte(`{"format":"flbq.curves/v1"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseCurves(data)
		if err != nil {
			return
		}
		// Whatever the reader accepts, the writer writes and re-reads.
		out, err := MarshalCurves(c)
		if err != nil {
			t.Fatalf("accepted curves do not re-encode: %v", err)
		}
		if _, err := ParseCurves(out); err != nil {
			t.Fatalf("re-encoded curves rejected: %v", err)
		}
	})
}

func FuzzParseAlloc(f *testing.F) {
	good, _ := MarshalAlloc(sampleAlloc())
	f.Add(good)
	f.Add([]byte(`{"format":"flbq.alloc/v1","solver":"lg","target_bits":2,"avg_bits":2,"predicted_distortion":0,"units":[{"layer":"a","group":0,"channels":[0,1],"weights":1,"bits":2}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ParseAlloc(data)
		if err != nil {
			return
		}
		out, err := MarshalAlloc(a)
		if err != nil {
			t.Fatalf("accepted allocation does not re-encode: %v", err)
		}
		if _, err := ParseAlloc(out); err != nil {
			t.Fatalf("re-encoded allocation rejected: %v", err)
		}
	})
}
