package nn

import (
	"fmt"
	"sync"
)

// LinearOp computes dst[M×Out] = x[M×In]·Wᵀ + b for one layer. It is the
// seam through which calibration (fake-quant) and generated quantized
// kernels replace a layer's fp32 product without touching model code.
// Implementations must be safe for concurrent use.
type LinearOp interface {
	Forward(dst, x []float32, M int)
}

// LinearFunc adapts a function to LinearOp.
type LinearFunc func(dst, x []float32, M int)

// Forward calls f.
func (f LinearFunc) Forward(dst, x []float32, M int) { f(dst, x, M) }

// Overrides replaces the implementation of selected layers (by Linear.Name)
// for one forward call; a nil map changes nothing. Models pass it down to
// every quantizable layer, so concurrent calls may use different overrides.
type Overrides map[string]LinearOp

// Linear is torch.nn.Linear: Weight [Out, In] row-major (torch layout),
// Bias [Out] or nil. Models hold every Linear by pointer; Impl, when set,
// replaces the fp32 product for all calls (set it before sharing the
// model between goroutines).
type Linear struct {
	Name    string // state_dict prefix, e.g. "backbone.body.1.0.attn.qkv"
	In, Out int
	Weight  []float32
	Bias    []float32
	Impl    LinearOp

	once   sync.Once
	packed *Packed
}

// NewLinear wraps torch-layout parameters.
func NewLinear(name string, in, out int, weight, bias []float32) *Linear {
	return &Linear{Name: name, In: in, Out: out, Weight: weight, Bias: bias}
}

// Check validates the parameter sizes.
func (l *Linear) Check() error {
	if len(l.Weight) != l.In*l.Out {
		return fmt.Errorf("%s: weight has %d elements, want %d×%d", l.Name, len(l.Weight), l.Out, l.In)
	}
	if l.Bias != nil && len(l.Bias) != l.Out {
		return fmt.Errorf("%s: bias has %d elements, want %d", l.Name, len(l.Bias), l.Out)
	}
	return nil
}

// Forward computes dst[M×Out] = x[M×In]·Wᵀ + b with the layer's current
// implementation (Impl, else fp32).
func (l *Linear) Forward(dst, x []float32, M int) {
	if l.Impl != nil {
		l.Impl.Forward(dst, x, M)
		return
	}
	l.ForwardFP32(dst, x, M)
}

// Run is Forward with per-call overrides taking precedence.
func (l *Linear) Run(ov Overrides, dst, x []float32, M int) {
	if ov != nil {
		if op, ok := ov[l.Name]; ok && op != nil {
			op.Forward(dst, x, M)
			return
		}
	}
	l.Forward(dst, x, M)
}

// Packed returns the weight packed for the fp32 GEMM (built once).
// Weight must not be modified after the first call.
func (l *Linear) Packed() *Packed {
	l.once.Do(func() { l.packed = NewPacked(true, l.In, l.Out, l.Weight, l.In) })
	return l.packed
}

// ForwardFP32 is the reference fp32 product, split across backend.Threads() goroutines.
func (l *Linear) ForwardFP32(dst, x []float32, M int) {
	if M == 0 {
		return
	}
	_ = dst[M*l.Out-1]
	_ = x[M*l.In-1]
	p := l.Packed()
	if l.Bias == nil {
		MulPackedParallel(M, x, l.In, p, dst, l.Out, false)
		return
	}
	// Initialise rows with the bias and accumulate.
	ParallelFor(M, 256, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			copy(dst[i*l.Out:(i+1)*l.Out], l.Bias)
		}
	})
	MulPackedParallel(M, x, l.In, p, dst, l.Out, true)
}
