//go:build amd64 && !purego

package nn

import (
	"fmt"
	"math"
	"math/rand"
	"slices"
	"testing"

	gv "github.com/flbq/flbq/generated/vecmath"
)

// asmKernel is the checked assembly micro-kernel.
var asmKernel = gv.Sgemm6x16

// TestVecmathPanics: every checked wrapper of generated/vecmath rejects each
// bad argument before any assembly runs (so it runs on any tier), naming
// itself and the argument.
func TestVecmathPanics(t *testing.T) {
	f := func(n int) []float32 { return make([]float32, n) }
	huge := 1 << 60 // rows·c, 15·ldb and 5·lda overflow int: the checks must not
	cases := []struct {
		call func()
		want string
	}{
		{func() { gv.Exp(f(7), f(8)) }, "vecmath.Exp: len(dst)=7 < len(x)=8"},
		{func() { gv.Exp(nil, f(1)) }, "vecmath.Exp: len(dst)=0 < len(x)=1"},
		{func() { gv.SoftmaxRow(f(7)) }, "vecmath.SoftmaxRow: len(x)=7 < 8"},
		{func() { gv.SoftmaxRow(nil) }, "vecmath.SoftmaxRow: len(x)=0 < 8"},
		{func() { gv.Add(f(3), f(4)) }, "vecmath.Add: len(dst)=3 < len(src)=4"},

		{func() { gv.LayerNorm(f(16), f(16), -1, 8, f(8), f(8), 1e-5) }, "vecmath.LayerNorm: rows=-1 < 0"},
		{func() { gv.LayerNorm(f(16), f(16), 2, 0, f(8), f(8), 1e-5) }, "vecmath.LayerNorm: c=0 is not a positive multiple of 8"},
		{func() { gv.LayerNorm(f(24), f(24), 2, 12, f(12), f(12), 1e-5) }, "vecmath.LayerNorm: c=12 is not a positive multiple of 8"},
		{func() { gv.LayerNorm(f(16), f(16), 2, -8, f(8), f(8), 1e-5) }, "vecmath.LayerNorm: c=-8 is not a positive multiple of 8"},
		{func() { gv.LayerNorm(f(16), f(10), 2, 8, f(8), f(8), 1e-5) }, "vecmath.LayerNorm: len(x)=10 < rows*c=16"},
		{func() { gv.LayerNorm(f(16), f(16), huge, 8, f(8), f(8), 1e-5) }, fmt.Sprintf("vecmath.LayerNorm: len(x)=16 < rows*c=%d", huge*8)},
		{func() { gv.LayerNorm(f(15), f(16), 2, 8, f(8), f(8), 1e-5) }, "vecmath.LayerNorm: len(dst)=15 < rows*c=16"},
		{func() { gv.LayerNorm(f(16), f(16), 2, 8, f(7), f(8), 1e-5) }, "vecmath.LayerNorm: len(w)=7 < c=8"},
		{func() { gv.LayerNorm(f(16), f(16), 2, 8, f(8), nil, 1e-5) }, "vecmath.LayerNorm: len(b)=0 < c=8"},

		// K = len(dst)/16 = 8 columns, rows ldb = 10 apart: b needs 15·10+8 = 158.
		{func() { gv.PackT16(f(128), f(158), 7) }, "vecmath.PackT16: ldb=7 < K=len(dst)/16=8"},
		{func() { gv.PackT16(f(128), f(158), -1) }, "vecmath.PackT16: ldb=-1 < K=len(dst)/16=8"},
		{func() { gv.PackT16(f(128), f(157), 10) }, "vecmath.PackT16: len(b)=157 < 15*ldb+K=158"},
		{func() { gv.PackT16(f(128), f(5), 10) }, "vecmath.PackT16: len(b)=5 < 15*ldb+K=158"},
		{func() { gv.PackT16(f(128), f(158), huge) }, fmt.Sprintf("vecmath.PackT16: len(b)=158 < 15*ldb+K=%d", 15*huge+8)},

		// k = 3, lda = 4, ldc = 17: a needs 5·4+3 = 23, b 48, c 5·17+16 = 101.
		{func() { gv.Sgemm6x16(0, f(23), 4, f(48), f(101), 17, false) }, "vecmath.Sgemm6x16: k=0 < 1"},
		{func() { gv.Sgemm6x16(-1, f(23), 4, f(48), f(101), 17, true) }, "vecmath.Sgemm6x16: k=-1 < 1"},
		{func() { gv.Sgemm6x16(3, f(23), 2, f(48), f(101), 17, false) }, "vecmath.Sgemm6x16: lda=2 < k=3"},
		{func() { gv.Sgemm6x16(3, f(23), 4, f(48), f(101), 15, false) }, "vecmath.Sgemm6x16: ldc=15 < 16"},
		{func() { gv.Sgemm6x16(3, f(22), 4, f(48), f(101), 17, false) }, "vecmath.Sgemm6x16: len(a)=22 < 5*lda+k=23"},
		{func() { gv.Sgemm6x16(3, nil, 4, f(48), f(101), 17, false) }, "vecmath.Sgemm6x16: len(a)=0 < 5*lda+k=23"},
		{func() { gv.Sgemm6x16(3, f(23), huge, f(48), f(101), 17, false) }, fmt.Sprintf("vecmath.Sgemm6x16: len(a)=23 < 5*lda+k=%d", 5*huge+3)},
		{func() { gv.Sgemm6x16(3, f(23), 4, f(47), f(101), 17, false) }, "vecmath.Sgemm6x16: len(b)=47 < 16*k=48"},
		{func() { gv.Sgemm6x16(3, f(23), 4, f(48), f(100), 17, true) }, "vecmath.Sgemm6x16: len(c)=100 < 5*ldc+16=101"},
		{func() { gv.Sgemm6x16(3, f(23), 4, f(48), f(3), 17, false) }, "vecmath.Sgemm6x16: len(c)=3 < 5*ldc+16=101"},
	}
	for _, tc := range cases {
		t.Run(tc.want, func(t *testing.T) {
			defer func() {
				r := recover()
				if r == nil {
					t.Fatalf("no panic, want %q", tc.want)
				}
				if msg, _ := r.(string); msg != tc.want {
					t.Fatalf("panic %q, want %q", r, tc.want)
				}
			}()
			tc.call()
		})
	}
}

// TestVecmathLimits: the wrappers accept arguments exactly at their limits.
func TestVecmathLimits(t *testing.T) {
	needAsm(t)
	f := func(n int) []float32 { return make([]float32, n) }
	gv.Exp(f(8), f(8))
	gv.SoftmaxRow(f(8))
	gv.Add(f(4), f(4))
	gv.GELU(nil)
	gv.LayerNorm(f(16), f(16), 2, 8, f(8), f(8), 1e-5)
	gv.LayerNorm(nil, nil, 0, 8, f(8), f(8), 1e-5)
	if n := gv.PackT16(f(128), f(158), 10); n != 8 {
		t.Errorf("PackT16 at the limit did %d columns, want 8", n)
	}
	gv.PackT16(f(12), nil, 0) // K = 0: nothing to read
	gv.Sgemm6x16(3, f(23), 4, f(48), f(101), 17, true)
	gv.Sgemm6x16(3, f(18), 3, f(48), f(96), 16, false)
}

// TestSgemm6x16Twin: the avo micro-kernel against its Go twin kernelGo and
// float64 sums, on slices of exactly the length it needs (sentinels after
// C, and C's columns 16..ldc−1 must stay).
//
// Bound: both kernels sum the k products of an element in the same order
// from zero and add C once, so each is within γ(k+1)·S of the exact value
// (S = Σ|a·b| + |C₀| with acc, γ(n) = n·u/(1−n·u), u = 2⁻²⁴), the FMA
// kernel rounding once per step and the Go one twice; hence
// |asm − go| ≤ 2(k+2)·u·S and |asm − exact| ≤ (k+2)·u·S. For k = 1 both
// compute round(a·b) (+C rounded) and must agree exactly.
func TestSgemm6x16Twin(t *testing.T) {
	needAsm(t)
	const u = 1.0 / (1 << 24)
	r := rand.New(rand.NewSource(11))
	var worst float64 // largest |asm − go| / (2(k+2)·u·S)
	for _, k := range []int{1, 2, 7, 64, 301} {
		for _, lda := range []int{k, k | 1 + 2} { // tight, and odd
			for _, ldc := range []int{NR, NR + 3} {
				for _, acc := range []bool{false, true} {
					name := fmt.Sprintf("k=%d lda=%d ldc=%d acc=%v", k, lda, ldc, acc)
					a, b := randSlice(r, (MR-1)*lda+k), randSlice(r, k*NR)
					a0, b0 := slices.Clone(a), slices.Clone(b)
					cLen := (MR-1)*ldc + NR
					c0 := randSlice(r, cLen)
					cAsm, all := padded(cLen)
					copy(cAsm, c0)
					gv.Sgemm6x16(k, a, lda, b, cAsm, ldc, acc)
					cGo := slices.Clone(c0)
					kernelGo(k, &a[0], lda, &b[0], &cGo[0], ldc, acc)
					checkSentinels(t, name, all, cLen)
					if !slices.Equal(a, a0) || !slices.Equal(b, b0) {
						t.Fatalf("%s: the kernel wrote to A or B", name)
					}
					for i := 0; i < MR; i++ {
						for j := 0; j < ldc && i*ldc+j < cLen; j++ {
							idx := i*ldc + j
							if j >= NR {
								if cAsm[idx] != c0[idx] {
									t.Fatalf("%s: wrote C[%d][%d] outside the tile", name, i, j)
								}
								continue
							}
							var exact, s float64
							for kk := 0; kk < k; kk++ {
								p := float64(a[i*lda+kk]) * float64(b[kk*NR+j])
								exact += p
								s += math.Abs(p)
							}
							if acc {
								exact += float64(c0[idx])
								s += math.Abs(float64(c0[idx]))
							}
							got, twin := float64(cAsm[idx]), float64(cGo[idx])
							bound := 2 * float64(k+2) * u * s
							if k == 1 && got != twin || math.Abs(got-twin) > bound || math.Abs(got-exact) > bound/2 {
								t.Fatalf("%s: C[%d][%d] = %g, Go twin %g, exact %g (bound %g)", name, i, j, got, twin, exact, bound)
							}
							worst = math.Max(worst, math.Abs(got-twin)/bound)
						}
					}
				}
			}
		}
	}
	t.Logf("avo micro-kernel vs kernelGo: max |Δ| = %.3g of the bound 2(k+2)·u·Σ|a·b|", worst)
}
