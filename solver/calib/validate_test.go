package calib

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/runtime/tensor"
	"github.com/flbq/flbq/solver"
	"github.com/flbq/flbq/solver/allocate"
)

// fastVsExact compares fast-mode curves with exact ones: Spearman per
// layer over all (group, bits) values, and the measured distortion of DP
// allocations from each at the given budgets. Fast mode runs once per
// entry of anchorImages, measuring its anchors on the first that many
// images (batches of batch images; 0: all images).
func fastVsExact(t *testing.T, name string, nImages, batch int, anchorImages []int, budgets []float64) {
	m := fixture(t, name)
	in := calibInputs(t, m, nImages, false)
	batches := MakeBatches(in, batch)
	o := Options{GroupSize: 32, Rule: qformat.MSE}
	o.Mode = Exact
	ex, err := Measure(context.Background(), m.Backbone, batches, o, NewState())
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range anchorImages {
		o.Mode = Fast
		o.AnchorImages = ai
		fa, err := Measure(context.Background(), m.Backbone, batches, o, NewState())
		if err != nil {
			t.Fatal(err)
		}
		_, nA := AnchorBatches(batches, ai)
		if ai > 0 && nA != ai {
			t.Fatalf("%d anchor images, want %d", nA, ai)
		}
		name := fmt.Sprintf("%s (%d images, anchors on %d)", name, nImages, nA)
		t.Logf("%s: exact %.2fs, fast %.2fs", name, ex.Seconds, fa.Seconds)
		compareFast(t, m, batches, name, ex.Curves, fa.Curves, budgets)
	}
}

// compareFast checks fast curves against exact ones (see fastVsExact).
func compareFast(t *testing.T, m *model.Model, batches []Batch, name string, ex, fa *solver.Curves, budgets []float64) {
	minRho := 1.0
	var worst string
	byLayer := map[string][2][]float64{}
	var order []string
	for i, u := range ex.Units {
		p := byLayer[u.Layer]
		if p[0] == nil {
			order = append(order, u.Layer)
		}
		p[0] = append(p[0], u.Distortion...)
		p[1] = append(p[1], fa.Units[i].Distortion...)
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
		for _, c := range []*solver.Curves{ex, fa} {
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
		d, err := MeasureOverrides(context.Background(), m.Backbone, batches, ovs, nil)
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
// swin_tiny (16 images; exact curves take ~12 s on 2 cores). Before fast
// mode measured each attention head's share (headEnergies), swin_tiny with
// 16 images gave DP@3 10.4–10.7 % above exact here.
func TestFastVsExact(t *testing.T) {
	fastVsExact(t, "vitdet_tiny", 6, 2, []int{0, 2}, []float64{3, 4})
	fastVsExact(t, "swin_tiny", 16, 2, []int{0, 4}, []float64{3, 4})
}

// TestHeadEnergies checks headEnergies against a brute-force computation:
// quantize only head h's q, k or v channels, run the block, and sum the
// squared change of the output projection over image tokens. Heads do not
// mix inside the attention and the projection is linear, so the two agree
// to float rounding.
func TestHeadEnergies(t *testing.T) {
	for _, name := range []string{"swin_tiny", "vitdet_tiny"} {
		m := fixture(t, name)
		bb := m.Backbone
		x := MakeBatches(calibInputs(t, m, 2, false), 2)[0].X
		e, err := newEngine(bb, []Batch{{Images: []int{0, 1}, X: x}}, Options{Mode: Fast, GroupSize: 32, Rule: qformat.MSE}, NewState())
		if err != nil {
			t.Fatal(err)
		}
		inputs := make([]*tensor.Tensor, len(bb.Blocks()))
		bb.ForwardFrom(0, x, nil, nil, inputs)
		checked, worst := 0, 0.0
		for li, a := range e.attn {
			l := e.layers[li]
			blk := bb.Blocks()[e.blockOf[l.Name]]
			in := inputs[e.blockOf[l.Name]]
			// The block's q/k/v input and output, and its projection output.
			var xin, ref, pref []float32
			var M int
			blk.Forward(in, nn.Overrides{
				l.Name: nn.LinearFunc(func(dst, x []float32, m int) {
					l.Layer.ForwardFP32(dst, x, m)
					xin, ref, M = append([]float32(nil), x[:m*l.In]...), append([]float32(nil), dst[:m*l.Out]...), m
				}),
				a.Proj.Name: nn.LinearFunc(func(dst, x []float32, m int) {
					a.Proj.ForwardFP32(dst, x, m)
					pref = append([]float32(nil), dst[:m*a.Proj.Out]...)
				}),
			})
			C, H := a.Proj.In, a.Heads
			dh := C / H
			aref := make([]float32, M*C)
			a.Attend(in, ref, aref)
			image := make([]bool, M) // rows that are image tokens (Attend zeroes padding)
			for r := range image {
				for _, v := range aref[r*C : (r+1)*C] {
					image[r] = image[r] || v != 0
				}
			}
			for _, bits := range []int{2, 5} {
				whole, err := e.z.Op(l.Layer, []GroupBits{{0, l.Out, bits}})
				if err != nil {
					t.Fatal(err)
				}
				y := make([]float32, M*l.Out)
				whole.Forward(y, xin, M)
				got := make([]float64, 3*H)
				e.headEnergies(li, in, ref, y, aref, M, got)
				for s := 0; s < 3; s++ {
					for h := 0; h < H; h++ {
						lo := s*C + h*dh
						// Only head h's s-channels quantized: the kernel op on
						// them when they fill whole tiles, else the fp32
						// output with those channels taken from y (a channel's
						// output depends only on its own weights).
						var op nn.LinearOp = nn.LinearFunc(func(dst, x []float32, m int) {
							copy(dst, ref)
							for r := 0; r < m; r++ {
								copy(dst[r*l.Out+lo:r*l.Out+lo+dh], y[r*l.Out+lo:r*l.Out+lo+dh])
							}
						})
						if dh%qformat.TileN == 0 {
							if op, err = e.z.Op(l.Layer, []GroupBits{{lo, lo + dh, bits}}); err != nil {
								t.Fatal(err)
							}
						}
						var want float64
						blk.Forward(in, nn.Overrides{l.Name: op,
							a.Proj.Name: nn.LinearFunc(func(dst, x []float32, m int) {
								a.Proj.ForwardFP32(dst, x, m)
								for r := 0; r < m; r++ {
									if !image[r] {
										continue
									}
									for c := 0; c < a.Proj.Out; c++ {
										d := float64(dst[r*a.Proj.Out+c]) - float64(pref[r*a.Proj.Out+c])
										want += d * d
									}
								}
							})})
						rel := math.Abs(got[s*H+h]-want) / want
						if want <= 0 || rel > 1e-4 {
							t.Fatalf("%s %s, %d bits, segment %d head %d: headEnergies %.6g, brute force %.6g", name, l.Name, bits, s, h, got[s*H+h], want)
						}
						worst = max(worst, rel)
						checked++
					}
				}
			}
		}
		if checked == 0 {
			t.Fatalf("%s: no attention layer checked", name)
		}
		t.Logf("%s: %d (layer, bits, segment, head) energies match brute force, max relative difference %.2g", name, checked, worst)
	}
}
