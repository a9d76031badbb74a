package calib

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/flbq/flbq/runtime/kernels"
	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/qformat"
)

func randLinear(rng *rand.Rand, in, out int) *nn.Linear {
	w := make([]float32, in*out)
	for i := range w {
		w[i] = float32(rng.NormFloat64()) * 0.1
	}
	b := make([]float32, out)
	for i := range b {
		b[i] = float32(rng.NormFloat64())
	}
	return nn.NewLinear("test.fc", in, out, w, b)
}

func randRows(rng *rand.Rand, m, k int) []float32 {
	x := make([]float32, m*k)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// TestLayerOpIsTheKernel: a fully quantized layer computes exactly what
// kernels.QuantizeLinear ships; a partial one leaves the other channels
// bit-identical to fp32.
func TestLayerOpIsTheKernel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	l := randLinear(rng, 72, 80)
	x := randRows(rng, 13, 72)
	fp := make([]float32, 13*80)
	l.ForwardFP32(fp, x, 13)
	for _, rule := range []qformat.Rule{qformat.MinMax, qformat.MSE} {
		z := NewQuantizer(rule)
		for b := 1; b <= 8; b++ {
			op, err := z.Op(l, []GroupBits{{0, 32, b}, {32, 64, 9 - b}, {64, 80, b}})
			if err != nil {
				t.Fatal(err)
			}
			tb := []uint8{uint8(b), uint8(b), uint8(9 - b), uint8(9 - b), uint8(b)}
			ql, err := kernels.QuantizeLinear(l.Weight, 80, 72, tb, rule, l.Bias)
			if err != nil {
				t.Fatal(err)
			}
			got, want := make([]float32, 13*80), make([]float32, 13*80)
			op.Forward(got, x, 13)
			if err := ql.Forward(want, x, 13); err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("%v b=%d: [%d] = %v, kernel %v", rule, b, i, got[i], want[i])
				}
			}
			// Partial: channels [32, 48) only (one tile of a group).
			op, err = z.Op(l, []GroupBits{{32, 48, 9 - b}})
			if err != nil {
				t.Fatal(err)
			}
			op.Forward(got, x, 13)
			for m := 0; m < 13; m++ {
				for c := 0; c < 80; c++ {
					i := m*80 + c
					if (c < 32 || c >= 48) && got[i] != fp[i] {
						t.Fatalf("unquantized channel %d changed: %v vs %v", c, got[i], fp[i])
					}
					if c >= 32 && c < 48 && got[i] != want[i] {
						t.Fatalf("quantized channel %d: %v vs kernel %v", c, got[i], want[i])
					}
				}
			}
			// The float32 twin agrees up to rounding.
			sim, err := z.SimulatedOp(l, []GroupBits{{0, 80, b}})
			if err != nil {
				t.Fatal(err)
			}
			full, _ := z.Op(l, []GroupBits{{0, 80, b}})
			full.Forward(got, x, 13)
			sim.Forward(want, x, 13)
			for i := range got {
				if d := math.Abs(float64(got[i] - want[i])); d > 1e-4*(1+math.Abs(float64(want[i]))) {
					t.Fatalf("b=%d: kernel %v vs simulated %v", b, got[i], want[i])
				}
			}
		}
	}
}

// TestQuantizerErrors: MSE clipping never has a larger weight error than
// min–max, errors shrink with bits, and misaligned groups are refused.
func TestQuantizerErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	l := randLinear(rng, 64, 48)
	mm, mse := NewQuantizer(qformat.MinMax), NewQuantizer(qformat.MSE)
	prev := math.Inf(1)
	for b := 1; b <= 8; b++ {
		a, _ := mm.Dequantized(l, 0, 48, b)
		c, _ := mse.Dequantized(l, 0, 48, b)
		var ea, ec float64
		for i, w := range l.Weight {
			ea += math.Pow(float64(a[i]-w), 2)
			ec += math.Pow(float64(c[i]-w), 2)
		}
		if ec > ea*(1+1e-9) {
			t.Errorf("b=%d: MSE rule error %g > min-max %g", b, ec, ea)
		}
		if ea >= prev {
			t.Errorf("b=%d: min-max error %g did not shrink (%g)", b, ea, prev)
		}
		prev = ea
	}
	if _, err := mm.Op(l, []GroupBits{{8, 24, 4}}); err == nil {
		t.Error("a group not aligned to the 16-channel tile was accepted")
	}
	if _, err := mm.Op(l, []GroupBits{{0, 32, 4}, {16, 48, 4}}); err == nil {
		t.Error("overlapping groups were accepted")
	}
	if _, err := mm.Op(l, []GroupBits{{0, 48, 9}}); err == nil {
		t.Error("9 bits accepted")
	}
}

func TestFakeQuantWeightAxes(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	// A ConvTranspose2d weight [in=3, out=4, 2, 2] quantized per output
	// channel equals the Linear-style quantization of its transpose.
	w := randRows(rng, 3*4, 4)
	q, err := FakeQuantWeight(w, []int{3, 4, 2, 2}, 1, 3, qformat.MinMax)
	if err != nil {
		t.Fatal(err)
	}
	for c := 0; c < 4; c++ {
		row := make([]float32, 0, 12)
		for i := 0; i < 3; i++ {
			row = append(row, w[(i*4+c)*4:(i*4+c+1)*4]...)
		}
		want, err := FakeQuantWeight(row, []int{1, 12}, 0, 3, qformat.MinMax)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			for k := 0; k < 4; k++ {
				if q[(i*4+c)*4+k] != want[i*4+k] {
					t.Fatalf("channel %d differs", c)
				}
			}
		}
		levels := map[float32]bool{}
		for _, v := range want {
			levels[v] = true
		}
		if len(levels) > 8 {
			t.Fatalf("channel %d: %d levels at 3 bits", c, len(levels))
		}
	}
}

// FakeQuantHeads gives every pyramid and head layer per-channel 8-bit
// weights (at most 256 levels, each within half a step of the source) and
// an int8-rounding product; the mask logits keep an fp32 product.
func TestFakeQuantHeads(t *testing.T) {
	for _, name := range []string{"swin_maskrcnn", "vit_maskrcnn"} {
		d, err := maskrcnn.Load("../../runtime/maskrcnn/testdata/" + name + ".safetensors")
		if err != nil {
			t.Fatal(err)
		}
		layers := d.HeadLayers()
		src := make([][]float32, len(layers))
		for i, l := range layers {
			src[i] = append([]float32(nil), l.Weight()...)
		}
		if err := FakeQuantHeads(d, 8); err != nil {
			t.Fatal(err)
		}
		for i, l := range layers {
			q, sh := l.Weight(), l.Shape()
			outer, out := 1, sh[l.Axis()]
			for _, v := range sh[:l.Axis()] {
				outer *= v
			}
			inner := len(q) / (outer * out)
			for c := 0; c < out; c++ {
				levels := map[float32]bool{}
				lo, hi := float32(math.Inf(1)), float32(math.Inf(-1))
				for o := 0; o < outer; o++ {
					for k := 0; k < inner; k++ {
						j := (o*out+c)*inner + k
						levels[q[j]] = true
						lo, hi = min(lo, src[i][j]), max(hi, src[i][j])
					}
				}
				step := (max(hi, 0) - min(lo, 0)) / 255
				for o := 0; o < outer; o++ {
					for k := 0; k < inner; k++ {
						j := (o*out+c)*inner + k
						if d := math.Abs(float64(q[j] - src[i][j])); d > float64(step)*0.5001+1e-12 {
							t.Fatalf("%s %s channel %d: |Δ| %g over half a step %g", name, l.Name(), c, d, step)
						}
					}
				}
				if len(levels) > 256 {
					t.Fatalf("%s %s channel %d: %d levels", name, l.Name(), c, len(levels))
				}
			}
			_, fq := l.GEMM().Impl.(fakeQuantRows)
			if fq == l.PerLabel {
				t.Errorf("%s %s: int8-rounding product %v, per-label %v", name, l.Name(), fq, l.PerLabel)
			}
		}
		t.Logf("%s: %d head layers", name, len(layers))
	}
}
