package calib

import (
	"context"
	"math"
	"testing"

	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/runtime/tensor"
)

// TestExactMatchesBruteForce compares exact-mode curves (cached block
// inputs, batches, partial forwards) with an independent computation: a
// full single-image forward with the unit quantized, no caching and no
// batching.
func TestExactMatchesBruteForce(t *testing.T) {
	for _, tc := range []struct {
		name   string
		images int
		layers func(n int) []int
		bits   map[int]bool // checked bit-widths (nil: all)
	}{
		{"vitdet_tiny", 4, func(n int) []int { return []int{0, 1, 2, 3, n - 1} }, nil},
		{"swin_tiny", 3, func(n int) []int { return []int{0, n - 1} }, map[int]bool{2: true, 5: true, 8: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := fixture(t, tc.name)
			in := calibInputs(t, m, tc.images, true)
			bb := m.Backbone
			sel := tc.layers(len(bb.QuantLayers()))
			res, err := Measure(context.Background(), bb, MakeBatches(in, 4), Options{Mode: Exact, GroupSize: 32, Rule: qformat.MSE, Layers: sel}, NewState())
			if err != nil {
				t.Fatal(err)
			}
			z := NewQuantizer(qformat.MSE)
			refs := make([][]*tensor.Tensor, len(in))
			for i, x := range in {
				refs[i] = bb.Forward(x, nil)
			}
			worst, checked := 0.0, 0
			for _, u := range res.Curves.Units {
				l := m.Linear(u.Layer)
				for bi, b := range res.Curves.Bits {
					if tc.bits != nil && !tc.bits[b] {
						continue
					}
					checked++
					op, err := z.Op(l, []GroupBits{{u.Channels[0], u.Channels[1], b}})
					if err != nil {
						t.Fatal(err)
					}
					var d float64
					for i, x := range in {
						q := bb.Forward(x, nn.Overrides{l.Name: op})
						d += featureSSE(refs[i], q, 1)[0]
					}
					d /= float64(len(in))
					got := u.Distortion[bi]
					rel := math.Abs(got-d) / d
					worst = max(worst, rel)
					if !(rel <= 1e-6) {
						t.Errorf("%s bits %d: exact %.9g, brute force %.9g (rel %.2g)", u.UnitID, b, got, d, rel)
					}
				}
			}
			t.Logf("%d (unit, bits) values: worst relative difference %.2g", checked, worst)
		})
	}
}

// TestCurvesDecrease: measured curves fall with bits, up to noise: a rise
// between neighbouring bit-widths is tolerated only where the curve has
// reached the int8-activation floor (≤ 1% of D(1)) and is at most 25%.
func TestCurvesDecrease(t *testing.T) {
	m := fixture(t, "vitdet_tiny")
	in := calibInputs(t, m, 4, false)
	res, err := Measure(context.Background(), m.Backbone, MakeBatches(in, 4), Options{Mode: Exact, GroupSize: 32, Rule: qformat.MSE}, NewState())
	if err != nil {
		t.Fatal(err)
	}
	rises := 0
	for _, u := range res.Curves.Units {
		d := u.Distortion
		for i := 1; i < len(d); i++ {
			if d[i] > d[i-1] {
				rises++
				// Noise: allowed only at the int8-activation floor, where
				// the weight error no longer dominates (≤ 1% of D(1)).
				if d[i] > 1.25*d[i-1] || d[i] > 0.01*d[0] {
					t.Errorf("%s: D(%d) = %.4g > D(%d) = %.4g", u.UnitID, res.Curves.Bits[i], d[i], res.Curves.Bits[i-1], d[i-1])
				}
			}
		}
		if d[len(d)-1] >= d[0]/100 {
			t.Errorf("%s: D(8) = %.4g not far below D(1) = %.4g", u.UnitID, d[len(d)-1], d[0])
		}
	}
	t.Logf("%d units, %d small rises", len(res.Curves.Units), rises)
}
