//go:build amd64 && !purego

package nn

import (
	"math"
	"math/rand"
	"testing"

	"github.com/flbq/flbq/gen/vecmath"
	gv "github.com/flbq/flbq/generated/vecmath"
	"github.com/flbq/flbq/runtime/backend"
)

// The generated kernels against their pure-Go twins and float64 math, over
// lengths that exercise every tail, with sentinels past the end of every
// output so that a store outside the slice is caught.

// needAsm skips a test of the assembly itself unless the active tier runs
// it (not on a CPU without AVX2+FMA, nor under FLBQ_CPU=purego).
func needAsm(t *testing.T) {
	t.Helper()
	if !fp32AVX2() {
		t.Skipf("backend tier %s: only the pure-Go twins run here", backend.Active())
	}
}

const sentinel = float32(-12345.5)

// padded returns a slice of length n backed by an array with sentinels after it.
func padded(n int) (s, all []float32) {
	all = make([]float32, n+9)
	for i := n; i < len(all); i++ {
		all[i] = sentinel
	}
	return all[:n], all
}

func checkSentinels(t *testing.T, what string, all []float32, n int) {
	t.Helper()
	for i := n; i < len(all); i++ {
		if all[i] != sentinel {
			t.Fatalf("%s (n=%d) wrote past the end: [%d] = %g", what, n, i, all[i])
		}
	}
}

func TestExpKernel(t *testing.T) {
	needAsm(t)
	var xs []float32
	for x := float64(vecmath.ExpLo); x <= vecmath.ExpHi; x += 0.00731 {
		xs = append(xs, float32(x))
	}
	xs = append(xs, 0, -0.0, 1e-30, -1e-30, float32(vecmath.ExpHi), float32(vecmath.ExpLo))
	for len(xs)%8 != 0 {
		xs = append(xs, 0.5)
	}
	dst := make([]float32, len(xs))
	if n := gv.Exp(dst, xs); n != len(xs) {
		t.Fatalf("vecmath.Exp did %d of %d", n, len(xs))
	}
	var maxRel, maxTwin float64
	for i, x := range xs {
		want := math.Exp(float64(x))
		maxRel = math.Max(maxRel, math.Abs(float64(dst[i])-want)/want)
		s := float64(Exp(x))
		maxTwin = math.Max(maxTwin, math.Abs(float64(dst[i])-s)/s)
	}
	t.Logf("vector exp on [%g, %g]: max relative error %.3g vs float64, %.3g vs scalar Exp", vecmath.ExpLo, vecmath.ExpHi, maxRel, maxTwin)
	if maxRel > 3e-7 || maxTwin > 3e-7 {
		t.Errorf("vector exp max relative error %g (float64), %g (scalar twin)", maxRel, maxTwin)
	}
	// Ends: +Inf above ExpHi, 0 below ExpLo, NaN kept; lengths: whole blocks only.
	edge := []float32{100, float32(math.Inf(1)), -100, float32(math.Inf(-1)), float32(math.NaN()), 89, -88, 0}
	out, all := padded(len(edge) + 3)
	n := gv.Exp(out, append(edge, 1, 2, 3))
	if n != 8 {
		t.Fatalf("vecmath.Exp on 11 values did %d, want 8", n)
	}
	if !math.IsInf(float64(out[0]), 1) || !math.IsInf(float64(out[1]), 1) || out[2] != 0 || out[3] != 0 ||
		!math.IsNaN(float64(out[4])) || !math.IsInf(float64(out[5]), 1) || out[6] != 0 || out[7] != 1 {
		t.Errorf("exp edge cases: %v", out[:8])
	}
	if out[8] != 0 || out[9] != 0 || out[10] != 0 {
		t.Errorf("vecmath.Exp touched the tail: %v", out[8:11])
	}
	checkSentinels(t, "vecmath.Exp", all, 11)
}

func TestGELUKernel(t *testing.T) {
	needAsm(t)
	var xs []float32
	for x := -12.0; x <= 12; x += 0.000917 {
		xs = append(xs, float32(x))
	}
	twin := append([]float32(nil), xs...)
	geluGo(twin)
	got := append([]float32(nil), xs...)
	n := gv.GELU(got)
	if n != len(xs)&^7 {
		t.Fatalf("vecmath.GELU did %d of %d", n, len(xs))
	}
	var maxAbs, maxTwin float64
	for i := 0; i < n; i++ {
		x := float64(xs[i])
		want := 0.5 * x * (1 + math.Erf(x/math.Sqrt2))
		maxAbs = math.Max(maxAbs, math.Abs(float64(got[i])-want)/math.Max(1, math.Abs(x)))
		maxTwin = math.Max(maxTwin, math.Abs(float64(got[i]-twin[i]))/math.Max(1, math.Abs(x)))
	}
	t.Logf("vector GELU on [-12, 12]: max error %.3g·max(1,|x|) vs float64, %.3g·max(1,|x|) vs the Go twin", maxAbs, maxTwin)
	if maxAbs > 5e-7 || maxTwin > 3e-7 {
		t.Errorf("vector GELU max error %g (float64), %g (twin)", maxAbs, maxTwin)
	}
	for i := n; i < len(xs); i++ {
		if got[i] != xs[i] {
			t.Fatalf("vecmath.GELU touched the tail at %d", i)
		}
	}
}

func TestSoftmaxKernel(t *testing.T) {
	needAsm(t)
	r := rand.New(rand.NewSource(1))
	for n := 8; n <= 80; n++ {
		for _, scale := range []float64{0.1, 5, 40} {
			x, all := padded(n)
			for i := range x {
				x[i] = float32(r.NormFloat64() * scale)
			}
			if n > 3 {
				x[n-1] = -1e30 // masked-in -inf-like values must give 0
			}
			// Reference: float64 from the (exact-max, float32-rounded) differences.
			ref := make([]float64, n)
			m := x[0]
			for _, v := range x {
				m = max(m, v)
			}
			var s float64
			for i, v := range x {
				ref[i] = math.Exp(float64(v - m))
				s += ref[i]
			}
			twin := append([]float32(nil), x...)
			softmaxRowGo(twin)
			gv.SoftmaxRow(x)
			for i := range x {
				want := ref[i] / s
				if d := math.Abs(float64(x[i]) - want); d > 6e-7*want+1e-12 {
					t.Fatalf("n=%d scale=%g: softmax[%d] = %g, want %g (twin %g)", n, scale, i, x[i], want, twin[i])
				}
				if d := math.Abs(float64(x[i] - twin[i])); d > 6e-7*float64(twin[i])+1e-12 {
					t.Fatalf("n=%d: softmax[%d] = %g, twin %g", n, i, x[i], twin[i])
				}
			}
			checkSentinels(t, "vecmath.SoftmaxRow", all, n)
		}
	}
}

func TestLayerNormKernel(t *testing.T) {
	needAsm(t)
	r := rand.New(rand.NewSource(2))
	var maxErr float64
	for _, c := range []int{8, 16, 24, 32, 96, 128, 384, 768, 1536} {
		for _, rows := range []int{1, 3, 7} {
			x := make([]float32, rows*c)
			for i := range x {
				x[i] = float32(3 + 2*r.NormFloat64())
			}
			w := make([]float32, c)
			b := make([]float32, c)
			for i := range w {
				w[i] = float32(1 + 0.5*r.NormFloat64())
				b[i] = float32(r.NormFloat64())
			}
			dst, all := padded(rows * c)
			twin := make([]float32, rows*c)
			layerNormRowsGo(twin, x, rows, c, w, b, 1e-5)
			gv.LayerNorm(dst, x, rows, c, w, b, 1e-5)
			checkSentinels(t, "vecmath.LayerNorm", all, rows*c)
			inPlace := append([]float32(nil), x...)
			gv.LayerNorm(inPlace, inPlace, rows, c, w, b, 1e-5)
			want := layerNormRef(x, rows, c, w, b, 1e-5)
			for k := range want {
				e := math.Abs(float64(dst[k]) - want[k])
				maxErr = math.Max(maxErr, e)
				if e > 4e-6 || math.Abs(float64(dst[k]-twin[k])) > 4e-6 || inPlace[k] != dst[k] {
					t.Fatalf("c=%d row %d [%d]: %g, want %g, twin %g, in place %g", c, k/c, k%c, dst[k], want[k], twin[k], inPlace[k])
				}
			}
		}
	}
	t.Logf("vector LayerNorm (outputs of order 1–5): max abs error %.3g vs float64", maxErr)
}

func TestAddKernel(t *testing.T) {
	needAsm(t)
	r := rand.New(rand.NewSource(4))
	for n := 0; n <= 40; n++ {
		src := make([]float32, n)
		d, all := padded(n)
		for i := range src {
			src[i] = float32(r.NormFloat64())
			d[i] = float32(r.NormFloat64())
		}
		want := append([]float32(nil), d...)
		addGo(want, src)
		Add(d, src) // kernel plus the Go tail
		for i := range d {
			if d[i] != want[i] {
				t.Fatalf("n=%d: Add[%d] = %g, want %g", n, i, d[i], want[i])
			}
		}
		checkSentinels(t, "Add", all, n)
	}
}

func TestPackT16Kernel(t *testing.T) {
	needAsm(t)
	r := rand.New(rand.NewSource(5))
	for _, K := range []int{8, 9, 32, 49, 64, 100} {
		ldb := K + 3
		b := make([]float32, 15*ldb+K)
		for i := range b {
			b[i] = float32(r.NormFloat64())
		}
		dst, all := padded(K * NR)
		done := gv.PackT16(dst, b, ldb)
		if done != K&^7 {
			t.Fatalf("K=%d: did %d", K, done)
		}
		for k := 0; k < K; k++ {
			for j := 0; j < NR; j++ {
				want := b[j*ldb+k]
				if k >= done {
					want = 0
				}
				if dst[k*NR+j] != want {
					t.Fatalf("K=%d: dst[%d·16+%d] = %g, want %g", K, k, j, dst[k*NR+j], want)
				}
			}
		}
		checkSentinels(t, "vecmath.PackT16", all, K*NR)
		// Through PackB (kernel plus the Go tail) against the Go loops alone.
		got := make([]float32, PackedLen(K, NR))
		PackB(got, true, K, NR, b, ldb)
		for k := 0; k < K; k++ {
			for j := 0; j < NR; j++ {
				if got[k*NR+j] != b[j*ldb+k] {
					t.Fatalf("K=%d: PackB[%d·16+%d] = %g, want %g", K, k, j, got[k*NR+j], b[j*ldb+k])
				}
			}
		}
	}
}

// The bilinear-tap kernel is bit-identical to its twin (same roundings, no
// FMA) and stores nothing past len(acc).
func TestBilerpAccKernel(t *testing.T) {
	needAsm(t)
	r := rand.New(rand.NewSource(9))
	for n := 0; n <= 41; n++ {
		taps := make([][]float32, 4)
		for i := range taps {
			taps[i] = make([]float32, n+3)
			for j := range taps[i] {
				taps[i][j] = float32(r.NormFloat64() * 10)
			}
		}
		w := [4]float32{r.Float32(), r.Float32(), r.Float32(), r.Float32()}
		got, all := padded(n)
		want := make([]float32, n)
		for i := range got {
			got[i] = float32(r.NormFloat64())
			want[i] = got[i]
		}
		done := gv.BilerpAcc(got, taps[0], taps[1], taps[2], taps[3], &w)
		if done != n&^7 {
			t.Fatalf("n=%d: did %d", n, done)
		}
		bilerpAccGo(got[done:], taps[0][done:], taps[1][done:], taps[2][done:], taps[3][done:], &w)
		bilerpAccGo(want, taps[0], taps[1], taps[2], taps[3], &w)
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("n=%d [%d]: kernel %v, twin %v", n, i, got[i], want[i])
			}
		}
		checkSentinels(t, "BilerpAcc", all, n)
	}
}
