package model

import (
	"bytes"
	"fmt"
	"math"
	"math/rand"
	"sort"
	"strings"
	"sync"

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
	rng  *rand.Rand // NewRandomWeights: fabricate every requested tensor
	made []safetensors.Tensor
	mu   sync.Mutex
}

// NewRandomWeights returns a source that fabricates every tensor a loader
// asks for (normal weights scaled by 1/√fan-in, unit norm scales, small
// biases), for speed benchmarks of real-size configs without weight files.
func NewRandomWeights(seed int64) *Weights {
	return &Weights{used: map[string]bool{}, rng: rand.New(rand.NewSource(seed))}
}

func (w *Weights) random(name string, shape []int) []float32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := tensor.Numel(shape)
	d := make([]float32, n)
	switch {
	case len(shape) == 1 && strings.HasSuffix(name, ".weight"):
		for i := range d {
			d[i] = 1
		}
	case len(shape) == 1:
		for i := range d {
			d[i] = float32(w.rng.NormFloat64() * 0.01)
		}
	default:
		fan := n / shape[0]
		if fan < 1 {
			fan = 1
		}
		s := 1 / math.Sqrt(float64(fan))
		for i := range d {
			d[i] = float32(w.rng.NormFloat64() * s)
		}
	}
	w.used[name] = true
	w.made = append(w.made, safetensors.Tensor{Name: name, Shape: append([]int(nil), shape...), F32: d})
	return d
}

// EncodeRandom writes every tensor a NewRandomWeights source fabricated
// (floats as F32, integer buffers as zero I64s) as a model file with the
// given metadata: a real-size model file for benchmarks of the paths that
// take files (packing, loading a quantized model).
func (w *Weights) EncodeRandom(meta map[string]string) ([]byte, error) {
	if w.rng == nil {
		return nil, fmt.Errorf("model: EncodeRandom on weights read from a file")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var buf bytes.Buffer
	if err := safetensors.Encode(&buf, w.made, meta); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// NewWeights wraps a parsed file.
func NewWeights(f *safetensors.File) *Weights { return &Weights{File: f, used: map[string]bool{}} }

// Has reports whether the file holds name.
func (w *Weights) Has(name string) bool {
	if w.File == nil {
		return false
	}
	_, ok := w.File.Info(name)
	return ok
}

// Float returns a floating-point tensor (F32/F16/BF16 → float32) whose
// shape must equal shape.
func (w *Weights) Float(name string, shape ...int) ([]float32, error) {
	if w.File == nil {
		return w.random(name, shape), nil
	}
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
	if w.File == nil {
		d := make([]int64, tensor.Numel(shape))
		w.mu.Lock()
		w.made = append(w.made, safetensors.Tensor{Name: name, DType: safetensors.I64, Shape: append([]int(nil), shape...), Raw: make([]byte, 8*len(d))})
		w.mu.Unlock()
		return d, nil
	}
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
	if w.File == nil {
		return nil
	}
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
