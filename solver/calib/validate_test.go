package calib

import (
	"context"
	"fmt"
	"testing"

	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/solver"
	"github.com/flbq/flbq/solver/allocate"
)

// fastVsExact compares fast-mode curves with exact ones: Spearman per
// layer over all (group, bits) values, and the measured distortion of DP
// allocations from each at the given budgets. Fast mode measures its
// anchors on the first anchorImages images (batches of batch images; 0:
// all images).
func fastVsExact(t *testing.T, name string, nImages, batch, anchorImages int, budgets []float64) {
	m := fixture(t, name)
	in := calibInputs(t, m, nImages, false)
	batches := MakeBatches(in, batch)
	o := Options{GroupSize: 32, Rule: qformat.MSE}
	o.Mode = Exact
	ex, err := Measure(context.Background(), m.Backbone, batches, o, NewState())
	if err != nil {
		t.Fatal(err)
	}
	o.Mode = Fast
	o.AnchorImages = anchorImages
	fa, err := Measure(context.Background(), m.Backbone, batches, o, NewState())
	if err != nil {
		t.Fatal(err)
	}
	_, nA := AnchorBatches(batches, anchorImages)
	if anchorImages > 0 && nA != anchorImages {
		t.Fatalf("%d anchor images, want %d", nA, anchorImages)
	}
	name = fmt.Sprintf("%s (%d images, anchors on %d)", name, nImages, nA)
	t.Logf("%s: exact %.2fs, fast %.2fs", name, ex.Seconds, fa.Seconds)
	minRho := 1.0
	var worst string
	byLayer := map[string][2][]float64{}
	var order []string
	for i, u := range ex.Curves.Units {
		p := byLayer[u.Layer]
		if p[0] == nil {
			order = append(order, u.Layer)
		}
		p[0] = append(p[0], u.Distortion...)
		p[1] = append(p[1], fa.Curves.Units[i].Distortion...)
		byLayer[u.Layer] = p
	}
	for _, l := range order {
		rho := Spearman(byLayer[l][0], byLayer[l][1])
		if rho < minRho {
			minRho, worst = rho, l
		}
		if rho < 0.9 {
			t.Errorf("%s: Spearman(fast, exact) = %.3f < 0.9", l, rho)
		}
	}
	t.Logf("%s: min per-layer Spearman %.4f (%s) over %d layers", name, minRho, worst, len(order))
	z := NewQuantizer(qformat.MSE)
	for _, tb := range budgets {
		var ovs []nn.Overrides
		var pred []float64
		for _, c := range []*solver.Curves{ex.Curves, fa.Curves} {
			p, err := allocate.NewProblem(c, allocate.Options{TargetBits: tb, MinBitsBelow: allocate.DefaultMinBitsBelow})
			if err != nil {
				t.Fatal(err)
			}
			r, err := allocate.SolveDP(p, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			ov, err := z.AllocationOverrides(m.Backbone, p.Allocation(r).Units)
			if err != nil {
				t.Fatal(err)
			}
			ovs = append(ovs, ov)
			pred = append(pred, r.Distortion)
		}
		d, err := MeasureOverrides(context.Background(), m.Backbone, batches, ovs, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		ratio := d[1] / d[0]
		t.Logf("%s DP@%g: measured distortion from exact curves %.4g, from fast curves %.4g (ratio %.3f)", name, tb, d[0], d[1], ratio)
		if ratio > 1.10 {
			t.Errorf("%s DP@%g: fast-curve allocation %.1f%% worse than exact", name, tb, 100*(ratio-1))
		}
	}
}

// TestFastVsExact validates fast mode on both fixture families, with the
// anchors on every image and on a subset: vitdet_tiny (6 images) and
// swin_tiny (8 images; exact curves take ~6 s on 2 cores). With 16
// swin_tiny images DP@3 from fast curves lands 10.4–10.7 % above exact,
// anchors on all or 4 images alike — a known miss, diagnosed to the split
// of fused q/k/v layers across heads (docs/BENCHMARKS.md, Calibration).
func TestFastVsExact(t *testing.T) {
	fastVsExact(t, "vitdet_tiny", 6, 2, 0, []float64{3, 4})
	fastVsExact(t, "vitdet_tiny", 6, 2, 2, []float64{3, 4})
	fastVsExact(t, "swin_tiny", 8, 2, 0, []float64{3, 4})
	fastVsExact(t, "swin_tiny", 8, 2, 2, []float64{3, 4})
}
