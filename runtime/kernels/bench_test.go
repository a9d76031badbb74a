package kernels

import (
	"fmt"
	"github.com/flbq/flbq/runtime/backend"
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
	defer backend.SetThreads(backend.SetThreads(0))
	for _, bt := range backend.Usable() {
		tier := tables[bt]
		b.Run(tier.Name(), func(b *testing.B) {
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
								backend.SetThreads(th)
								if th == 1 {
									// One goroutine: also report its thread CPU time.
									cpuLoop(b, func() { l.forward(tier, y, x, s.M) })
								} else {
									for b.Loop() {
										l.forward(tier, y, x, s.M)
									}
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
	for _, tier := range []backend.Tier{backend.VNNI, backend.AVX2} {
		b.Run(tier.String(), func(b *testing.B) {
			if !backend.CanRun(tier) {
				b.Skipf("%s not supported by this CPU", tier)
			}
			var macs int64
			cpuLoop(b, func() { macs += Peak(tier, 1<<16) })
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

// Layer shapes of the bundled Swin Mask R-CNN (stage widths 16, 32, 64, 128;
// 192×192 input): qkv, proj, fc1, fc2 and patch merging per stage at its
// token count (window-padded).
var swinSmallShapes = func() []shape {
	var s []shape
	for i, m := range []int{2401, 625, 169, 49} {
		c := 16 << i
		s = append(s, shape{m, c, 3 * c}, shape{m, c, c}, shape{m, c, 4 * c}, shape{m, 4 * c, c})
		if i < 3 {
			s = append(s, shape{m / 4, 4 * c, 2 * c})
		}
	}
	return s
}()

// BenchmarkSwinSmall/<shape>/<impl>: the fp32 nn.Linear (packed weights,
// bias) against QLinear at 4 and 8 bits on the default goroutines (and at
// 4 bits on one), at the bundled detector's layer shapes.
func BenchmarkSwinSmall(b *testing.B) {
	rng := rand.New(rand.NewPCG(3, 3))
	for _, s := range swinSmallShapes {
		b.Run(s.String(), func(b *testing.B) {
			x := randomX(rng, s.M, s.K)
			w := randomX(rng, s.N, s.K)
			bias := randomX(rng, 1, s.N)
			y := make([]float32, s.M*s.N)
			b.Run("fp32", func(b *testing.B) {
				l := nn.NewLinear("l", s.K, s.N, w, bias)
				l.Forward(y, x, s.M)
				for b.Loop() {
					l.Forward(y, x, s.M)
				}
				reportGOPS(b, s)
			})
			for _, bits := range []int{4, 8, -4} {
				name := fmt.Sprintf("b%d", bits)
				threads := 0
				if bits < 0 {
					bits, name, threads = -bits, fmt.Sprintf("b%d-t1", -bits), 1
				}
				b.Run(name, func(b *testing.B) {
					l, err := QuantizeLinear(w, s.N, s.K, qformat.UniformBits(s.N, bits), qformat.MinMax, bias)
					if err != nil {
						b.Fatal(err)
					}
					defer backend.SetThreads(backend.SetThreads(threads))
					for b.Loop() {
						l.Forward(y, x, s.M)
					}
					reportGOPS(b, s)
				})
			}
		})
	}
}

// BenchmarkTile/<rows>x<K>/b<bits>/<path>: one tile of 16 channels over rows
// activation rows on one goroutine: the fused unpack+dot kernel against
// Unpack+Dot (kChunk at a time, as gemm does), GOPS of the integer part.
func BenchmarkTile(b *testing.B) {
	t := table()
	rng := rand.New(rand.NewPCG(4, 4))
	for _, rk := range [][2]int{{1, 4096}, {4, 1024}, {256, 256}, {2401, 32}} {
		rows, K := rk[0], rk[1]
		x := make([]int8, rows*K)
		for i := range x {
			x[i] = int8(rng.IntN(255) - 127)
		}
		acc := make([]int32, rows*16)
		unp := qformat.AlignedBytes(kChunk * qformat.TileN)
		for _, bits := range []int{2, 4, 5, 8} {
			src := make([]byte, qformat.TileBytes(bits, K))
			for i := range src {
				src[i] = byte(rng.Uint32())
			}
			for _, path := range []string{"fused", "unpackdot"} {
				fused := t.Fused[bits]
				if path == "fused" && fused == nil {
					continue
				}
				b.Run(fmt.Sprintf("%dx%d/b%d/%s", rows, K, bits, path), func(b *testing.B) {
					cpuLoop(b, func() {
						if path == "fused" {
							fused(acc, src, x, K, rows, K/qformat.BlockK)
							return
						}
						bb := qformat.BlockBytes(bits)
						for k0 := 0; k0 < K; k0 += kChunk {
							kc := min(kChunk, K-k0)
							t.Unpack[bits](unp, src[k0/qformat.BlockK*bb:], kc/qformat.BlockK)
							t.Dot[bits](acc, unp, x[k0:], K, rows, kc/qformat.KGroup)
						}
					})
					b.ReportMetric(2*16*float64(rows*K)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GOPS")
				})
			}
		}
	}
}
