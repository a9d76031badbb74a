package kernels

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/qformat"
)

// Benchmark shapes (M×K→N): ViT-B linears at M = 1, 196, 1024, Swin-T stage 1
// at M = 3136, and GEMVs whose 8-bit weights exceed L2.
var benchShapes = func() []shape {
	var s []shape
	for _, m := range []int{1, 196, 1024} {
		for _, kn := range [][2]int{{768, 2304}, {768, 768}, {768, 3072}, {3072, 768}} {
			s = append(s, shape{m, kn[0], kn[1]})
		}
	}
	s = append(s, shape{3136, 96, 288}, shape{3136, 96, 384}, shape{3136, 384, 96})
	s = append(s, shape{1, 1024, 4096}, shape{1, 4096, 1024})
	return s
}()

func (s shape) String() string { return fmt.Sprintf("M%d_K%d_N%d", s.M, s.K, s.N) }

func reportGOPS(b *testing.B, s shape) {
	b.ReportMetric(2*float64(s.M)*float64(s.N)*float64(s.K)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GOPS")
}

// BenchmarkQLinear/<tier>/<shape>/b<bits>/t<threads>: QLinear.Forward
// (activation quantization included).
func BenchmarkQLinear(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, tier := range usable {
		b.Run(tier.Name, func(b *testing.B) {
			for _, s := range benchShapes {
				b.Run(s.String(), func(b *testing.B) {
					x := randomX(rng, s.M, s.K)
					y := make([]float32, s.M*s.N)
					for bits := 1; bits <= 8; bits++ {
						l, err := randomLayer(rng, s.N, s.K, qformat.UniformBits(s.N, bits))
						if err != nil {
							b.Fatal(err)
						}
						for _, th := range []int{1, 2} {
							b.Run(fmt.Sprintf("b%d/t%d", bits, th), func(b *testing.B) {
								l.Threads = th
								for b.Loop() {
									l.forward(tier, y, x, s.M)
								}
								reportGOPS(b, s)
							})
						}
					}
				})
			}
		})
	}
}

// BenchmarkInt8Peak: register-only int8 multiply-accumulate loops, one core.
func BenchmarkInt8Peak(b *testing.B) {
	for _, name := range []string{"vnni", "avx2"} {
		b.Run(name, func(b *testing.B) {
			if tierByName(name) == nil {
				b.Skipf("%s not supported by this CPU: peak loop generated and vetted only", name)
			}
			var macs int64
			for b.Loop() {
				macs += Peak(name, 1<<16)
			}
			b.ReportMetric(2*float64(macs)/b.Elapsed().Seconds()/1e9, "GOPS")
		})
	}
}

// BenchmarkFP32/<impl>/<shape>/t<threads>: fp32 baselines y = x·Wᵀ (W N×K):
// gonum's blas32 Sgemm and the project's runtime/nn GEMM. t1 runs with
// GOMAXPROCS=1.
func BenchmarkFP32(b *testing.B) {
	rng := rand.New(rand.NewPCG(2, 2))
	for _, impl := range []string{"gonum", "nn"} {
		b.Run(impl, func(b *testing.B) {
			for _, s := range benchShapes {
				b.Run(s.String(), func(b *testing.B) {
					x := randomX(rng, s.M, s.K)
					w := randomX(rng, s.N, s.K)
					y := make([]float32, s.M*s.N)
					for _, th := range []int{1, 2} {
						b.Run(fmt.Sprintf("t%d", th), func(b *testing.B) {
							defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(th))
							for b.Loop() {
								fp32Linear(impl, th, y, x, w, s)
							}
							reportGOPS(b, s)
						})
					}
				})
			}
		})
	}
}

func fp32Linear(impl string, threads int, y, x, w []float32, s shape) {
	switch impl {
	case "gonum":
		blas32.Gemm(blas.NoTrans, blas.Trans, 1,
			blas32.General{Rows: s.M, Cols: s.K, Stride: s.K, Data: x},
			blas32.General{Rows: s.N, Cols: s.K, Stride: s.K, Data: w},
			0, blas32.General{Rows: s.M, Cols: s.N, Stride: s.N, Data: y})
	case "nn":
		if threads == 1 {
			nn.MatMul(true, s.M, s.N, s.K, x, s.K, w, s.K, y, s.N, false)
			return
		}
		nn.ParallelFor(s.M, 1, func(lo, hi int) {
			nn.MatMul(true, hi-lo, s.N, s.K, x[lo*s.K:], s.K, w, s.K, y[lo*s.N:], s.N, false)
		})
	}
}
