package model

import (
	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/tensor"
)

// LayerNorm holds torch.nn.LayerNorm parameters.
type LayerNorm struct {
	Name         string
	Weight, Bias []float32
	Eps          float32
}

func loadLN(l *loader, name string, dim int, eps float32) *LayerNorm {
	return &LayerNorm{Name: name, Weight: l.f(name+".weight", dim), Bias: l.f(name+".bias", dim), Eps: eps}
}

// Forward normalises rows of length len(Weight) of x into dst.
func (n *LayerNorm) Forward(dst, x []float32) {
	c := len(n.Weight)
	nn.LayerNorm(dst, x, len(x)/c, c, n.Weight, n.Bias, n.Eps)
}

// Forward2d normalises an NCHW tensor over channels (LayerNorm2d) in place.
func (n *LayerNorm) Forward2d(x *tensor.Tensor) {
	nn.LayerNorm2d(x.Data, x.Data, x.Shape[0], x.Shape[1], x.Shape[2]*x.Shape[3], n.Weight, n.Bias, n.Eps)
}

func loadLinear(l *loader, name string, in, out int, bias bool) *nn.Linear {
	lin := nn.NewLinear(name, in, out, l.f(name+".weight", out, in), nil)
	if bias {
		lin.Bias = l.f(name+".bias", out)
	}
	return lin
}

// LayerRef describes one quantizable linear layer.
type LayerRef struct {
	Name    string // state_dict prefix (".weight"/".bias" appended, or "_weight"/"_bias" for ViT's in_proj)
	In, Out int
	Layer   *nn.Linear
}

// Block is one unit of a backbone's sequential forward pass. Calibration
// caches every block's input and re-runs the backbone from the block that
// holds the quantized layer onward (Backbone.ForwardFrom).
type Block struct {
	Name    string
	Linears []*nn.Linear // quantizable layers inside this block
	// Forward maps the block input to its output (token maps are NHWC
	// [N,H,W,C]; block 0 takes the NCHW image batch).
	Forward func(x *tensor.Tensor, ov nn.Overrides) *tensor.Tensor
	// Attention is the block's multi-head self-attention, nil if it has none.
	Attention *Attention
}

// Attention exposes a block's multi-head self-attention to calibration,
// which measures how the error of each head's q, k and v channels reaches
// the output projection.
type Attention struct {
	QKV   *nn.Linear // fused input projection: [3C, C], rows q, k, v; head h owns channels h·C/Heads.. of each
	Proj  *nn.Linear // output projection [C, C]; head h owns its input columns h·C/Heads..
	Heads int
	// Attend recomputes the attention output (Proj's input, [M, C]) from a
	// q/k/v buffer laid out as QKV's output when the block runs on x
	// ([M, 3C], rows in the block's token order). Rows that are not image
	// tokens (window padding) are zero.
	Attend func(x *tensor.Tensor, qkv, out []float32)
}

// Backbone is the interface Swin and ViTDet backbones share.
type Backbone interface {
	// Blocks lists the forward units in order.
	Blocks() []Block
	// NumOutputs is the number of feature maps Forward returns.
	NumOutputs() int
	// Forward runs the backbone on an NCHW image batch and returns its
	// output feature maps (NCHW), "backbone.0", "backbone.1", ...
	Forward(img *tensor.Tensor, ov nn.Overrides) []*tensor.Tensor
	// ForwardFrom runs blocks start.. on x, the input of block start, and
	// returns all outputs; outputs produced before block start are taken
	// from prior (the outputs of an earlier full run). If inputs is not nil,
	// inputs[i] receives the input of block i for i >= start, set before
	// block i runs (calibration overrides read it).
	ForwardFrom(start int, x *tensor.Tensor, prior []*tensor.Tensor, ov nn.Overrides, inputs []*tensor.Tensor) []*tensor.Tensor
	// QuantLayers lists the quantizable linear layers in forward order.
	QuantLayers() []LayerRef
}

func quantLayers(blocks []Block) []LayerRef {
	var out []LayerRef
	for _, b := range blocks {
		for _, l := range b.Linears {
			out = append(out, LayerRef{Name: l.Name, In: l.In, Out: l.Out, Layer: l})
		}
	}
	return out
}

// mlp runs x + fc2(GELU(fc1(LN(x)))) on M rows in place, in row chunks
// to keep the hidden activations in cache.
func residualMLP(x []float32, M, C int, ln *LayerNorm, fc1, fc2 *nn.Linear, ov nn.Overrides) {
	hidden := fc1.Out
	chunk := 2048
	if chunk > M {
		chunk = M
	}
	xn := nn.GetScratch(chunk * C)
	h := nn.GetScratch(chunk * hidden)
	o := nn.GetScratch(chunk * C)
	for r0 := 0; r0 < M; r0 += chunk {
		m := M - r0
		if m > chunk {
			m = chunk
		}
		xs := x[r0*C : (r0+m)*C]
		ln.Forward((*xn)[:m*C], xs)
		fc1.Run(ov, (*h)[:m*hidden], (*xn)[:m*C], m)
		nn.GELU((*h)[:m*hidden])
		fc2.Run(ov, (*o)[:m*C], (*h)[:m*hidden], m)
		nn.Add(xs, (*o)[:m*C])
	}
	nn.PutScratch(xn)
	nn.PutScratch(h)
	nn.PutScratch(o)
}
