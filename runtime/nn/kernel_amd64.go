//go:build amd64 && !purego

package nn

import (
	"github.com/flbq/flbq/generated/vecmath"
	"github.com/flbq/flbq/runtime/backend"
)

// fp32AVX2 reports whether the fp32 ops run the generated AVX2+FMA kernels:
// the backend tier is read on every call, so backend.SetTier (and
// FLBQ_CPU=purego) switch to the pure-Go twins at once.
func fp32AVX2() bool { return backend.Active().AtLeast(backend.AVX2) }

// KernelName names the fp32 micro-kernel the active tier runs: "avx2-fma"
// or "go".
func KernelName() string {
	if fp32AVX2() {
		return "avx2-fma"
	}
	return "go"
}

// kernel runs one 6×16 tile with the micro-kernel avx2 (fp32AVX2(), read
// once per product) selects. MulPacked has checked the whole product's
// bounds, so the assembly runs unchecked.
func kernel(avx2 bool, k int, a *float32, lda int, b *float32, c *float32, ldc int, acc bool) {
	if avx2 {
		vecmath.Sgemm6x16Unchecked(k, a, lda, b, c, ldc, acc)
		return
	}
	kernelGo(k, a, lda, b, c, ldc, acc)
}
