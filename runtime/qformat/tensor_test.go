package qformat

import (
	"math/rand/v2"
	"testing"
)

// The tensor quantizer must agree with quantizing each output channel's
// gathered weights by hand (QuantizeChannel), on both axes.
func TestQuantizeTensorMatchesPerChannel(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	shape := []int{3, 5, 2, 2} // ConvTranspose-like when axis = 1
	w := make([]float32, 3*5*2*2)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	for _, axis := range []int{0, 1} {
		q, s, z, err := QuantizeTensor(w, shape, axis, 8, MinMax)
		if err != nil {
			t.Fatal(err)
		}
		deq, err := DequantizeTensor(q, shape, axis, s, z)
		if err != nil {
			t.Fatal(err)
		}
		out := shape[axis]
		for c := 0; c < out; c++ {
			var idx []int
			for i := range w {
				// index → coordinate on the axis
				r := i
				for d := len(shape) - 1; d > axis; d-- {
					r /= shape[d]
				}
				if r%shape[axis] == c {
					idx = append(idx, i)
				}
			}
			row := make([]float32, len(idx))
			for j, i := range idx {
				row[j] = w[i]
			}
			qr := make([]uint8, len(row))
			sc, zc, _ := QuantizeChannel(qr, row, 8, MinMax)
			if sc != s[c] || zc != z[c] {
				t.Fatalf("axis %d channel %d: scale/zero %v/%v, per-channel %v/%v", axis, c, s[c], z[c], sc, zc)
			}
			for j, i := range idx {
				if q[i] != qr[j] || deq[i] != sc*float32(int32(qr[j])-zc) {
					t.Fatalf("axis %d channel %d element %d differs", axis, c, i)
				}
			}
		}
	}
	if _, _, _, err := QuantizeTensor(w, []int{60}, 0, 8, MinMax); err == nil {
		t.Error("rank-1 tensor accepted")
	}
	if _, _, _, err := QuantizeTensor(w, []int{3, 5, 2, 3}, 0, 8, MinMax); err == nil {
		t.Error("wrong element count accepted")
	}
}
