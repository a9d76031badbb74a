// Package tensor is flbq's minimal dense float32 tensor: a shape and a
// row-major (C-order) data slice. Image feature maps are NCHW, transformer
// token maps NHWC ([N, H, W, C]), matrices [rows, cols].
package tensor

import (
	"fmt"
	"math"
)

// Tensor is a dense row-major float32 array. Data has exactly Numel() elements.
type Tensor struct {
	Shape []int
	Data  []float32
}

// New returns a zero tensor of the given shape.
func New(shape ...int) *Tensor {
	return &Tensor{Shape: append([]int(nil), shape...), Data: make([]float32, Numel(shape))}
}

// From wraps data (not copied); it panics if the sizes disagree.
func From(data []float32, shape ...int) *Tensor {
	if Numel(shape) != len(data) {
		panic(fmt.Sprintf("tensor.From: shape %v needs %d elements, have %d", shape, Numel(shape), len(data)))
	}
	return &Tensor{Shape: append([]int(nil), shape...), Data: data}
}

// Numel is the product of shape.
func Numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// Numel is the number of elements.
func (t *Tensor) Numel() int { return len(t.Data) }

// Clone returns a deep copy.
func (t *Tensor) Clone() *Tensor {
	return &Tensor{Shape: append([]int(nil), t.Shape...), Data: append([]float32(nil), t.Data...)}
}

// Dim returns Shape[i], counting negative i from the end.
func (t *Tensor) Dim(i int) int {
	if i < 0 {
		i += len(t.Shape)
	}
	return t.Shape[i]
}

// SameShape reports whether a and b have identical shapes.
func SameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// String summarises the tensor.
func (t *Tensor) String() string { return fmt.Sprintf("Tensor%v", t.Shape) }

// MaxAbs returns max |x|.
func MaxAbs(x []float32) float32 {
	var m float32
	for _, v := range x {
		if a := float32(math.Abs(float64(v))); a > m || v != v {
			m = a
		}
	}
	return m
}

// MaxAbsDiff returns max |a-b| (NaN-aware: a NaN anywhere yields +Inf).
func MaxAbsDiff(a, b []float32) float32 {
	var m float32
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		if d != d {
			return float32(math.Inf(1))
		}
		if d < 0 {
			d = -d
		}
		if float32(d) > m {
			m = float32(d)
		}
	}
	return m
}

// NHWCToNCHW converts a [N,H,W,C] tensor to [N,C,H,W].
func NHWCToNCHW(t *Tensor) *Tensor {
	n, h, w, c := t.Shape[0], t.Shape[1], t.Shape[2], t.Shape[3]
	out := New(n, c, h, w)
	hw := h * w
	for b := 0; b < n; b++ {
		src := t.Data[b*hw*c : (b+1)*hw*c]
		dst := out.Data[b*hw*c : (b+1)*hw*c]
		for p := 0; p < hw; p++ {
			row := src[p*c : p*c+c]
			for ch, v := range row {
				dst[ch*hw+p] = v
			}
		}
	}
	return out
}

// NCHWToNHWC converts a [N,C,H,W] tensor to [N,H,W,C].
func NCHWToNHWC(t *Tensor) *Tensor {
	n, c, h, w := t.Shape[0], t.Shape[1], t.Shape[2], t.Shape[3]
	out := New(n, h, w, c)
	hw := h * w
	for b := 0; b < n; b++ {
		src := t.Data[b*hw*c : (b+1)*hw*c]
		dst := out.Data[b*hw*c : (b+1)*hw*c]
		for ch := 0; ch < c; ch++ {
			plane := src[ch*hw : ch*hw+hw]
			for p, v := range plane {
				dst[p*c+ch] = v
			}
		}
	}
	return out
}
