package qformat

import "fmt"

// QuantizeTensor quantizes a weight tensor of any rank ≥ 2 (row-major,
// torch layout) per output channel at b bits, the output channel on axis
// outAxis (0 for Linear and Conv2d, 1 for ConvTranspose2d). q keeps w's
// layout; scale and zero have one entry per output channel. This is the
// storage form of the heads' uniform weights; DequantizeTensor inverts it.
func QuantizeTensor(w []float32, shape []int, outAxis, b int, rule Rule) (q []uint8, scale []float32, zero []int32, err error) {
	outer, out, inner, err := axisSplit(len(w), shape, outAxis)
	if err != nil {
		return nil, nil, nil, err
	}
	if b < MinBits || b > MaxBits {
		return nil, nil, nil, fmt.Errorf("qformat: bit-width %d out of range [1, 8]", b)
	}
	q = make([]uint8, len(w))
	scale = make([]float32, out)
	zero = make([]int32, out)
	row := make([]float32, outer*inner)
	qrow := make([]uint8, outer*inner)
	for c := 0; c < out; c++ {
		for o := 0; o < outer; o++ {
			copy(row[o*inner:(o+1)*inner], w[(o*out+c)*inner:(o*out+c+1)*inner])
		}
		if scale[c], zero[c], err = QuantizeChannel(qrow, row, b, rule); err != nil {
			return nil, nil, nil, fmt.Errorf("output channel %d: %w", c, err)
		}
		for o := 0; o < outer; o++ {
			copy(q[(o*out+c)*inner:(o*out+c+1)*inner], qrow[o*inner:(o+1)*inner])
		}
	}
	return q, scale, zero, nil
}

// DequantizeTensor returns w[…c…] = scale[c]·(q − zero[c]) in q's layout,
// the exact values the calibration's fake-quant computes.
func DequantizeTensor(q []uint8, shape []int, outAxis int, scale []float32, zero []int32) ([]float32, error) {
	outer, out, inner, err := axisSplit(len(q), shape, outAxis)
	if err != nil {
		return nil, err
	}
	if len(scale) != out || len(zero) != out {
		return nil, fmt.Errorf("qformat: %d scales and %d zero points for %d output channels", len(scale), len(zero), out)
	}
	w := make([]float32, len(q))
	for o := 0; o < outer; o++ {
		for c := 0; c < out; c++ {
			s, z := scale[c], zero[c]
			base := (o*out + c) * inner
			for i := base; i < base+inner; i++ {
				w[i] = s * float32(int32(q[i])-z)
			}
		}
	}
	return w, nil
}

func axisSplit(n int, shape []int, axis int) (outer, out, inner int, err error) {
	if len(shape) < 2 || axis < 0 || axis >= len(shape) {
		return 0, 0, 0, fmt.Errorf("qformat: shape %v with output axis %d", shape, axis)
	}
	outer, inner = 1, 1
	for i, d := range shape {
		if d <= 0 {
			return 0, 0, 0, fmt.Errorf("qformat: shape %v has an empty dimension", shape)
		}
		switch {
		case i < axis:
			outer *= d
		case i > axis:
			inner *= d
		}
	}
	out = shape[axis]
	if outer*out*inner != n {
		return 0, 0, 0, fmt.Errorf("qformat: %d values for shape %v", n, shape)
	}
	return outer, out, inner, nil
}
