package kernels

import (
	"fmt"
	"sync"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/internal/bufpool"
	"github.com/flbq/flbq/runtime/kernels/kabi"
	"github.com/flbq/flbq/runtime/qformat"
)

// QLinear is a quantized linear layer y = x·Wᵀ + bias with W packed by
// runtime/qformat (bit-width per tile of 16 output channels, so channel
// groups of different bit-widths run in one call). It is safe for concurrent
// use; each call uses up to backend.Threads() goroutines (small problems
// run on the calling goroutine).
type QLinear struct {
	W    *qformat.Matrix
	Bias []float32 // len N, or nil
}

// NewQLinear wraps a packed weight matrix. It rejects K > qformat.MaxK, for
// which the int32 accumulator could overflow (split such layers along K).
func NewQLinear(w *qformat.Matrix, bias []float32) (*QLinear, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	if w.K > qformat.MaxK {
		return nil, fmt.Errorf("kernels: K = %d exceeds qformat.MaxK = %d for exact int32 accumulation; split the layer along K", w.K, qformat.MaxK)
	}
	if bias != nil && len(bias) != w.N {
		return nil, fmt.Errorf("kernels: len(bias) = %d, want %d", len(bias), w.N)
	}
	return &QLinear{W: w, Bias: bias}, nil
}

// QuantizeLinear quantizes fp32 weights w (N×K row-major) with one bit-width
// per tile of 16 channels (qformat.UniformBits for a single one) and wraps them.
func QuantizeLinear(w []float32, n, k int, tileBits []uint8, rule qformat.Rule, bias []float32) (*QLinear, error) {
	m, err := qformat.QuantizeWeights(w, n, k, tileBits, rule)
	if err != nil {
		return nil, err
	}
	return NewQLinear(m, bias)
}

// actPool keeps quantized-activation buffers by size class of M·KP
// across calls and garbage collections (bufpool's doc says why).
var actPool bufpool.Pool[*Activations]

// Forward computes dst (M×N) = quantized(x) (M×K) · Wᵀ + bias with the active
// tier.
func (l *QLinear) Forward(dst, x []float32, M int) error {
	return l.forward(table(), dst, x, M)
}

func (l *QLinear) forward(t *kabi.Table, dst, x []float32, M int) error {
	K := l.W.K
	if M < 0 || len(x) < M*K {
		return fmt.Errorf("kernels: QLinear.Forward: len(x) = %d for M = %d, K = %d", len(x), M, K)
	}
	c := bufpool.Class(M * qformat.PaddedK(K))
	a, ok := actPool.Get(c)
	if !ok {
		a = &Activations{Q: make([]int8, 0, 1<<c)}
	}
	defer actPool.Put(c, a)
	a.resize(M, K)
	l.quantize(t, a, x)
	return l.forwardQ(t, dst, a)
}

// quantize runs the activation quantizer, split across goroutines for large M.
func (l *QLinear) quantize(t *kabi.Table, a *Activations, x []float32) {
	threads := backend.Threads()
	if a.M*a.K < 1<<16 || threads == 1 || a.M < 2 {
		quantizeRows(t, a, x, 0, a.M)
		return
	}
	threads = min(threads, a.M)
	var wg sync.WaitGroup
	for g := 0; g < threads; g++ {
		m0, m1 := a.M*g/threads, a.M*(g+1)/threads
		wg.Add(1)
		go func() { defer wg.Done(); quantizeRows(t, a, x, m0, m1) }()
	}
	wg.Wait()
}

// ForwardQuantized is Forward for activations already quantized with
// QuantizeActivations.
func (l *QLinear) ForwardQuantized(dst []float32, a *Activations) error {
	return l.forwardQ(table(), dst, a)
}

func (l *QLinear) forwardQ(t *kabi.Table, dst []float32, a *Activations) error {
	N := l.W.N
	if a.K != l.W.K {
		return fmt.Errorf("kernels: activations have K = %d, weights %d", a.K, l.W.K)
	}
	if len(dst) < a.M*N {
		return fmt.Errorf("kernels: len(dst) = %d, want %d×%d", len(dst), a.M, N)
	}
	w := l.W
	gemm(t, w, a, func(tile, m0, rows int, acc []int32, off int32, ws *workspace) {
		n0 := tile * qformat.TileN
		nn := min(qformat.TileN, N-n0)
		zs, bias := &ws.zs, &ws.bias
		for j := range zs {
			zs[j] = w.Zero[n0+j] - off
		}
		clear(bias[:])
		if l.Bias != nil {
			copy(bias[:], l.Bias[n0:n0+nn])
		}
		if nn == qformat.TileN {
			t.Epilogue(dst[m0*N+n0:], N, acc, rows, a.Sum[m0:], a.Scale[m0:], zs[:], w.Scale[n0:], bias[:])
			return
		}
		sw := w.Scale[n0 : n0+nn]
		for r := 0; r < rows; r++ {
			m := m0 + r
			y := dst[m*N+n0 : m*N+n0+nn]
			ar := acc[r*qformat.TileN : r*qformat.TileN+nn]
			for j := range y {
				y[j] = output(ar[j]-zs[j]*a.Sum[m], a.Scale[m], sw[j], bias[j])
			}
		}
	})
	return nil
}

// output is the fp32 epilogue shared by every tier and the reference.
// The explicit float32 conversion forbids fusing the multiply-add (Go spec),
// matching Tier.Epilogue's separately rounded VMULPS and VADDPS.
func output(acc int32, sx, sw, bias float32) float32 {
	return float32(float32(acc)*(sx*sw)) + bias
}

// Accumulate writes the exact int32 accumulators dst[m·N+n] =
// Σk (q[n,k] − z[n])·x[m,k] of quantized activations a (the integer part of
// the kernel, before scales and bias).
func (l *QLinear) Accumulate(dst []int32, a *Activations) error {
	return l.accumulate(table(), dst, a)
}

func (l *QLinear) accumulate(t *kabi.Table, dst []int32, a *Activations) error {
	N := l.W.N
	if a.K != l.W.K || len(dst) < a.M*N {
		return fmt.Errorf("kernels: Accumulate: K %d vs %d, len(dst) = %d for %d×%d", a.K, l.W.K, len(dst), a.M, N)
	}
	gemm(t, l.W, a, func(tile, m0, rows int, acc []int32, off int32, _ *workspace) {
		n0 := tile * qformat.TileN
		nn := min(qformat.TileN, N-n0)
		for r := 0; r < rows; r++ {
			s := a.Sum[m0+r]
			for j := 0; j < nn; j++ {
				dst[(m0+r)*N+n0+j] = acc[r*qformat.TileN+j] - (l.W.Zero[n0+j]-off)*s
			}
		}
	})
	return nil
}
