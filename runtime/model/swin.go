package model

import (
	"fmt"
	"math"

	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/tensor"
)

// Swin is torchvision's SwinTransformer.features used as a detection
// backbone: blocks are the patch embedding (features.0), every
// SwinTransformerBlock (features.{1,3,5,7}.j) and every PatchMerging
// (features.{2,4,6}); the four stage outputs are taken after features.1,
// .3, .5 and .7, optionally through out_norms.{i} (mmdetection style), and
// returned as NCHW maps.
type Swin struct {
	Prefix      string // "backbone.body"
	Channels    []int  // output channels per stage
	blocks      []Block
	taps        map[int]int // block index → output index
	outNorms    []*LayerNorm
	numOutputs  int
	quantLayers []LayerRef
}

const swinEps = 1e-5

// LoadSwin builds the Swin backbone from weights under prefix (e.g.
// "backbone.body"); out_norms are read from normPrefix (e.g.
// "backbone.out_norms") when cfg.OutNorms is set.
func LoadSwin(w *Weights, cfg *Config, prefix, normPrefix string) (*Swin, error) {
	l := &loader{w: w}
	ph, pw, _ := cfg.PatchSize.pair()
	wh, ww, _ := cfg.WindowSize.pair()
	s := &Swin{Prefix: prefix, taps: map[int]int{}}
	ed := cfg.EmbedDim
	// features.0: Conv2d(3, ed, patch, stride=patch), Permute, LayerNorm.
	pe := &patchEmbed{
		name: prefix + ".0",
		ph:   ph, pw: pw,
		proj: nn.NewLinear(prefix+".0.0", 3*ph*pw, ed, l.f(prefix+".0.0.weight", ed, 3, ph, pw), l.f(prefix+".0.0.bias", ed)),
		norm: loadLN(l, prefix+".0.2", ed, swinEps),
	}
	s.blocks = append(s.blocks, Block{Name: pe.name, Forward: pe.forward})
	feat := 1
	for st, depth := range cfg.Depths {
		dim := ed << st
		heads := cfg.NumHeads[st]
		for j := 0; j < depth; j++ {
			name := fmt.Sprintf("%s.%d.%d", prefix, feat, j)
			b := &swinBlock{name: name, dim: dim, heads: heads, wh: wh, ww: ww}
			if j%2 == 1 {
				b.sh, b.sw = wh/2, ww/2
			}
			b.shiftSingleWindow = cfg.ShiftSingleWindow
			hidden := int(float64(dim) * cfg.MLPRatio)
			b.norm1 = loadLN(l, name+".norm1", dim, swinEps)
			b.qkv = loadLinear(l, name+".attn.qkv", dim, 3*dim, true)
			b.proj = loadLinear(l, name+".attn.proj", dim, dim, true)
			b.norm2 = loadLN(l, name+".norm2", dim, swinEps)
			b.fc1 = loadLinear(l, name+".mlp.0", dim, hidden, true)
			b.fc2 = loadLinear(l, name+".mlp.3", hidden, dim, true)
			T := wh * ww
			table := l.f(name+".attn.relative_position_bias_table", (2*wh-1)*(2*ww-1), heads)
			index := l.i(name+".attn.relative_position_index", T*T)
			if l.err == nil {
				b.bias = make([]float32, heads*T*T)
				for i, ix := range index {
					if ix < 0 || int(ix) >= (2*wh-1)*(2*ww-1) {
						return nil, fmt.Errorf("tensor %q: index %d out of range", name+".attn.relative_position_index", ix)
					}
					for h := 0; h < heads; h++ {
						b.bias[h*T*T+i] = table[int(ix)*heads+h]
					}
				}
			}
			s.blocks = append(s.blocks, Block{Name: name, Forward: b.forward, Linears: []*nn.Linear{b.qkv, b.proj, b.fc1, b.fc2},
				Attention: &Attention{QKV: b.qkv, Proj: b.proj, Heads: heads, Attend: b.attend}})
		}
		if depth == 0 {
			// An empty stage still yields an output (identity).
			s.blocks = append(s.blocks, Block{Name: fmt.Sprintf("%s.%d", prefix, feat), Forward: func(x *tensor.Tensor, _ nn.Overrides) *tensor.Tensor { return x }})
		}
		s.taps[len(s.blocks)-1] = st
		s.Channels = append(s.Channels, dim)
		feat++
		if st < len(cfg.Depths)-1 {
			name := fmt.Sprintf("%s.%d", prefix, feat)
			pm := &patchMerging{name: name, dim: dim,
				norm:      loadLN(l, name+".norm", 4*dim, swinEps),
				reduction: loadLinear(l, name+".reduction", 4*dim, 2*dim, false)}
			s.blocks = append(s.blocks, Block{Name: name, Forward: pm.forward, Linears: []*nn.Linear{pm.reduction}})
			feat++
		}
	}
	s.numOutputs = len(cfg.Depths)
	if cfg.OutNorms {
		for i, c := range s.Channels {
			s.outNorms = append(s.outNorms, loadLN(l, fmt.Sprintf("%s.%d", normPrefix, i), c, swinEps))
		}
	}
	if l.err != nil {
		return nil, l.err
	}
	s.quantLayers = quantLayers(s.blocks)
	return s, nil
}

// Blocks implements Backbone.
func (s *Swin) Blocks() []Block { return s.blocks }

// NumOutputs implements Backbone.
func (s *Swin) NumOutputs() int { return s.numOutputs }

// QuantLayers implements Backbone.
func (s *Swin) QuantLayers() []LayerRef { return s.quantLayers }

// Forward implements Backbone.
func (s *Swin) Forward(img *tensor.Tensor, ov nn.Overrides) []*tensor.Tensor {
	return s.ForwardFrom(0, img, nil, ov, nil)
}

// ForwardFrom implements Backbone.
func (s *Swin) ForwardFrom(start int, x *tensor.Tensor, prior []*tensor.Tensor, ov nn.Overrides, inputs []*tensor.Tensor) []*tensor.Tensor {
	outs := make([]*tensor.Tensor, s.numOutputs)
	for i, k := range s.taps {
		if i < start && prior != nil {
			outs[k] = prior[k]
		}
	}
	for i := start; i < len(s.blocks); i++ {
		if inputs != nil {
			inputs[i] = x
		}
		x = s.blocks[i].Forward(x, ov)
		if k, ok := s.taps[i]; ok {
			y := x
			if s.outNorms != nil {
				y = tensor.New(x.Shape...)
				s.outNorms[k].Forward(y.Data, x.Data)
			}
			outs[k] = tensor.NHWCToNCHW(y)
		}
	}
	return outs
}

type patchEmbed struct {
	name   string
	ph, pw int
	proj   *nn.Linear // conv weight viewed as [out, 3·ph·pw]
	norm   *LayerNorm
}

// forward: NCHW image → NHWC tokens (conv with kernel = stride = patch, then LayerNorm).
func (p *patchEmbed) forward(img *tensor.Tensor, _ nn.Overrides) *tensor.Tensor {
	n, c, h, w := img.Shape[0], img.Shape[1], img.Shape[2], img.Shape[3]
	oh, ow := h/p.ph, w/p.pw
	K := c * p.ph * p.pw
	if K != p.proj.In {
		panic(fmt.Sprintf("%s: input has %d channels, want %d", p.name, c, p.proj.In/(p.ph*p.pw)))
	}
	rows := nn.GetScratch(n * oh * ow * K)
	ps := *rows
	nn.ParallelFor(n*oh, 1, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			b, oy := r/oh, r%oh
			for ox := 0; ox < ow; ox++ {
				dst := ps[((b*oh+oy)*ow+ox)*K:]
				k := 0
				for ci := 0; ci < c; ci++ {
					plane := img.Data[(b*c+ci)*h*w:]
					for ky := 0; ky < p.ph; ky++ {
						copy(dst[k:k+p.pw], plane[(oy*p.ph+ky)*w+ox*p.pw:])
						k += p.pw
					}
				}
			}
		}
	})
	out := tensor.New(n, oh, ow, p.proj.Out)
	p.proj.ForwardFP32(out.Data, ps, n*oh*ow)
	nn.PutScratch(rows)
	if p.norm != nil {
		p.norm.Forward(out.Data, out.Data)
	}
	return out
}

type patchMerging struct {
	name      string
	dim       int
	norm      *LayerNorm
	reduction *nn.Linear
}

func (p *patchMerging) forward(x *tensor.Tensor, ov nn.Overrides) *tensor.Tensor {
	n, h, w, c := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	h2, w2 := (h+1)/2, (w+1)/2
	buf := nn.GetScratch(n * h2 * w2 * 4 * c)
	cat := *buf
	nn.ParallelFor(n*h2, 4, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			b, y := r/h2, r%h2
			for xx := 0; xx < w2; xx++ {
				dst := cat[((b*h2+y)*w2+xx)*4*c:]
				// x0 (2y,2x), x1 (2y+1,2x), x2 (2y,2x+1), x3 (2y+1,2x+1)
				for q, d := range [4][2]int{{0, 0}, {1, 0}, {0, 1}, {1, 1}} {
					sy, sx := 2*y+d[0], 2*xx+d[1]
					seg := dst[q*c : q*c+c]
					if sy < h && sx < w {
						copy(seg, x.Data[((b*h+sy)*w+sx)*c:])
					} else {
						clear(seg)
					}
				}
			}
		}
	})
	p.norm.Forward(cat, cat)
	out := tensor.New(n, h2, w2, 2*c)
	p.reduction.Run(ov, out.Data, cat, n*h2*w2)
	nn.PutScratch(buf)
	return out
}

type swinBlock struct {
	name                string
	dim, heads          int
	wh, ww, sh, sw      int
	shiftSingleWindow   bool
	norm1, norm2        *LayerNorm
	qkv, proj, fc1, fc2 *nn.Linear
	bias                []float32 // [heads, T, T]
}

// swinWindows is the window layout of one block run: the padded,
// cyclically shifted map split into nwh×nww windows of T tokens each.
type swinWindows struct {
	n, h, w, c     int
	wh, ww, hp, wp int
	sh, sw         int
	nwh, nww, nw   int
	T, M           int
}

func (b *swinBlock) windows(x *tensor.Tensor) swinWindows {
	g := swinWindows{n: x.Shape[0], h: x.Shape[1], w: x.Shape[2], c: x.Shape[3], wh: b.wh, ww: b.ww, sh: b.sh, sw: b.sw}
	g.hp = (g.h + g.wh - 1) / g.wh * g.wh
	g.wp = (g.w + g.ww - 1) / g.ww * g.ww
	// torchvision: no shift when the window covers the (padded) map;
	// mmdetection keeps it (shiftSingleWindow).
	if g.wh >= g.hp && !b.shiftSingleWindow {
		g.sh = 0
	}
	if g.ww >= g.wp && !b.shiftSingleWindow {
		g.sw = 0
	}
	g.nwh, g.nww = g.hp/g.wh, g.wp/g.ww
	g.nw = g.nwh * g.nww
	g.T = g.wh * g.ww
	g.M = g.n * g.nw * g.T
	return g
}

// sources is the window partition: src[t] (len M) receives the flat
// (image, y, x) map position of window token t, or -1 for padding.
func (g *swinWindows) sources(src []int32) {
	nn.ParallelFor(g.n*g.nw, 4, func(lo, hi int) {
		for wi := lo; wi < hi; wi++ {
			img, wy, wx := wi/g.nw, (wi%g.nw)/g.nww, wi%g.nww
			for iy := 0; iy < g.wh; iy++ {
				py := (wy*g.wh + iy + g.sh) % g.hp
				for ix := 0; ix < g.ww; ix++ {
					px := (wx*g.ww + ix + g.sw) % g.wp
					t := wi*g.T + iy*g.ww + ix
					src[t] = -1
					if py < g.h && px < g.w {
						src[t] = int32((img*g.h+py)*g.w + px)
					}
				}
			}
		}
	})
}

func (b *swinBlock) forward(x *tensor.Tensor, ov nn.Overrides) *tensor.Tensor {
	g := b.windows(x)
	c, M := g.c, g.M
	out := x.Clone()
	xnBuf := nn.GetScratch(g.n * g.h * g.w * c)
	xn := *xnBuf
	b.norm1.Forward(xn, x.Data)
	// Window partition of the padded, cyclically shifted map; src[t] is the
	// flat (image,y,x) position of window token t or -1 for padding.
	src := make([]int32, M)
	g.sources(src)
	winBuf := nn.GetScratch(M * c)
	win := *winBuf
	nn.ParallelFor(M, 64, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			dst := win[t*c : t*c+c]
			if p := int(src[t]); p >= 0 {
				copy(dst, xn[p*c:p*c+c])
			} else {
				clear(dst)
			}
		}
	})
	nn.PutScratch(xnBuf)
	qkvBuf := nn.GetScratch(M * 3 * c)
	qkv := *qkvBuf
	b.qkv.Run(ov, qkv, win, M)
	attn := win // reuse: the window tokens are no longer needed
	b.windowAttention(&g, qkv, attn)
	nn.PutScratch(qkvBuf)
	projBuf := nn.GetScratch(M * c)
	pr := *projBuf
	b.proj.Run(ov, pr, attn, M)
	nn.PutScratch(winBuf)
	o := out.Data
	for t, p := range src {
		if p >= 0 {
			nn.Add(o[int(p)*c:int(p)*c+c], pr[t*c:t*c+c])
		}
	}
	nn.PutScratch(projBuf)
	residualMLP(o, g.n*g.h*g.w, c, b.norm2, b.fc1, b.fc2, ov)
	return out
}

// attend implements Attention.Attend: window attention of qkv ([M, 3C] in
// window token order) into out ([M, C]), padding rows zeroed.
func (b *swinBlock) attend(x *tensor.Tensor, qkv, out []float32) {
	g := b.windows(x)
	b.windowAttention(&g, qkv, out)
	src := make([]int32, g.M)
	g.sources(src)
	for t, p := range src {
		if p < 0 {
			clear(out[t*g.c : t*g.c+g.c])
		}
	}
}

// windowAttention computes softmax(q·kᵀ/√dh + bias + shift mask)·v per
// window and head from qkv [M, 3C] into out [M, C].
func (b *swinBlock) windowAttention(g *swinWindows, qkv, out []float32) {
	c, T, wh, ww := g.c, g.T, g.wh, g.ww
	dh := c / b.heads
	scale := float32(math.Pow(float64(dh), -0.5))
	shifted := g.sh > 0 || g.sw > 0
	nn.ParallelFor(g.n*g.nw, 1, func(lo, hi int) {
		sb := nn.GetScratch(2*T*T + T*dh + T)
		S := (*sb)[:T*T]
		mask := (*sb)[T*T : 2*T*T]
		qs := (*sb)[2*T*T : 2*T*T+T*dh]
		lab := (*sb)[2*T*T+T*dh:]
		for wi := lo; wi < hi; wi++ {
			base := wi * T * 3 * c
			// The shift mask (-100 between tokens of different regions) is
			// the same for every head; only windows on the wrapped border
			// hold more than one region.
			masked := false
			if shifted {
				wy, wx := (wi%g.nw)/g.nww, wi%g.nww
				for iy := 0; iy < wh; iy++ {
					ry := region(wy*wh+iy, g.hp, wh, g.sh)
					for ix := 0; ix < ww; ix++ {
						lab[iy*ww+ix] = float32(ry*3 + region(wx*ww+ix, g.wp, ww, g.sw))
						masked = masked || lab[iy*ww+ix] != lab[0]
					}
				}
			}
			if masked {
				for i := 0; i < T; i++ {
					for j := 0; j < T; j++ {
						mask[i*T+j] = 0
						if lab[j] != lab[i] {
							mask[i*T+j] = -100
						}
					}
				}
			}
			for hd := 0; hd < b.heads; hd++ {
				for t := 0; t < T; t++ {
					q := qkv[base+t*3*c+hd*dh : base+t*3*c+hd*dh+dh]
					d := qs[t*dh : t*dh+dh]
					for i, v := range q {
						d[i] = v * scale
					}
				}
				nn.MatMul(true, T, T, dh, qs, dh, qkv[base+c+hd*dh:], 3*c, S, T, false)
				nn.Add(S, b.bias[hd*T*T:(hd+1)*T*T])
				if masked {
					nn.Add(S, mask)
				}
				for i := 0; i < T; i++ {
					nn.SoftmaxRow(S[i*T : i*T+T])
				}
				nn.MatMul(false, T, dh, T, S, T, qkv[base+2*c+hd*dh:], 3*c, out[wi*T*c+hd*dh:], c, false)
			}
		}
		nn.PutScratch(sb)
	})
}

// region is the shifted-window mask label along one axis for rolled
// coordinate r (torchvision's slices (0,-ws), (-ws,-shift), (-shift,None)).
func region(r, size, ws, shift int) int {
	switch {
	case shift == 0:
		return 0
	case r < size-ws:
		return 0
	case r < size-shift:
		return 1
	}
	return 2
}
