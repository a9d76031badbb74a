package nn

import (
	"fmt"
	"math/rand"
	"testing"
)

// Element-wise ops and the attention-sized products, the kernels in use
// (KernelName()) against the pure-Go twins in the same run:
//
//	go test ./runtime/nn -run '^$' -bench 'Vec|SmallMatMul' -cpu 1
func BenchmarkVec(b *testing.B) {
	r := rand.New(rand.NewSource(1))
	x := randSlice(r, 49*49*16)
	buf := make([]float32, len(x))
	w, bias := randSlice(r, 768), randSlice(r, 768)
	name := KernelName()
	for _, impl := range []string{name, "go"} {
		twin := impl == "go" && name != "go"
		if impl == "go" && !twin && name == "go" {
			continue
		}
		b.Run("softmax49/"+impl, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				copy(buf, x)
				for r := 0; r < len(buf)/49; r++ {
					if twin {
						softmaxRowGo(buf[r*49 : r*49+49])
					} else {
						SoftmaxRow(buf[r*49 : r*49+49])
					}
				}
			}
			b.ReportMetric(float64(len(x))*float64(b.N)/b.Elapsed().Seconds()/1e6, "Melem/s")
		})
		b.Run("gelu/"+impl, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				copy(buf, x)
				if twin {
					geluGo(buf)
				} else {
					GELUSerial(buf)
				}
			}
			b.ReportMetric(float64(len(x))*float64(b.N)/b.Elapsed().Seconds()/1e6, "Melem/s")
		})
		for _, c := range []int{32, 96, 768} {
			b.Run(fmt.Sprintf("layernorm%d/%s", c, impl), func(b *testing.B) {
				rows := len(x) / c
				for i := 0; i < b.N; i++ {
					if twin {
						layerNormRowsGo(buf, x, rows, c, w, bias, 1e-5)
					} else {
						LayerNormSerial(buf, x, rows, c, w, bias, 1e-5)
					}
				}
				b.ReportMetric(float64(rows*c)*float64(b.N)/b.Elapsed().Seconds()/1e6, "Melem/s")
			})
		}
	}
}

// BenchmarkSmallMatMul: one Swin window head (T = 49 tokens, head dim 32):
// q·kᵀ (B transposed) and attn·v, with B packed on every call as the model does.
func BenchmarkSmallMatMul(b *testing.B) {
	r := rand.New(rand.NewSource(1))
	const T, dh, ld = 49, 32, 3 * 96
	q := randSlice(r, T*dh)
	kv := randSlice(r, T*ld)
	s := make([]float32, T*T)
	o := make([]float32, T*ld)
	b.Run("qkT", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			MatMul(true, T, T, dh, q, dh, kv, ld, s, T, false)
		}
		b.ReportMetric(2*T*T*dh*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
	b.Run("attnV", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			MatMul(false, T, dh, T, s, T, kv, ld, o, ld, false)
		}
		b.ReportMetric(2*T*T*dh*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	})
}
