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
			s.blocks = append(s.blocks, Block{Name: name, Forward: b.forward, Linears: []*nn.Linear{b.qkv, b.proj, b.fc1, b.fc2}})
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
	norm1, norm2        *LayerNorm
	qkv, proj, fc1, fc2 *nn.Linear
	bias                []float32 // [heads, T, T]
}

func (b *swinBlock) forward(x *tensor.Tensor, ov nn.Overrides) *tensor.Tensor {
	n, h, w, c := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	out := x.Clone()
	wh, ww := b.wh, b.ww
	hp := (h + wh - 1) / wh * wh
	wp := (w + ww - 1) / ww * ww
	sh, sw := b.sh, b.sw
	// torchvision: no shift when the window covers the (padded) map.
	if wh >= hp {
		sh = 0
	}
	if ww >= wp {
		sw = 0
	}
	nwh, nww := hp/wh, wp/ww
	nw := nwh * nww
	T := wh * ww
	M := n * nw * T

	xnBuf := nn.GetScratch(n * h * w * c)
	xn := *xnBuf
	b.norm1.Forward(xn, x.Data)
	// Window partition of the padded, cyclically shifted map; src[t] is the
	// flat (image,y,x) position of window token t or -1 for padding.
	src := make([]int32, M)
	winBuf := nn.GetScratch(M * c)
	win := *winBuf
	nn.ParallelFor(n*nw, 4, func(lo, hi int) {
		for wi := lo; wi < hi; wi++ {
			img, wy, wx := wi/nw, (wi%nw)/nww, wi%nww
			for iy := 0; iy < wh; iy++ {
				py := (wy*wh + iy + sh) % hp
				for ix := 0; ix < ww; ix++ {
					px := (wx*ww + ix + sw) % wp
					t := wi*T + iy*ww + ix
					dst := win[t*c : t*c+c]
					if py < h && px < w {
						p := (img*h+py)*w + px
						src[t] = int32(p)
						copy(dst, xn[p*c:p*c+c])
					} else {
						src[t] = -1
						clear(dst)
					}
				}
			}
		}
	})
	nn.PutScratch(xnBuf)
	qkvBuf := nn.GetScratch(M * 3 * c)
	qkv := *qkvBuf
	b.qkv.Run(ov, qkv, win, M)
	attnBuf := win // reuse: the window tokens are no longer needed
	dh := c / b.heads
	scale := float32(math.Pow(float64(dh), -0.5))
	shifted := sh > 0 || sw > 0
	nn.ParallelFor(n*nw, 1, func(lo, hi int) {
		sb := nn.GetScratch(T*T + T*dh + T)
		S := (*sb)[:T*T]
		qs := (*sb)[T*T : T*T+T*dh]
		lab := (*sb)[T*T+T*dh:]
		for wi := lo; wi < hi; wi++ {
			base := wi * T * 3 * c
			if shifted {
				wy, wx := (wi%nw)/nww, wi%nww
				for iy := 0; iy < wh; iy++ {
					ry := region(wy*wh+iy, hp, wh, sh)
					for ix := 0; ix < ww; ix++ {
						lab[iy*ww+ix] = float32(ry*3 + region(wx*ww+ix, wp, ww, sw))
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
				if shifted {
					for i := 0; i < T; i++ {
						row := S[i*T : i*T+T]
						li := lab[i]
						for j := range row {
							if lab[j] != li {
								row[j] += -100
							}
						}
					}
				}
				for i := 0; i < T; i++ {
					nn.SoftmaxRow(S[i*T : i*T+T])
				}
				nn.MatMul(false, T, dh, T, S, T, qkv[base+2*c+hd*dh:], 3*c, attnBuf[wi*T*c+hd*dh:], c, false)
			}
		}
		nn.PutScratch(sb)
	})
	nn.PutScratch(qkvBuf)
	projBuf := nn.GetScratch(M * c)
	pr := *projBuf
	b.proj.Run(ov, pr, attnBuf, M)
	nn.PutScratch(winBuf)
	o := out.Data
	for t, p := range src {
		if p >= 0 {
			nn.Add(o[int(p)*c:int(p)*c+c], pr[t*c:t*c+c])
		}
	}
	nn.PutScratch(projBuf)
	residualMLP(o, n*h*w, c, b.norm2, b.fc1, b.fc2, ov)
	return out
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
