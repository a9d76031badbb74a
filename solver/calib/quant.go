package calib

import (
	"fmt"
	"sync"

	"github.com/flbq/flbq/runtime/kernels"
	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/qformat"
)

// GroupBits gives the output channels [Lo, Hi) of a layer one bit-width.
type GroupBits struct {
	Lo, Hi, Bits int
}

// quantized is one layer's weights quantized per output channel at one
// bit-width: q (Out×In), scale and zero per channel.
type quantized struct {
	q     []uint8
	scale []float32
	zero  []int32
}

// Quantizer quantizes layers' weights per output channel with one scale
// rule (qformat.MinMax or qformat.MSE, the same functions gen uses to pack
// the shipped weights) and builds fake-quant LinearOps from them. It caches
// every (layer, bits) quantization it computed; Drop releases a layer. It
// is safe for concurrent use.
type Quantizer struct {
	Rule qformat.Rule

	mu    sync.Mutex
	cache map[qkey]*qentry
}

type qkey struct {
	l    *nn.Linear
	bits int
}

type qentry struct {
	once sync.Once
	q    *quantized
	err  error
}

// NewQuantizer returns a Quantizer with the given scale rule.
func NewQuantizer(rule qformat.Rule) *Quantizer {
	return &Quantizer{Rule: rule, cache: map[qkey]*qentry{}}
}

// layer returns l quantized at b bits (all channels), computing it once.
func (z *Quantizer) layer(l *nn.Linear, b int) (*quantized, error) {
	if b < qformat.MinBits || b > qformat.MaxBits {
		return nil, fmt.Errorf("%s: bit-width %d out of range [1, 8]", l.Name, b)
	}
	z.mu.Lock()
	e := z.cache[qkey{l, b}]
	if e == nil {
		e = &qentry{}
		z.cache[qkey{l, b}] = e
	}
	z.mu.Unlock()
	e.once.Do(func() { e.q, e.err = quantizeLayer(l, b, z.Rule) })
	return e.q, e.err
}

// Drop forgets the cached quantizations of l.
func (z *Quantizer) Drop(l *nn.Linear) {
	z.mu.Lock()
	for k := range z.cache {
		if k.l == l {
			delete(z.cache, k)
		}
	}
	z.mu.Unlock()
}

func quantizeLayer(l *nn.Linear, b int, rule qformat.Rule) (*quantized, error) {
	if err := l.Check(); err != nil {
		return nil, err
	}
	K := l.In
	r := &quantized{q: make([]uint8, l.Out*K), scale: make([]float32, l.Out), zero: make([]int32, l.Out)}
	var mu sync.Mutex
	var first error
	nn.ParallelFor(l.Out, 4, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			s, zp, err := qformat.QuantizeChannel(r.q[c*K:(c+1)*K], l.Weight[c*K:(c+1)*K], b, rule)
			if err != nil {
				mu.Lock()
				if first == nil {
					first = fmt.Errorf("%s: output channel %d: %w", l.Name, c, err)
				}
				mu.Unlock()
				return
			}
			r.scale[c], r.zero[c] = s, zp
		}
	})
	return r, first
}

// Dequantized returns the weights of channels [lo, hi) of l quantized at b
// bits and dequantized again, scale·(q − zero), exactly as
// qformat.Matrix.Dequantize computes them ((hi−lo)×In, row-major).
func (z *Quantizer) Dequantized(l *nn.Linear, lo, hi, b int) ([]float32, error) {
	qz, err := z.layer(l, b)
	if err != nil {
		return nil, err
	}
	K := l.In
	w := make([]float32, (hi-lo)*K)
	for c := lo; c < hi; c++ {
		s, zp := qz.scale[c], qz.zero[c]
		for k, q := range qz.q[c*K : (c+1)*K] {
			w[(c-lo)*K+k] = s * float32(int32(q)-zp)
		}
	}
	return w, nil
}

// run is one contiguous range of quantized output channels with its kernel.
type run struct {
	lo, hi int
	q      *kernels.QLinear
}

// LayerOp is the fake-quant implementation of one linear layer: the output
// channels in its groups are computed by the shipped int8 kernel
// (runtime/kernels.QLinear: activations quantized per row to int8 with
// kernels' quantizer, weights quantized per output channel at the group's
// bit-width, exact int32 accumulation), the other channels in fp32 on the
// unquantized input. It implements nn.LinearOp and is safe for concurrent
// use; pass it in nn.Overrides so the model itself is never modified.
type LayerOp struct {
	Layer *nn.Linear
	runs  []run
	full  bool
}

// Op builds the fake-quant op of layer l with the given channel groups
// quantized (groups must not overlap; a group boundary inside the layer
// must be a multiple of the kernel tile, qformat.TileN, unless it is the
// layer's last channel).
func (z *Quantizer) Op(l *nn.Linear, groups []GroupBits) (*LayerOp, error) {
	gs := append([]GroupBits(nil), groups...)
	sortGroups(gs)
	for i := 1; i < len(gs); i++ {
		if gs[i].Lo < gs[i-1].Hi {
			return nil, fmt.Errorf("%s: channel groups [%d, %d) and [%d, %d) overlap", l.Name, gs[i-1].Lo, gs[i-1].Hi, gs[i].Lo, gs[i].Hi)
		}
	}
	op := &LayerOp{Layer: l}
	for i := 0; i < len(gs); {
		// Extend a run over adjacent groups.
		j := i
		for j+1 < len(gs) && gs[j+1].Lo == gs[j].Hi {
			j++
		}
		r, err := z.buildRun(l, gs[i:j+1])
		if err != nil {
			return nil, err
		}
		op.runs = append(op.runs, r)
		i = j + 1
	}
	op.full = len(op.runs) == 1 && op.runs[0].lo == 0 && op.runs[0].hi == l.Out
	return op, nil
}

func sortGroups(gs []GroupBits) {
	for i := 1; i < len(gs); i++ {
		for j := i; j > 0 && gs[j].Lo < gs[j-1].Lo; j-- {
			gs[j], gs[j-1] = gs[j-1], gs[j]
		}
	}
}

func (z *Quantizer) buildRun(l *nn.Linear, gs []GroupBits) (run, error) {
	lo, hi := gs[0].Lo, gs[len(gs)-1].Hi
	K := l.In
	n := hi - lo
	q := make([]uint8, n*K)
	scale := make([]float32, n)
	zero := make([]int32, n)
	tileBits := make([]uint8, qformat.PaddedN(n)/qformat.TileN)
	for i, g := range gs {
		if g.Lo < 0 || g.Hi > l.Out || g.Lo >= g.Hi {
			return run{}, fmt.Errorf("%s: channel group [%d, %d) outside [0, %d)", l.Name, g.Lo, g.Hi, l.Out)
		}
		if i > 0 && g.Lo < gs[i-1].Hi {
			return run{}, fmt.Errorf("%s: channel groups [%d, %d) and [%d, %d) overlap", l.Name, gs[i-1].Lo, gs[i-1].Hi, g.Lo, g.Hi)
		}
		if g.Lo%qformat.TileN != 0 || (g.Hi%qformat.TileN != 0 && g.Hi != l.Out) {
			return run{}, fmt.Errorf("%s: channel group [%d, %d) is not aligned to the kernel tile of %d channels", l.Name, g.Lo, g.Hi, qformat.TileN)
		}
		qz, err := z.layer(l, g.Bits)
		if err != nil {
			return run{}, err
		}
		copy(q[(g.Lo-lo)*K:(g.Hi-lo)*K], qz.q[g.Lo*K:g.Hi*K])
		copy(scale[g.Lo-lo:], qz.scale[g.Lo:g.Hi])
		copy(zero[g.Lo-lo:], qz.zero[g.Lo:g.Hi])
		for t := (g.Lo - lo) / qformat.TileN; t*qformat.TileN < g.Hi-lo; t++ {
			tileBits[t] = uint8(g.Bits)
		}
	}
	m, err := qformat.Pack(q, n, K, tileBits, scale, zero)
	if err != nil {
		return run{}, fmt.Errorf("%s: %w", l.Name, err)
	}
	var bias []float32
	if l.Bias != nil {
		bias = l.Bias[lo:hi]
	}
	ql, err := kernels.NewQLinear(m, bias)
	if err != nil {
		return run{}, fmt.Errorf("%s: %w", l.Name, err)
	}
	return run{lo: lo, hi: hi, q: ql}, nil
}

// Forward implements nn.LinearOp.
func (o *LayerOp) Forward(dst, x []float32, M int) {
	if o.full {
		if err := o.runs[0].q.Forward(dst, x, M); err != nil {
			panic(err)
		}
		return
	}
	l := o.Layer
	l.ForwardFP32(dst, x, M)
	for _, r := range o.runs {
		n := r.hi - r.lo
		buf := nn.GetScratch(M * n)
		if err := r.q.Forward(*buf, x, M); err != nil {
			panic(err)
		}
		for m := 0; m < M; m++ {
			copy(dst[m*l.Out+r.lo:m*l.Out+r.hi], (*buf)[m*n:(m+1)*n])
		}
		nn.PutScratch(buf)
	}
}

// SimulatedOp is the reference twin of LayerOp in plain float32: the
// group's weights quantized and dequantized (Dequantized), the input rows
// replaced by kernels.FakeQuantize, and an fp32 product. It equals LayerOp
// up to float32 rounding of the product (tested), and serves layers the
// int8 kernel cannot take (K > qformat.MaxK).
func (z *Quantizer) SimulatedOp(l *nn.Linear, groups []GroupBits) (nn.LinearOp, error) {
	type sim struct {
		lo, hi int
		w      []float32
	}
	var sims []sim
	for _, g := range groups {
		w, err := z.Dequantized(l, g.Lo, g.Hi, g.Bits)
		if err != nil {
			return nil, err
		}
		sims = append(sims, sim{g.Lo, g.Hi, w})
	}
	return nn.LinearFunc(func(dst, x []float32, M int) {
		l.ForwardFP32(dst, x, M)
		xq := make([]float32, M*l.In)
		if err := kernels.FakeQuantize(xq, x, M, l.In); err != nil {
			panic(err)
		}
		for _, s := range sims {
			for m := 0; m < M; m++ {
				xr := xq[m*l.In : (m+1)*l.In]
				for c := s.lo; c < s.hi; c++ {
					wr := s.w[(c-s.lo)*l.In : (c-s.lo+1)*l.In]
					var acc float32
					for k, v := range xr {
						acc += v * wr[k]
					}
					if l.Bias != nil {
						acc += l.Bias[c]
					}
					dst[m*l.Out+c] = acc
				}
			}
		}
	}), nil
}
