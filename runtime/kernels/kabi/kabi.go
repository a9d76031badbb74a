// Package kabi is the ABI of the quantized matmul micro-kernels: the function
// types every tier implements, the table of one tier's kernels, the length
// checks every kernel runs first, and the readable pure-Go twins of the
// kernels that do not depend on the bit-width (the dot product, the activation
// quantizer and the epilogue).
//
// generated/kernels fills one Table per tier (the bit-width-specific unpackers
// and the assembly are generated); runtime/kernels selects the table of the
// active backend tier. Hand-written here because none of it varies by
// bit-width or tier.
package kabi

import (
	"fmt"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/qformat"
)

// UnpackFunc unpacks blocks superblocks of one tile into the byte layout of
// qformat: k-group g of the tile at dst[g·64 : g·64+64].
type UnpackFunc func(dst, src []byte, blocks int)

// DotFunc accumulates acc[r·16+j] += Σ_{g<groups} Σ_{i<4} w[g·64+j·4+i]·x[r·ldx+g·4+i]
// for r < rows and j < 16. x must lie in [−127, 127].
type DotFunc func(acc []int32, w []byte, x []int8, ldx, rows, groups int)

// FusedFunc accumulates acc[r·16+j] += Σ_{k<blocks·32} (q[j,k]−WeightOffset)·x[r·ldx+k]
// for r < rows and j < 16, reading blocks packed superblocks of one tile (src)
// without an unpacked buffer. x must lie in [−127, 127].
type FusedFunc func(acc []int32, src []byte, x []int8, ldx, rows, blocks int)

// Table holds one tier's kernels.
type Table struct {
	// Tier is the backend tier these kernels need.
	Tier backend.Tier
	// Rows is the register blocking over activation rows of Dot.
	Rows int
	// Unpack[b] unpacks b-bit tiles.
	Unpack [qformat.MaxBits + 1]UnpackFunc
	// Dot[b] is the dot micro-kernel for tiles unpacked by Unpack[b].
	Dot [qformat.MaxBits + 1]DotFunc
	// Fused[b], when not nil, unpacks b-bit tiles in registers and accumulates
	// them in one pass (preferred over Unpack[b]+Dot[b]; same WeightOffset).
	Fused [qformat.MaxBits + 1]FusedFunc
	// WeightOffset[b] is subtracted from q by Unpack[b]: Dot[b] computes
	// Σ(q−WeightOffset[b])·x, so callers use the zero point z−WeightOffset[b].
	WeightOffset [qformat.MaxBits + 1]int32
	// MaxAbs returns max |x[i]| (bit-exact with qformat.MaxAbs).
	MaxAbs func(x []float32) float32
	// QuantRow writes dst[i] = qformat.QuantizeAct(x[i], inv) for i < len(x) and
	// returns their sum (bit-exact with qformat).
	QuantRow func(dst []int8, x []float32, inv float32) int32
	// QuantRows quantizes rows rows of x (row m at x[m·k:], k values) into q (row m
	// at q[m·kp:], kp = qformat.PaddedK(k), padding zeroed) with scale[m] and sum[m],
	// bit-exact with qformat.QuantizeRow row by row.
	QuantRows func(q []int8, x []float32, k, rows int, scale []float32, sum []int32)
	// Epilogue writes the fp32 outputs of rows rows of one full tile:
	// y[r·ldy+j] = float32(acc[r·16+j] − zs[j]·sum[r])·(sx[r]·sw[j]) + bias[j].
	Epilogue func(y []float32, ldy int, acc []int32, rows int, sum []int32, sx []float32, zs []int32, sw, bias []float32)
	// Peak, when not nil, runs a register-only int8 multiply-accumulate loop
	// of iters iterations of PeakMACs multiply-accumulates each.
	Peak     func(iters int)
	PeakMACs int
}

// Name is the name of the table's tier.
func (t *Table) Name() string { return t.Tier.String() }

// CheckUnpack panics unless an UnpackFunc of b bits may read blocks
// superblocks from src and write them to dst.
func CheckUnpack(name string, dst, src []byte, blocks, b int) {
	if blocks < 0 || len(src) < blocks*b*qformat.GroupBytes || len(dst) < blocks*qformat.BlockWeights {
		panic(fmt.Sprintf("kernels: %s: %d blocks with len(src) = %d, len(dst) = %d", name, blocks, len(src), len(dst)))
	}
}

// CheckDot panics unless a DotFunc's arguments are in bounds.
func CheckDot(name string, acc []int32, w []byte, x []int8, ldx, rows, groups int) {
	if rows < 0 || groups < 0 || ldx < groups*qformat.KGroup || len(acc) < rows*qformat.TileN ||
		len(w) < groups*qformat.GroupBytes || (rows > 0 && len(x) < (rows-1)*ldx+groups*qformat.KGroup) {
		panic(fmt.Sprintf("kernels: %s: bad dot arguments rows=%d groups=%d ldx=%d len(acc)=%d len(w)=%d len(x)=%d",
			name, rows, groups, ldx, len(acc), len(w), len(x)))
	}
}

// CheckFused panics unless a FusedFunc's arguments of b bits are in bounds.
func CheckFused(name string, acc []int32, src []byte, x []int8, ldx, rows, blocks, b int) {
	if rows < 0 || blocks < 0 || ldx < blocks*qformat.BlockK || len(acc) < rows*qformat.TileN ||
		len(src) < blocks*b*qformat.GroupBytes || (rows > 0 && len(x) < (rows-1)*ldx+blocks*qformat.BlockK) {
		panic(fmt.Sprintf("kernels: %s: bad fused arguments rows=%d blocks=%d ldx=%d len(acc)=%d len(src)=%d len(x)=%d",
			name, rows, blocks, ldx, len(acc), len(src), len(x)))
	}
}

// CheckQuantRows panics unless QuantRows' arguments are in bounds.
func CheckQuantRows(q []int8, x []float32, k, rows int, scale []float32, sum []int32) {
	if k <= 0 || rows < 0 || len(q) < rows*qformat.PaddedK(k) || len(x) < rows*k || len(scale) < rows || len(sum) < rows {
		panic(fmt.Sprintf("kernels: quantRows: bad arguments k=%d rows=%d len(q)=%d len(x)=%d", k, rows, len(q), len(x)))
	}
}

// CheckEpilogue panics unless Epilogue's arguments are in bounds.
func CheckEpilogue(y []float32, ldy int, acc []int32, rows int, sum []int32, sx []float32, zs []int32, sw, bias []float32) {
	const n = qformat.TileN
	if rows < 0 || ldy < n || len(acc) < rows*n || len(sum) < rows || len(sx) < rows || len(zs) < n ||
		len(sw) < n || len(bias) < n || (rows > 0 && len(y) < (rows-1)*ldy+n) {
		panic(fmt.Sprintf("kernels: epilogue: bad arguments rows=%d ldy=%d len(y)=%d len(acc)=%d", rows, ldy, len(y), len(acc)))
	}
}
