//go:build amd64 && !purego

package nn

import "github.com/flbq/flbq/generated/vecmath"

// The element-wise ops run the generated AVX2+FMA kernels (generated/vecmath,
// which checks their arguments) when the backend tier allows, as the GEMM
// micro-kernel does, and finish the tails in Go.

func softmaxRow(x []float32) {
	if len(x) >= 8 && fp32AVX2() {
		vecmath.SoftmaxRow(x)
		return
	}
	softmaxRowGo(x)
}

func gelu(x []float32) {
	if fp32AVX2() {
		x = x[vecmath.GELU(x):]
	}
	geluGo(x)
}

func add(dst, src []float32) {
	if fp32AVX2() {
		n := vecmath.Add(dst, src)
		dst, src = dst[n:], src[n:]
	}
	addGo(dst, src)
}

func layerNormRows(dst, x []float32, rows, c int, w, b []float32, eps float32) {
	if c%8 == 0 && fp32AVX2() {
		vecmath.LayerNorm(dst, x, rows, c, w, b, eps)
		return
	}
	layerNormRowsGo(dst, x, rows, c, w, b, eps)
}

// packT16 transposes the first K rounded down to a multiple of 8 columns of
// a full 16-row panel of Bᵀ (see packPanel) and returns how many it did.
func packT16(dst, b []float32, ldb, K int) int {
	if K < 8 || !fp32AVX2() {
		return 0
	}
	return vecmath.PackT16(dst[:K*NR], b, ldb)
}

func bilerpAcc(acc, a1, a2, a3, a4 []float32, w *[4]float32) {
	if fp32AVX2() {
		n := vecmath.BilerpAcc(acc, a1, a2, a3, a4, w)
		acc, a1, a2, a3, a4 = acc[n:], a1[n:], a2[n:], a3[n:], a4[n:]
	}
	bilerpAccGo(acc, a1, a2, a3, a4, w)
}
