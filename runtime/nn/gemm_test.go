package nn

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

func randSlice(r *rand.Rand, n int) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64())
	}
	return s
}

func naiveMatMul(transB bool, M, N, K int, a []float32, lda int, b []float32, ldb int) []float64 {
	out := make([]float64, M*N)
	for i := 0; i < M; i++ {
		for j := 0; j < N; j++ {
			var s float64
			for k := 0; k < K; k++ {
				var bv float32
				if transB {
					bv = b[j*ldb+k]
				} else {
					bv = b[k*ldb+j]
				}
				s += float64(a[i*lda+k]) * float64(bv)
			}
			out[i*N+j] = s
		}
	}
	return out
}

func TestMatMulShapes(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for _, sh := range [][3]int{{1, 1, 1}, {6, 16, 1}, {7, 17, 3}, {13, 33, 300}, {49, 49, 32}, {100, 5, 600}, {12, 48, 513}} {
		M, N, K := sh[0], sh[1], sh[2]
		for _, tb := range []bool{false, true} {
			for _, acc := range []bool{false, true} {
				lda, ldb, ldc := K+3, N+2, N+5
				if tb {
					ldb = K + 1
				}
				a := randSlice(r, M*lda)
				b := randSlice(r, max(N, K)*ldb)
				c := randSlice(r, M*ldc)
				c0 := append([]float32(nil), c...)
				MatMul(tb, M, N, K, a, lda, b, ldb, c, ldc, acc)
				want := naiveMatMul(tb, M, N, K, a, lda, b, ldb)
				for i := 0; i < M; i++ {
					for j := 0; j < ldc; j++ {
						got := float64(c[i*ldc+j])
						if j >= N {
							if c[i*ldc+j] != c0[i*ldc+j] {
								t.Fatalf("%v: wrote outside C at (%d,%d)", sh, i, j)
							}
							continue
						}
						w := want[i*N+j]
						if acc {
							w += float64(c0[i*ldc+j])
						}
						if math.Abs(got-w) > 1e-4*math.Sqrt(float64(K))+1e-5 {
							t.Fatalf("%v transB=%v acc=%v: C[%d,%d]=%g want %g", sh, tb, acc, i, j, got, w)
						}
					}
				}
			}
		}
	}
}

// MulPacked rejects leading dimensions under K and N (its one bounds check
// for all the unchecked micro-kernel calls relies on them).
func TestMulPackedLeadingDims(t *testing.T) {
	for _, tc := range []struct {
		lda, ldc int
		want     string
	}{
		{31, 16, "nn.MulPacked: M=6 K=32 N=16 with lda=31 ldc=16 (want lda ≥ K, ldc ≥ N)"},
		{32, 15, "nn.MulPacked: M=6 K=32 N=16 with lda=32 ldc=15 (want lda ≥ K, ldc ≥ N)"},
		{-1, 16, "nn.MulPacked: M=6 K=32 N=16 with lda=-1 ldc=16 (want lda ≥ K, ldc ≥ N)"},
	} {
		func() {
			defer func() {
				if r := recover(); r != tc.want {
					t.Errorf("lda=%d ldc=%d: panic %v, want %q", tc.lda, tc.ldc, r, tc.want)
				}
			}()
			MulPacked(6, make([]float32, 6*32), tc.lda, make([]float32, 32*16), 32, 16, make([]float32, 6*16), tc.ldc, false)
		}()
	}
}

func BenchmarkGemm(b *testing.B) {
	r := rand.New(rand.NewSource(1))
	for _, sh := range [][3]int{{3136, 288, 96}, {3136, 384, 96}, {1024, 768, 768}, {1024, 3072, 768}} {
		M, N, K := sh[0], sh[1], sh[2]
		x := randSlice(r, M*K)
		w := randSlice(r, N*K)
		c := make([]float32, M*N)
		flops := 2 * float64(M*N*K)
		b.Run(fmt.Sprintf("flbq-%s/%dx%dx%d", KernelName(), M, N, K), func(b *testing.B) {
			p := NewPacked(true, K, N, w, K)
			for i := 0; i < b.N; i++ {
				MulPackedParallel(M, x, K, p, c, N, false)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
		b.Run(fmt.Sprintf("gonum/%dx%dx%d", M, N, K), func(b *testing.B) {
			A := blas32.General{Rows: M, Cols: K, Stride: K, Data: x}
			B := blas32.General{Rows: N, Cols: K, Stride: K, Data: w}
			C := blas32.General{Rows: M, Cols: N, Stride: N, Data: c}
			for i := 0; i < b.N; i++ {
				blas32.Gemm(blas.NoTrans, blas.Trans, 1, A, B, 0, C)
			}
			b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
		})
	}
}
