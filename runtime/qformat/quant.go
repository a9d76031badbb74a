package qformat

import (
	"fmt"
	"math"
)

// Rule chooses the clipping range of the weight quantizer.
type Rule int

const (
	// MinMax ("vanilla") uses the channel's [min(w,0), max(w,0)].
	MinMax Rule = iota
	// MSE searches shrunken ranges α·[min, max], α ∈ {1, 0.99, …, 0.20}, and
	// keeps the one with the smallest squared error of the channel.
	MSE
)

// String returns "minmax" or "mse".
func (r Rule) String() string {
	switch r {
	case MinMax:
		return "minmax"
	case MSE:
		return "mse"
	}
	return fmt.Sprintf("Rule(%d)", int(r))
}

// ParseRule parses "minmax" (or "vanilla") and "mse".
func ParseRule(s string) (Rule, error) {
	switch s {
	case "minmax", "vanilla", "":
		return MinMax, nil
	case "mse":
		return MSE, nil
	}
	return 0, fmt.Errorf("qformat: unknown quantization rule %q (want minmax or mse)", s)
}

// rangeParams returns scale and integer zero point for the range [lo, hi]
// (lo ≤ 0 ≤ hi) at b bits.
func rangeParams(lo, hi float32, b int) (scale float32, zero int32) {
	qmax := float32(int(1)<<b - 1)
	if hi-lo <= 0 {
		return 1, 0 // all-zero channel: any scale represents it exactly
	}
	scale = (hi - lo) / qmax
	z := math.RoundToEven(float64(-lo / scale))
	zero = int32(min(max(z, 0), float64(qmax)))
	return scale, zero
}

// quantizeValue returns clamp(RoundToEven(w/scale) + zero, 0, 2^b−1).
func quantizeValue(w, scale float32, zero int32, b int) uint8 {
	v := math.RoundToEven(float64(w/scale)) + float64(zero)
	return uint8(min(max(v, 0), float64(int(1)<<b-1)))
}

// QuantizeChannel quantizes one output channel to b bits. q must have
// len(w) entries.
func QuantizeChannel(q []uint8, w []float32, b int, rule Rule) (scale float32, zero int32, err error) {
	checkBits(b)
	if len(q) != len(w) {
		return 0, 0, fmt.Errorf("qformat: len(q) = %d, len(w) = %d", len(q), len(w))
	}
	var lo, hi float32
	for _, v := range w {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return 0, 0, ErrNotFinite
		}
		lo, hi = min(lo, v), max(hi, v)
	}
	scale, zero = rangeParams(lo, hi, b)
	if rule == MSE && hi > lo {
		scale, zero = mseSearch(w, lo, hi, b)
	} else if rule != MinMax && rule != MSE {
		return 0, 0, fmt.Errorf("qformat: unknown rule %v", rule)
	}
	for i, v := range w {
		q[i] = quantizeValue(v, scale, zero, b)
	}
	return scale, zero, nil
}

// mseCandidates is the number of ranges α·[lo, hi] the MSE rule tries.
const mseCandidates = 81

// mseSearch returns the scale and zero point of the first of the ranges
// α·[lo, hi], α = 1, 0.99, …, 0.20, with the smallest channelSSE: the
// result of evaluating every candidate in that order and keeping strict
// improvements. It computes less: a candidate's sum stops as soon as it
// reaches the best full sum so far, or exceeds a bound, the full sum of
// the candidate that is best on a strided sample of the channel. Sums of
// non-negative terms never decrease as terms are added (in float64 too),
// so a stopped candidate could not have been picked, and every candidate
// that could is summed in full in channelSSE's order: the result is
// bit-identical to the exhaustive search (tested against it).
func mseSearch(w []float32, lo, hi float32, b int) (float32, int32) {
	if math.IsInf(float64(hi-lo), 0) {
		return mseSearchExhaustive(w, lo, hi, b) // scale = +Inf: NaN sums
	}
	var scales [mseCandidates]float32
	var zeros [mseCandidates]int32
	for i := range scales {
		a := 1 - float32(i)*0.01
		if i == 0 {
			scales[i], zeros[i] = rangeParams(lo, hi, b)
		} else {
			scales[i], zeros[i] = rangeParams(a*lo, a*hi, b)
		}
	}
	bound := math.Inf(1)
	if step := len(w) / 64; step >= 2 {
		j, jbest := 0, math.Inf(1)
		for i := range scales {
			if e := sampleSSE(w, step, scales[i], zeros[i], b); e < jbest {
				j, jbest = i, e
			}
		}
		bound = channelSSE(w, scales[j], zeros[j], b)
	}
	best, bi := math.Inf(1), 0
	for i := range scales {
		if e, ok := channelSSEBelow(w, scales[i], zeros[i], b, best, bound); ok && e < best {
			best, bi = e, i
		}
	}
	return scales[bi], zeros[bi]
}

// mseSearchExhaustive is the plain search mseSearch must equal: every
// candidate's full channelSSE, strict improvements kept.
func mseSearchExhaustive(w []float32, lo, hi float32, b int) (float32, int32) {
	scale, zero := rangeParams(lo, hi, b)
	best := channelSSE(w, scale, zero, b)
	for i := 1; i < mseCandidates; i++ {
		a := 1 - float32(i)*0.01
		s, z := rangeParams(a*lo, a*hi, b)
		if e := channelSSE(w, s, z, b); e < best {
			best, scale, zero = e, s, z
		}
	}
	return scale, zero
}

// sampleSSE is channelSSE over every step-th weight.
func sampleSSE(w []float32, step int, scale float32, zero int32, b int) float64 {
	var e float64
	for i := 0; i < len(w); i += step {
		v := w[i]
		d := float64(v - scale*float32(int32(quantizeValue(v, scale, zero, b))-zero))
		e += d * d
	}
	return e
}

// channelSSEBelow returns channelSSE(w, scale, zero, b) and true, or false
// once the running sum reaches best or exceeds bound. For scales that keep
// w/scale small (every candidate of a finite channel whose range is not
// denormal) it quantizes with integer clamping, which gives quantizeValue's
// result without its float64 min/max.
func channelSSEBelow(w []float32, scale float32, zero int32, b int, best, bound float64) (float64, bool) {
	if !(scale >= 1e-30) {
		e := channelSSE(w, scale, zero, b)
		return e, e < best && e <= bound
	}
	qmax := int32(1)<<b - 1
	var e float64
	for _, v := range w {
		// |v/scale| ≤ (2^b−1)/0.2·(1+ε) here, so the int32 conversion is exact.
		q := int32(math.RoundToEven(float64(v/scale))) + zero
		q = min(max(q, 0), qmax)
		d := float64(v - scale*float32(q-zero))
		e += d * d
		if e >= best || e > bound {
			return e, false
		}
	}
	return e, true
}

func channelSSE(w []float32, scale float32, zero int32, b int) float64 {
	var e float64
	for _, v := range w {
		d := float64(v - scale*float32(int32(quantizeValue(v, scale, zero, b))-zero))
		e += d * d
	}
	return e
}

// QuantizeWeights quantizes w (N×K row-major) with the bit-width of each tile
// of TileN channels in tileBits (len PaddedN(n)/TileN) and packs the result.
func QuantizeWeights(w []float32, n, k int, tileBits []uint8, rule Rule) (*Matrix, error) {
	if n <= 0 || k <= 0 || len(w) != n*k {
		return nil, fmt.Errorf("qformat: len(w) = %d for shape %d×%d", len(w), n, k)
	}
	if len(tileBits) != PaddedN(n)/TileN {
		return nil, fmt.Errorf("qformat: %d tile bit-widths for %d channels (want %d)", len(tileBits), n, PaddedN(n)/TileN)
	}
	q := make([]uint8, n*k)
	scale := make([]float32, n)
	zero := make([]int32, n)
	for c := 0; c < n; c++ {
		b := int(tileBits[c/TileN])
		if b < MinBits || b > MaxBits {
			return nil, fmt.Errorf("qformat: tile %d: bit-width %d out of range [1, 8]", c/TileN, b)
		}
		var err error
		scale[c], zero[c], err = QuantizeChannel(q[c*k:(c+1)*k], w[c*k:(c+1)*k], b, rule)
		if err != nil {
			return nil, fmt.Errorf("channel %d: %w", c, err)
		}
	}
	return Pack(q, n, k, tileBits, scale, zero)
}

// UniformBits returns tile bit-widths that give every channel of an
// n-channel matrix b bits.
func UniformBits(n, b int) []uint8 {
	checkBits(b)
	tb := make([]uint8, PaddedN(n)/TileN)
	for i := range tb {
		tb[i] = uint8(b)
	}
	return tb
}

// MinActScale is the smallest row max-abs that is quantized; rows whose
// max-abs is below it (or NaN) quantize to zeros with scale 0. It keeps
// 127/maxabs finite.
const MinActScale = 1e-30

// ActInv returns the multiplier 127/maxabs used to quantize a row with the
// given max-abs, and the row's scale maxabs/127 (both 0 for a zero row).
func ActInv(maxabs float32) (inv, scale float32) {
	if !(maxabs >= MinActScale) || math.IsInf(float64(maxabs), 0) {
		return 0, 0
	}
	return ActMax / maxabs, maxabs / ActMax
}

// QuantizeAct quantizes one activation value: RoundToEven(x·inv) clamped to
// [−127, 127]. x·inv is a float32 product; the rounding is IEEE
// round-half-to-even, as VCVTPS2DQ does under the default MXCSR.
func QuantizeAct(x, inv float32) int8 {
	v := x * inv
	r := math.RoundToEven(float64(v))
	if !(r > -ActMax) { // also maps NaN to −127, as VCVTPS2DQ+clamp does
		return -ActMax
	}
	if r > ActMax {
		return ActMax
	}
	return int8(r)
}

// MaxAbs returns max |x| (0 for an empty slice).
func MaxAbs(x []float32) float32 {
	var m float32
	for _, v := range x {
		m = max(m, float32(math.Abs(float64(v))))
	}
	return m
}

// QuantizeRow is the definition of the activation quantizer: it writes the
// int8 row to dst (len(dst) ≥ len(x); dst[len(x):] is zeroed) and returns the
// row's scale maxabs/127 and the sum of the int8 values. Inputs must be
// finite. The kernels' vectorized quantizers are tested bit-exactly against
// it.
func QuantizeRow(dst []int8, x []float32) (scale float32, sum int32) {
	inv, scale := ActInv(MaxAbs(x))
	for i, v := range x {
		q := QuantizeAct(v, inv)
		dst[i] = q
		sum += int32(q)
	}
	clear(dst[len(x):])
	return scale, sum
}
