package curvesynth

import (
	"bytes"
	"testing"

	"github.com/flbq/flbq/solver"
)

func TestShapes(t *testing.T) {
	for _, tc := range []struct {
		arch    string
		gs      int
		units   int
		weights int64
	}{
		// ViT-B: 12 × (2304+768+3072+768)/32 groups; 12 × 4·768·3072... weights.
		{"vit-b", 32, 12 * (72 + 24 + 96 + 24), 12 * (768*2304 + 768*768 + 768*3072 + 3072*768)},
		{"vit-b", 0, 48, 12 * (768*2304 + 768*768 + 768*3072 + 3072*768)},
		{"vit-b", 16, 12 * (144 + 48 + 192 + 48), 12 * (768*2304 + 768*768 + 768*3072 + 3072*768)},
		// Swin-T: blocks 12·C² each, reductions 8·C², C = 96,192,384,768.
		{"swin-t", 0, 4*(2+2+6+2) + 3, swinWeights()},
		// 96 channels in groups of 64 → groups of 64 and 32.
		{"swin-t", 64, -1, swinWeights()},
	} {
		c, err := Curves(tc.arch, tc.gs, 1)
		if err != nil {
			t.Fatal(err)
		}
		if tc.units >= 0 && len(c.Units) != tc.units {
			t.Errorf("%s g%d: %d units, want %d", tc.arch, tc.gs, len(c.Units), tc.units)
		}
		if w := c.TotalWeights(); w != tc.weights {
			t.Errorf("%s g%d: %d weights, want %d", tc.arch, tc.gs, w, tc.weights)
		}
		if _, err := solver.MarshalCurves(c); err != nil {
			t.Errorf("%s g%d: invalid curves: %v", tc.arch, tc.gs, err)
		}
	}
}

func swinWeights() int64 {
	var n int64
	for i, c := range []int64{96, 192, 384, 768} {
		n += []int64{2, 2, 6, 2}[i] * 12 * c * c
		if i < 3 {
			n += 8 * c * c
		}
	}
	return n
}

func TestDeterministicAndSeeded(t *testing.T) {
	a, _ := Curves("swin-t", 32, 7)
	b, _ := Curves("swin-t", 32, 7)
	c, _ := Curves("swin-t", 32, 8)
	ea, _ := solver.MarshalCurves(a)
	eb, _ := solver.MarshalCurves(b)
	ec, _ := solver.MarshalCurves(c)
	if !bytes.Equal(ea, eb) {
		t.Fatal("same seed, different curves")
	}
	if bytes.Equal(ea, ec) {
		t.Fatal("different seeds, same curves")
	}
}

func TestCurvesAreMostlyDecreasing(t *testing.T) {
	c, _ := Curves("vit-b", 32, 1)
	for _, u := range c.Units {
		// The 1→6 bit part is dominated by quantization noise.
		for i := 1; i < 6; i++ {
			if u.Distortion[i] >= u.Distortion[i-1] {
				t.Fatalf("%s: distortion rises from %d to %d bits: %v", u.UnitID, i, i+1, u.Distortion)
			}
		}
	}
}

func TestBadArguments(t *testing.T) {
	if _, err := Curves("resnet-50", 32, 1); err == nil {
		t.Error("unknown arch accepted")
	}
	for _, gs := range []int{-16, 8, 30} {
		if _, err := Curves("vit-b", gs, 1); err == nil {
			t.Errorf("group size %d accepted", gs)
		}
	}
}
