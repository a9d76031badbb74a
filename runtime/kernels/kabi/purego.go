package kabi

import "github.com/flbq/flbq/runtime/qformat"

// DotGo is the pure-Go dot micro-kernel (see DotFunc).
func DotGo(acc []int32, w []byte, x []int8, ldx, rows, groups int) {
	CheckDot("DotGo", acc, w, x, ldx, rows, groups)
	for r := 0; r < rows; r++ {
		a := (*[qformat.TileN]int32)(acc[r*qformat.TileN:])
		xr := x[r*ldx : r*ldx+groups*qformat.KGroup]
		for g := 0; g < groups; g++ {
			wg := (*[qformat.GroupBytes]byte)(w[g*qformat.GroupBytes:])
			x0, x1, x2, x3 := int32(xr[g*4]), int32(xr[g*4+1]), int32(xr[g*4+2]), int32(xr[g*4+3])
			for j := 0; j < qformat.TileN; j++ {
				a[j] += int32(wg[j*4])*x0 + int32(wg[j*4+1])*x1 + int32(wg[j*4+2])*x2 + int32(wg[j*4+3])*x3
			}
		}
	}
}

// FusedGo is the pure-Go fused kernel of b-bit tiles (see FusedFunc): it
// unpacks one superblock at a time with unpack and accumulates it with DotGo.
func FusedGo(unpack UnpackFunc, b int, acc []int32, src []byte, x []int8, ldx, rows, blocks int) {
	CheckFused("FusedGo", acc, src, x, ldx, rows, blocks, b)
	var buf [qformat.BlockWeights]byte
	for sb := 0; sb < blocks; sb++ {
		unpack(buf[:], src[sb*b*qformat.GroupBytes:], 1)
		DotGo(acc, buf[:], x[sb*qformat.BlockK:], ldx, rows, qformat.GroupsPerBlock)
	}
}

// QuantRowGo is the pure-Go activation quantizer (see Table.QuantRow).
func QuantRowGo(dst []int8, x []float32, inv float32) int32 {
	dst = dst[:len(x)]
	var sum int32
	for i, v := range x {
		q := qformat.QuantizeAct(v, inv)
		dst[i] = q
		sum += int32(q)
	}
	return sum
}

// QuantRowsGo is the pure-Go whole-matrix activation quantizer (see
// Table.QuantRows).
func QuantRowsGo(q []int8, x []float32, k, rows int, scale []float32, sum []int32) {
	CheckQuantRows(q, x, k, rows, scale, sum)
	kp := qformat.PaddedK(k)
	for m := 0; m < rows; m++ {
		scale[m], sum[m] = qformat.QuantizeRow(q[m*kp:(m+1)*kp], x[m*k:(m+1)*k])
	}
}

// EpilogueGo is the pure-Go epilogue (see Table.Epilogue); the explicit
// float32 conversion forbids fusing the multiply and add (Go spec), as the
// assembly does not fuse.
func EpilogueGo(y []float32, ldy int, acc []int32, rows int, sum []int32, sx []float32, zs []int32, sw, bias []float32) {
	CheckEpilogue(y, ldy, acc, rows, sum, sx, zs, sw, bias)
	for r := 0; r < rows; r++ {
		yr := y[r*ldy : r*ldy+qformat.TileN]
		for j := range yr {
			a := float32(acc[r*qformat.TileN+j] - zs[j]*sum[r])
			yr[j] = float32(a*(sx[r]*sw[j])) + bias[j]
		}
	}
}
