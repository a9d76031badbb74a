package nn

import (
	"math"
	"math/rand"
	"slices"
	"testing"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/backend/backendtest"
)

// TestTiers runs the op tests with each CPU tier active in turn
// (backend.SetTier), so that one machine checks both the AVX2+FMA kernels
// and their pure-Go twins, and checks that dispatch follows the tier.
func TestTiers(t *testing.T) {
	backendtest.ForEachTier(t, func(t *testing.T, tier backend.Tier) {
		want := "go"
		if tier.AtLeast(backend.AVX2) {
			want = "avx2-fma"
		}
		if got := KernelName(); got != want {
			t.Fatalf("tier %s: KernelName() = %q, want %q", tier, got, want)
		}
		for _, tc := range []struct {
			name string
			f    func(*testing.T)
		}{
			{"KernelFollowsTier", testKernelFollowsTier},
			{"MatMulShapes", TestMatMulShapes},
			{"Ops", TestOps},
			{"SoftmaxLayerNorm", TestSoftmaxLayerNorm},
			{"Conv2d", TestConv2d},
			{"ConvTranspose2d", TestConvTranspose2d},
		} {
			t.Run(tc.name, tc.f)
		}
	})
}

// testKernelFollowsTier: one full 6×16 tile through MatMul is exactly one
// micro-kernel call, so it equals the active tier's kernel bit for bit;
// the inputs are chosen so that the two kernels (FMA or not) differ.
func testKernelFollowsTier(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	const K = 64
	a, b := randSlice(r, MR*K), randSlice(r, K*NR)
	got := make([]float32, MR*NR)
	MatMul(false, MR, NR, K, a, K, b, NR, got, NR, false)
	goC := make([]float32, MR*NR)
	kernelGo(K, &a[0], K, &b[0], &goC[0], NR, false)
	want := goC
	if fp32AVX2() {
		asmC := make([]float32, MR*NR)
		asmKernel(K, a, K, b, asmC, NR, false)
		if slices.Equal(asmC, goC) {
			t.Fatal("the assembly and Go kernels agree bit for bit here: the test cannot tell them apart")
		}
		want = asmC
	}
	if !slices.Equal(got, want) {
		t.Errorf("MatMul with KernelName() %q does not match that kernel bit for bit", KernelName())
	}
}

// TestOps checks the dispatching element-wise ops (kernel plus Go tail, or
// the Go twins) against float64 math, over lengths around every multiple
// of 8.
func TestOps(t *testing.T) {
	r := rand.New(rand.NewSource(8))
	for n := 1; n <= 80; n++ {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(4 * r.NormFloat64())
		}
		got := append([]float32(nil), x...)
		SoftmaxRow(got)
		m := slices.Max(x)
		ref := make([]float64, n)
		var s float64
		for i, v := range x {
			ref[i] = math.Exp(float64(v - m))
			s += ref[i]
		}
		for i := range got {
			// exp within 3e-7, plus the float32 sum's rounding (n terms)
			want := ref[i] / s
			if d := math.Abs(float64(got[i]) - want); d > (4e-7+float64(n)*6e-8)*want+1e-30 {
				t.Fatalf("n=%d: SoftmaxRow[%d] = %g, want %g", n, i, got[i], want)
			}
		}

		src := randSlice(r, n)
		dst := append(randSlice(r, n), 7) // one past len(src): must stay
		want := make([]float32, n)
		for i := range want {
			want[i] = dst[i] + src[i]
		}
		Add(dst, src)
		if !slices.Equal(dst[:n], want) || dst[n] != 7 {
			t.Fatalf("n=%d: Add = %v, want %v then 7", n, dst, want)
		}
	}

	var xs []float32
	for x := -9.0; x <= 9; x += 0.0173 {
		xs = append(xs, float32(x))
	}
	for _, n := range []int{1, 7, 8, 9, 63, len(xs)} {
		got := append([]float32(nil), xs[:n]...)
		GELUSerial(got)
		for i, v := range xs[:n] {
			x := float64(v)
			want := 0.5 * x * (1 + math.Erf(x/math.Sqrt2))
			if d := math.Abs(float64(got[i]) - want); d > 5e-7*math.Max(1, math.Abs(x)) {
				t.Fatalf("n=%d: GELU(%g) = %g, want %g", n, v, got[i], want)
			}
		}
	}

	for _, c := range []int{4, 8, 12, 24, 36, 768} {
		const rows = 3
		x := make([]float32, rows*c)
		for i := range x {
			x[i] = float32(3 + 2*r.NormFloat64())
		}
		w, b := randSlice(r, c), randSlice(r, c)
		got := make([]float32, rows*c)
		LayerNormSerial(got, x, rows, c, w, b, 1e-5)
		want := layerNormRef(x, rows, c, w, b, 1e-5)
		for k := range want {
			if d := math.Abs(float64(got[k]) - want[k]); d > 4e-6 {
				t.Fatalf("c=%d row %d [%d]: LayerNorm = %g, want %g", c, k/c, k%c, got[k], want[k])
			}
		}
	}
}

// layerNormRef is LayerNorm of rows×c values in float64 (biased variance).
func layerNormRef(x []float32, rows, c int, w, b []float32, eps float64) []float64 {
	out := make([]float64, rows*c)
	for row := 0; row < rows; row++ {
		xr := x[row*c : row*c+c]
		var mean, q float64
		for _, v := range xr {
			mean += float64(v)
		}
		mean /= float64(c)
		for _, v := range xr {
			q += (float64(v) - mean) * (float64(v) - mean)
		}
		inv := 1 / math.Sqrt(q/float64(c)+eps)
		for i, v := range xr {
			out[row*c+i] = (float64(v)-mean)*inv*float64(w[i]) + float64(b[i])
		}
	}
	return out
}
