//go:build amd64 && !purego

package nn

import "github.com/flbq/flbq/generated/vecmath"

// The element-wise ops use the generated AVX2+FMA kernels (generated/vecmath)
// under the same CPU check and FLBQ_NOASM switch as the GEMM micro-kernel.

func softmaxRow(x []float32) {
	if useAsm && len(x) >= 8 {
		vecmath.SoftmaxRowAVX2(x)
		return
	}
	softmaxRowGo(x)
}

func gelu(x []float32) {
	if useAsm {
		x = x[vecmath.GELUAVX2(x):]
	}
	geluGo(x)
}

func add(dst, src []float32) {
	if useAsm {
		n := vecmath.AddAVX2(dst, src)
		dst, src = dst[n:], src[n:]
	}
	addGo(dst, src)
}

func layerNormRows(dst, x []float32, rows, c int, w, b []float32, eps float32) {
	if useAsm && c%8 == 0 {
		vecmath.LayerNormAVX2(dst, x, rows, c, w, b, eps)
		return
	}
	layerNormRowsGo(dst, x, rows, c, w, b, eps)
}

// packT16 transposes the first K rounded down to a multiple of 8 columns of
// a full 16-row panel of Bᵀ (see packPanel) and returns how many it did.
func packT16(dst, b []float32, ldb, K int) int {
	if !useAsm || K < 8 {
		return 0
	}
	_ = b[15*ldb+K-1] // every row the kernel reads
	return vecmath.PackT16AVX2(dst[:K*NR], b, ldb)
}
