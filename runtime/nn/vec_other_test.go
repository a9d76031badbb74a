//go:build !amd64 || purego

package nn

// asmKernel is the assembly micro-kernel: none in this build (fp32AVX2 is
// always false here, so tests never call it).
var asmKernel func(k int, a []float32, lda int, b, c []float32, ldc int, acc bool)
