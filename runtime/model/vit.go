package model

import (
	"fmt"
	"math"

	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/tensor"
)

const vitEps = 1e-6

// encoderBlock is torchvision's EncoderBlock: x + MHA(ln_1(x)), then
// x + MLP(ln_2(x)); in_proj packs q, k and v as one [3D, D] linear.
type encoderBlock struct {
	name            string
	dim, heads      int
	ln1, ln2        *LayerNorm
	inProj, outProj *nn.Linear
	fc1, fc2        *nn.Linear
}

func loadEncoderBlock(l *loader, name string, dim, heads, mlpDim int) *encoderBlock {
	b := &encoderBlock{name: name, dim: dim, heads: heads}
	b.ln1 = loadLN(l, name+".ln_1", dim, vitEps)
	sa := name + ".self_attention"
	// nn.MultiheadAttention stores in_proj_weight/in_proj_bias; the Linear is named "<...>.self_attention.in_proj".
	b.inProj = nn.NewLinear(sa+".in_proj", dim, 3*dim, l.f(sa+".in_proj_weight", 3*dim, dim), l.f(sa+".in_proj_bias", 3*dim))
	b.outProj = loadLinear(l, sa+".out_proj", dim, dim, true)
	b.ln2 = loadLN(l, name+".ln_2", dim, vitEps)
	b.fc1 = loadLinear(l, name+".mlp.0", dim, mlpDim, true)
	b.fc2 = loadLinear(l, name+".mlp.3", mlpDim, dim, true)
	return b
}

func (b *encoderBlock) block() Block {
	return Block{Name: b.name, Forward: b.forward, Linears: []*nn.Linear{b.inProj, b.outProj, b.fc1, b.fc2},
		Attention: &Attention{QKV: b.inProj, Proj: b.outProj, Heads: b.heads, Attend: b.attend}}
}

// attend implements Attention.Attend: global attention over each image's
// tokens.
func (b *encoderBlock) attend(x *tensor.Tensor, qkv, out []float32) {
	n := x.Shape[0]
	globalAttention(out, qkv, n, x.Numel()/(n*b.dim), b.dim, b.heads)
}

// forward maps tokens [n, ..., D] (T tokens per image) to a new tensor.
func (b *encoderBlock) forward(x *tensor.Tensor, ov nn.Overrides) *tensor.Tensor {
	D := b.dim
	n := x.Shape[0]
	T := x.Numel() / (n * D)
	M := n * T
	out := x.Clone()
	xnBuf := nn.GetScratch(M * D)
	b.ln1.Forward(*xnBuf, x.Data)
	qkvBuf := nn.GetScratch(M * 3 * D)
	qkv := *qkvBuf
	b.inProj.Run(ov, qkv, *xnBuf, M)
	att := *xnBuf // reuse
	globalAttention(att, qkv, n, T, D, b.heads)
	prBuf := nn.GetScratch(M * D)
	b.outProj.Run(ov, *prBuf, att, M)
	for i, v := range (*prBuf)[:M*D] {
		out.Data[i] += v
	}
	nn.PutScratch(prBuf)
	nn.PutScratch(qkvBuf)
	nn.PutScratch(xnBuf)
	residualMLP(out.Data, M, D, b.ln2, b.fc1, b.fc2, ov)
	return out
}

// globalAttention computes softmax(q·kᵀ/√dh)·v per image and head from
// qkv [n·T, 3D] into out [n·T, D], in query chunks so that the score
// matrix never exceeds chunk×T.
func globalAttention(out, qkv []float32, n, T, D, heads int) {
	dh := D / heads
	scale := float32(1 / math.Sqrt(float64(dh)))
	kLen, vLen := nn.PackedLen(dh, T), nn.PackedLen(T, dh)
	packs := nn.GetScratch(n * heads * (kLen + vLen))
	pk := *packs
	nn.ParallelFor(n*heads, 1, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			img, h := t/heads, t%heads
			base := img * T * 3 * D
			dst := pk[t*(kLen+vLen):]
			nn.PackB(dst[:kLen], true, dh, T, qkv[base+D+h*dh:], 3*D)
			nn.PackB(dst[kLen:kLen+vLen], false, T, dh, qkv[base+2*D+h*dh:], 3*D)
		}
	})
	const chunk = 8 * nn.MR
	chunks := (T + chunk - 1) / chunk
	nn.ParallelFor(n*heads*chunks, 1, func(lo, hi int) {
		sb := nn.GetScratch(chunk*T + chunk*dh)
		S := (*sb)[:chunk*T]
		qs := (*sb)[chunk*T:]
		for t := lo; t < hi; t++ {
			ih, c := t/chunks, t%chunks
			img, h := ih/heads, ih%heads
			r0 := c * chunk
			rows := T - r0
			if rows > chunk {
				rows = chunk
			}
			base := img * T * 3 * D
			for r := 0; r < rows; r++ {
				q := qkv[base+(r0+r)*3*D+h*dh : base+(r0+r)*3*D+h*dh+dh]
				d := qs[r*dh : r*dh+dh]
				for i, v := range q {
					d[i] = v * scale
				}
			}
			kp := pk[ih*(kLen+vLen):]
			nn.MulPacked(rows, qs, dh, kp[:kLen], dh, T, S, T, false)
			for r := 0; r < rows; r++ {
				nn.SoftmaxRow(S[r*T : r*T+T])
			}
			nn.MulPacked(rows, S, T, kp[kLen:kLen+vLen], T, dh, out[(img*T+r0)*D+h*dh:], D, false)
		}
		nn.PutScratch(sb)
	})
	nn.PutScratch(packs)
}

// ViTDet is a plain-ViT detection backbone (ViTDet style) built from
// torchvision EncoderBlocks: patch_embed (conv, kernel = stride = patch),
// absolute pos_embed (bicubic-interpolated to the input's patch grid),
// blocks.{i}, norm. Its single output "backbone.0" is the normalised
// encoder map, NCHW at stride patch_size.
type ViTDet struct {
	Prefix   string
	Dim      int
	Patch    int
	grid     int // pos_embed grid (pretraining image_size / patch_size)
	posCls   bool
	posEmbed []float32 // [grid*grid, D] (class-token entry dropped)
	embed    *patchEmbed
	blocks   []Block
	norm     *LayerNorm
	quant    []LayerRef
}

// LoadViTDet reads the backbone under prefix (e.g. "backbone").
func LoadViTDet(w *Weights, cfg *Config, prefix string) (*ViTDet, error) {
	l := &loader{w: w}
	D, p := cfg.HiddenDim, cfg.PatchSize[0]
	v := &ViTDet{Prefix: prefix, Dim: D, Patch: p, grid: cfg.ImageSize / p, posCls: *cfg.PosEmbedClsToken}
	v.embed = &patchEmbed{name: prefix + ".patch_embed", ph: p, pw: p,
		proj: nn.NewLinear(prefix+".patch_embed", 3*p*p, D, l.f(prefix+".patch_embed.weight", D, 3, p, p), l.f(prefix+".patch_embed.bias", D))}
	tokens := v.grid * v.grid
	if v.posCls {
		tokens++
	}
	pe := l.f(prefix+".pos_embed", 1, tokens, D)
	if pe != nil && v.posCls {
		pe = pe[D:]
	}
	v.posEmbed = pe
	v.blocks = append(v.blocks, Block{Name: prefix + ".patch_embed", Forward: v.embedForward})
	for i := 0; i < cfg.NumLayers; i++ {
		b := loadEncoderBlock(l, fmt.Sprintf("%s.blocks.%d", prefix, i), D, cfg.NumHeads[0], cfg.MLPDim)
		v.blocks = append(v.blocks, b.block())
	}
	v.norm = loadLN(l, prefix+".norm", D, vitEps)
	if l.err != nil {
		return nil, l.err
	}
	v.quant = quantLayers(v.blocks)
	return v, nil
}

func (v *ViTDet) embedForward(img *tensor.Tensor, ov nn.Overrides) *tensor.Tensor {
	x := v.embed.forward(img, ov) // [N, gh, gw, D]
	addAbsPos(x, v.posEmbed, v.grid)
	return x
}

// addAbsPos adds a grid×grid position embedding ([grid·grid, D]) to the
// NHWC token map x, bicubic-interpolated (align_corners False) to x's grid
// when it differs (ViTDet's get_abs_pos).
func addAbsPos(x *tensor.Tensor, pos []float32, grid int) {
	n, gh, gw, D := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	if gh != grid || gw != grid {
		// [G*G, D] → [D, G, G] → bicubic → [gh*gw, D]
		chw := tensor.NHWCToNCHW(tensor.From(pos, 1, grid, grid, D))
		r := nn.ResizeBicubic(chw.Data, D, grid, grid, gh, gw)
		pos = tensor.NCHWToNHWC(tensor.From(r, 1, D, gh, gw)).Data
	}
	for b := 0; b < n; b++ {
		d := x.Data[b*gh*gw*D : (b+1)*gh*gw*D]
		for i := range d {
			d[i] += pos[i]
		}
	}
}

// Blocks implements Backbone.
func (v *ViTDet) Blocks() []Block { return v.blocks }

// NumOutputs implements Backbone.
func (v *ViTDet) NumOutputs() int { return 1 }

// QuantLayers implements Backbone.
func (v *ViTDet) QuantLayers() []LayerRef { return v.quant }

// Forward implements Backbone.
func (v *ViTDet) Forward(img *tensor.Tensor, ov nn.Overrides) []*tensor.Tensor {
	return v.ForwardFrom(0, img, nil, ov, nil)
}

// ForwardFrom implements Backbone.
func (v *ViTDet) ForwardFrom(start int, x *tensor.Tensor, prior []*tensor.Tensor, ov nn.Overrides, inputs []*tensor.Tensor) []*tensor.Tensor {
	for i := start; i < len(v.blocks); i++ {
		if inputs != nil {
			inputs[i] = x
		}
		x = v.blocks[i].Forward(x, ov)
	}
	y := tensor.New(x.Shape...)
	v.norm.Forward(y.Data, x.Data)
	return []*tensor.Tensor{tensor.NHWCToNCHW(y)}
}

// ViTClassifier is torchvision's VisionTransformer image classifier.
type ViTClassifier struct {
	Dim, Patch, ImageSize int
	NumClasses            int
	embed                 *patchEmbed
	classToken, pos       []float32
	blocks                []Block
	ln                    *LayerNorm
	preLogits, head       *nn.Linear
	quant                 []LayerRef
}

// LoadViTClassifier reads conv_proj, class_token, encoder.* and heads.*.
func LoadViTClassifier(w *Weights, cfg *Config) (*ViTClassifier, error) {
	l := &loader{w: w}
	D, p := cfg.HiddenDim, cfg.PatchSize[0]
	c := &ViTClassifier{Dim: D, Patch: p, ImageSize: cfg.ImageSize, NumClasses: cfg.NumClasses}
	c.embed = &patchEmbed{name: "conv_proj", ph: p, pw: p,
		proj: nn.NewLinear("conv_proj", 3*p*p, D, l.f("conv_proj.weight", D, 3, p, p), l.f("conv_proj.bias", D))}
	g := cfg.ImageSize / p
	c.classToken = l.f("class_token", 1, 1, D)
	c.pos = l.f("encoder.pos_embedding", 1, 1+g*g, D)
	c.blocks = append(c.blocks, Block{Name: "conv_proj", Forward: c.embedForward})
	for i := 0; i < cfg.NumLayers; i++ {
		b := loadEncoderBlock(l, fmt.Sprintf("encoder.layers.encoder_layer_%d", i), D, cfg.NumHeads[0], cfg.MLPDim)
		c.blocks = append(c.blocks, b.block())
	}
	c.ln = loadLN(l, "encoder.ln", D, vitEps)
	in := D
	if cfg.RepresentationSize > 0 {
		c.preLogits = loadLinear(l, "heads.pre_logits", D, cfg.RepresentationSize, true)
		in = cfg.RepresentationSize
	}
	c.head = loadLinear(l, "heads.head", in, cfg.NumClasses, true)
	if l.err != nil {
		return nil, l.err
	}
	c.quant = quantLayers(c.blocks)
	return c, nil
}

func (c *ViTClassifier) embedForward(img *tensor.Tensor, ov nn.Overrides) *tensor.Tensor {
	if img.Shape[2] != c.ImageSize || img.Shape[3] != c.ImageSize {
		panic(fmt.Sprintf("vit classifier: input %dx%d, want %dx%d", img.Shape[2], img.Shape[3], c.ImageSize, c.ImageSize))
	}
	x := c.embed.forward(img, ov)
	n, D := x.Shape[0], c.Dim
	T := x.Shape[1]*x.Shape[2] + 1
	out := tensor.New(n, T, D)
	for b := 0; b < n; b++ {
		d := out.Data[b*T*D : (b+1)*T*D]
		copy(d[:D], c.classToken)
		copy(d[D:], x.Data[b*(T-1)*D:(b+1)*(T-1)*D])
		for i := range d {
			d[i] += c.pos[i]
		}
	}
	return out
}

// Blocks lists the forward units (conv_proj embedding, encoder layers).
func (c *ViTClassifier) Blocks() []Block { return c.blocks }

// QuantLayers lists the encoder's quantizable linears.
func (c *ViTClassifier) QuantLayers() []LayerRef { return c.quant }

// Forward returns logits [N, num_classes] for an NCHW batch of
// image_size×image_size inputs.
func (c *ViTClassifier) Forward(img *tensor.Tensor, ov nn.Overrides) *tensor.Tensor {
	x := img
	for _, b := range c.blocks {
		x = b.Forward(x, ov)
	}
	n, D := x.Shape[0], c.Dim
	T := x.Numel() / (n * D)
	cls := make([]float32, n*D)
	for b := 0; b < n; b++ {
		c.ln.Forward(cls[b*D:(b+1)*D], x.Data[b*T*D:b*T*D+D])
	}
	if c.preLogits != nil {
		h := make([]float32, n*c.preLogits.Out)
		c.preLogits.Forward(h, cls, n)
		for i, v := range h {
			h[i] = float32(math.Tanh(float64(v)))
		}
		cls = h
	}
	out := tensor.New(n, c.NumClasses)
	c.head.Forward(out.Data, cls, n)
	return out
}
