package calib

import (
	"context"
	"math"
	"testing"

	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/qformat"
)

// TestExactMatchesBruteForce compares exact-mode curves with an
// independent computation: a full single-image forward with the unit
// quantized, no caching and no batching.
func TestExactMatchesBruteForce(t *testing.T) {
	for _, name := range []string{"swin_tiny", "vitdet_tiny"} {
		t.Run(name, func(t *testing.T) {
			m := fixture(t, name)
			in := calibInputs(t, m, 5, true)
			bb := m.Backbone
			layers := bb.QuantLayers()
			sel := []int{0, len(layers) / 2, len(layers) - 1}
			res, err := Measure(context.Background(), bb, MakeBatches(in, 4), Options{Mode: Exact, GroupSize: 32, Rule: qformat.MSE, Layers: sel}, NewState())
			if err != nil {
				t.Fatal(err)
			}
			z := NewQuantizer(qformat.MSE)
			refs := make([][]float32, len(in))
			checked := 0
			for _, u := range res.Curves.Units {
				l := m.Linear(u.Layer)
				for bi, b := range res.Curves.Bits {
					if b != 2 && b != 4 && b != 8 {
						continue
					}
					op, err := z.Op(l, []GroupBits{{u.Channels[0], u.Channels[1], b}})
					if err != nil {
						t.Fatal(err)
					}
					var d float64
					for i, x := range in {
						ref := bb.Forward(x, nil)
						q := bb.Forward(x, nn.Overrides{l.Name: op})
						d += featureSSE(ref, q, 1)[0]
						_ = refs[i]
					}
					d /= float64(len(in))
					got := u.Distortion[bi]
					if rel := math.Abs(got-d) / d; !(rel <= 1e-6) {
						t.Errorf("%s bits %d: exact %.9g, brute force %.9g (rel %.2g)", u.UnitID, b, got, d, rel)
					}
					checked++
				}
			}
			t.Logf("%d units × bits checked", checked)
		})
	}
}
