//go:build !amd64 || purego

package nn

func softmaxRow(x []float32) { softmaxRowGo(x) }

func gelu(x []float32) { geluGo(x) }

func add(dst, src []float32) { addGo(dst, src) }

func layerNormRows(dst, x []float32, rows, c int, w, b []float32, eps float32) {
	layerNormRowsGo(dst, x, rows, c, w, b, eps)
}

// packT16: the Go loops of packPanel do all the transposing here.
func packT16(dst, b []float32, ldb, K int) int { return 0 }

func bilerpAcc(acc, a1, a2, a3, a4 []float32, w *[4]float32) { bilerpAccGo(acc, a1, a2, a3, a4, w) }
