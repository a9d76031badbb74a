package qformat

import (
	"math"
	"math/rand/v2"
	"testing"
)

// mseChannels returns test channels of length k: Gaussian, heavy-tailed
// with outliers, uniform, sparse, constant-sign, tiny and huge magnitudes.
func mseChannels(rng *rand.Rand, k int) [][]float32 {
	gen := []func(i int) float64{
		func(int) float64 { return rng.NormFloat64() * 0.02 },
		func(i int) float64 {
			if i%97 == 3 {
				return rng.NormFloat64() * 0.5
			}
			return rng.NormFloat64() * 0.02
		},
		func(int) float64 { return rng.Float64()*2 - 1 },
		func(int) float64 {
			if rng.IntN(10) == 0 {
				return rng.NormFloat64()
			}
			return 0
		},
		func(int) float64 { return math.Abs(rng.NormFloat64()) },
		func(int) float64 { return rng.NormFloat64() * 1e-20 },
		func(int) float64 { return rng.NormFloat64() * 1e30 },
		func(int) float64 { return math.Round(rng.NormFloat64()*4) / 8 }, // ties
	}
	var out [][]float32
	for _, g := range gen {
		w := make([]float32, k)
		for i := range w {
			w[i] = float32(g(i))
		}
		out = append(out, w)
	}
	return out
}

// TestMSESearchExhaustive checks that the pruned search picks exactly the
// exhaustive search's scale and zero point.
func TestMSESearchExhaustive(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	n := 0
	for _, k := range []int{1, 5, 64, 127, 128, 300, 1000} {
		for rep := 0; rep < 3; rep++ {
			for ci, w := range mseChannels(rng, k) {
				var lo, hi float32
				for _, v := range w {
					lo, hi = min(lo, v), max(hi, v)
				}
				if !(hi > lo) {
					continue
				}
				for b := MinBits; b <= MaxBits; b++ {
					s1, z1 := mseSearch(w, lo, hi, b)
					s2, z2 := mseSearchExhaustive(w, lo, hi, b)
					if s1 != s2 || z1 != z2 {
						t.Fatalf("k=%d channel kind %d b=%d: pruned search (%g, %d), exhaustive (%g, %d)", k, ci, b, s1, z1, s2, z2)
					}
					n++
				}
			}
		}
	}
	// Huge ranges (hi−lo overflows float32) take the exhaustive path.
	w := []float32{-3e38, 3e38, 1, 0}
	s1, z1 := mseSearch(w, -3e38, 3e38, 4)
	s2, z2 := mseSearchExhaustive(w, -3e38, 3e38, 4)
	if s1 != s2 || z1 != z2 {
		t.Fatalf("overflowing range: (%g, %d) vs (%g, %d)", s1, z1, s2, z2)
	}
	t.Logf("%d channel searches identical", n)
}

// BenchmarkMSESearch times one output channel's scale search (K = 384 and
// 1536, N(0, 0.02²) weights, all bit-widths per op), pruned vs exhaustive.
func BenchmarkMSESearch(b *testing.B) {
	for _, k := range []int{384, 1536} {
		rng := rand.New(rand.NewPCG(1, uint64(k)))
		w := make([]float32, k)
		var lo, hi float32
		for i := range w {
			w[i] = float32(rng.NormFloat64() * 0.02)
			lo, hi = min(lo, w[i]), max(hi, w[i])
		}
		for _, v := range []struct {
			name string
			f    func([]float32, float32, float32, int) (float32, int32)
		}{{"pruned", mseSearch}, {"exhaustive", mseSearchExhaustive}} {
			b.Run(v.name+"/K="+itoa(k), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					for bits := MinBits; bits <= MaxBits; bits++ {
						v.f(w, lo, hi, bits)
					}
				}
			})
		}
	}
}

func itoa(n int) string {
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}
