package model

import (
	"fmt"
	"sort"
	"strings"

	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/runtime/tensor"
)

// Weights hands out a safetensors file's tensors by name, checking dtype
// and shape, and remembers which were used so that loaders can reject
// unexpected tensors. The Mask R-CNN loader takes the rpn.* and
// roi_heads.* tensors from the same Weights after the backbone has.
type Weights struct {
	File *safetensors.File
	used map[string]bool
}

// NewWeights wraps a parsed file.
func NewWeights(f *safetensors.File) *Weights { return &Weights{File: f, used: map[string]bool{}} }

// Has reports whether the file holds name.
func (w *Weights) Has(name string) bool { _, ok := w.File.Info(name); return ok }

// Float returns a floating-point tensor (F32/F16/BF16 → float32) whose
// shape must equal shape.
func (w *Weights) Float(name string, shape ...int) ([]float32, error) {
	info, ok := w.File.Info(name)
	if !ok {
		return nil, fmt.Errorf("tensor %q: missing (want float %v)", name, shape)
	}
	if !info.DType.IsFloat() {
		return nil, fmt.Errorf("tensor %q: dtype %s, want F32, F16 or BF16", name, info.DType)
	}
	if !tensor.SameShape(info.Shape, shape) {
		return nil, fmt.Errorf("tensor %q: shape %v, want %v", name, info.Shape, shape)
	}
	d, _, err := w.File.Float32(name)
	if err != nil {
		return nil, err
	}
	w.used[name] = true
	return d, nil
}

// Int returns an integer tensor with the given shape.
func (w *Weights) Int(name string, shape ...int) ([]int64, error) {
	info, ok := w.File.Info(name)
	if !ok {
		return nil, fmt.Errorf("tensor %q: missing (want int64 %v)", name, shape)
	}
	if !info.DType.IsInt() {
		return nil, fmt.Errorf("tensor %q: dtype %s, want I64", name, info.DType)
	}
	if !tensor.SameShape(info.Shape, shape) {
		return nil, fmt.Errorf("tensor %q: shape %v, want %v", name, info.Shape, shape)
	}
	d, _, err := w.File.Int64(name)
	if err != nil {
		return nil, err
	}
	w.used[name] = true
	return d, nil
}

// Unused lists tensors under prefix ("" for all) that no loader took.
func (w *Weights) Unused(prefix string) []string {
	var out []string
	for _, n := range w.File.Names() {
		if strings.HasPrefix(n, prefix) && !w.used[n] {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// CheckUnused returns an error naming the first unexpected tensor under prefix.
func (w *Weights) CheckUnused(prefix string) error {
	if u := w.Unused(prefix); len(u) > 0 {
		more := ""
		if len(u) > 1 {
			more = fmt.Sprintf(" (and %d more)", len(u)-1)
		}
		return fmt.Errorf("tensor %q: unexpected%s", u[0], more)
	}
	return nil
}

// loader accumulates the first error of a sequence of tensor reads.
type loader struct {
	w   *Weights
	err error
}

func (l *loader) f(name string, shape ...int) []float32 {
	if l.err != nil {
		return nil
	}
	d, err := l.w.Float(name, shape...)
	if err != nil {
		l.err = err
	}
	return d
}

// opt loads name if present (nil otherwise).
func (l *loader) opt(name string, shape ...int) []float32 {
	if !l.w.Has(name) {
		return nil
	}
	return l.f(name, shape...)
}

func (l *loader) i(name string, shape ...int) []int64 {
	if l.err != nil {
		return nil
	}
	d, err := l.w.Int(name, shape...)
	if err != nil {
		l.err = err
	}
	return d
}
