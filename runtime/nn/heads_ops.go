package nn

import "math"

// ReLU applies max(x, 0) in place (torch.relu; NaN stays NaN), split
// across backend.Threads() goroutines for large inputs.
func ReLU(x []float32) {
	ParallelFor(len(x), 1<<15, func(lo, hi int) { ReLUSerial(x[lo:hi]) })
}

// ReLUSerial is ReLU on the calling goroutine. It zeroes exactly the
// values below zero (not -0, not NaN) without a branch per value: on
// activations of random sign a compare-and-branch mispredicts half the
// time and costs more than the arithmetic.
func ReLUSerial(x []float32) {
	for i, v := range x {
		b := math.Float32bits(v)
		mag := int32(b & 0x7fffffff)
		neg := int32(b) >> 31              // -1: sign set
		nonzero := -mag >> 31              // -1: |v| > 0
		notNaN := (mag - 0x7f800001) >> 31 // -1: |v| <= +Inf
		x[i] = math.Float32frombits(b &^ uint32(neg&nonzero&notNaN))
	}
}
