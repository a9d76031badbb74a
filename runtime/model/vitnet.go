package model

import (
	"fmt"
	"math"

	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/tensor"
)

// ViTNet is detectron2's ViTDet backbone network (detectron2/modeling/
// backbone/vit.py, class ViT): patch_embed.proj (conv, kernel = stride =
// patch), the absolute pos_embed interpolated to the token grid, and
// blocks whose attention is windowed (window_size, zero padding of the
// grid after norm1, no mask) or global, each with decomposed relative
// positions (rel_pos_h, rel_pos_w added through the unscaled q; tables of
// another length are linearly interpolated). No final norm. Names are
// detectron2's under prefix (e.g. "backbone.net").
type ViTNet struct {
	Prefix   string
	Dim      int
	Patch    int
	grid     int // pos_embed grid (pretraining size / patch)
	posCls   bool
	posEmbed []float32
	embed    *patchEmbed
	blocks   []Block
	quant    []LayerRef
}

// ViTNetConfig is the part of detectron2's ViT constructor ViTNet needs.
type ViTNetConfig struct {
	Patch, Dim, Depth, Heads, MLPDim int
	// PretrainGrid is pretrain_img_size / patch (pos_embed's grid);
	// PosCls: pos_embed has a class-token entry (pretrain_use_cls_token).
	PretrainGrid int
	PosCls       bool
	// Window is window_size; WindowBlocks lists the blocks that use it
	// (window_block_indexes); the others attend globally with rel-pos
	// tables of 2·RelGrid-1 rows (RelGrid = img_size / patch).
	Window       int
	WindowBlocks []int
	RelGrid      int
	RelPos       bool
	Eps          float32 // LayerNorm eps (1e-6)
}

// vitNetBlock is detectron2's vit.Block.
type vitNetBlock struct {
	name                string
	dim, heads, window  int // window 0: global attention
	norm1, norm2        *LayerNorm
	qkv, proj, fc1, fc2 *nn.Linear
	relH, relW          []float32 // [rows, dh] as stored
	relRows             int
}

// LoadViTNet reads detectron2's ViT under prefix.
func LoadViTNet(w *Weights, c ViTNetConfig, prefix string) (*ViTNet, error) {
	l := &loader{w: w}
	D, p := c.Dim, c.Patch
	if D <= 0 || c.Heads <= 0 || D%c.Heads != 0 || p <= 0 || c.PretrainGrid <= 0 {
		return nil, fmt.Errorf("vitnet: dim %d, heads %d, patch %d, pretrain grid %d", D, c.Heads, p, c.PretrainGrid)
	}
	v := &ViTNet{Prefix: prefix, Dim: D, Patch: p, grid: c.PretrainGrid, posCls: c.PosCls}
	v.embed = &patchEmbed{name: prefix + ".patch_embed", ph: p, pw: p,
		proj: nn.NewLinear(prefix+".patch_embed.proj", 3*p*p, D, l.f(prefix+".patch_embed.proj.weight", D, 3, p, p), l.f(prefix+".patch_embed.proj.bias", D))}
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
	windowed := map[int]bool{}
	for _, i := range c.WindowBlocks {
		windowed[i] = true
	}
	dh := D / c.Heads
	for i := 0; i < c.Depth; i++ {
		name := fmt.Sprintf("%s.blocks.%d", prefix, i)
		b := &vitNetBlock{name: name, dim: D, heads: c.Heads}
		rel := c.RelGrid
		if windowed[i] {
			b.window, rel = c.Window, c.Window
		}
		b.norm1 = loadLN(l, name+".norm1", D, c.Eps)
		b.qkv = loadLinear(l, name+".attn.qkv", D, 3*D, true)
		b.proj = loadLinear(l, name+".attn.proj", D, D, true)
		b.norm2 = loadLN(l, name+".norm2", D, c.Eps)
		b.fc1 = loadLinear(l, name+".mlp.fc1", D, c.MLPDim, true)
		b.fc2 = loadLinear(l, name+".mlp.fc2", c.MLPDim, D, true)
		if c.RelPos {
			b.relRows = 2*rel - 1
			b.relH = l.f(name+".attn.rel_pos_h", b.relRows, dh)
			b.relW = l.f(name+".attn.rel_pos_w", b.relRows, dh)
		}
		v.blocks = append(v.blocks, Block{Name: name, Forward: b.forward, Linears: []*nn.Linear{b.qkv, b.proj, b.fc1, b.fc2},
			Attention: &Attention{QKV: b.qkv, Proj: b.proj, Heads: c.Heads, Attend: b.attend}})
	}
	if l.err != nil {
		return nil, l.err
	}
	v.quant = quantLayers(v.blocks)
	return v, nil
}

// embedForward is patch_embed then + get_abs_pos (bicubic, align_corners
// False, from the pretraining grid to the token grid).
func (v *ViTNet) embedForward(img *tensor.Tensor, ov nn.Overrides) *tensor.Tensor {
	x := v.embed.forward(img, ov) // [N, gh, gw, D]
	addAbsPos(x, v.posEmbed, v.grid)
	return x
}

// Blocks implements Backbone.
func (v *ViTNet) Blocks() []Block { return v.blocks }

// NumOutputs implements Backbone.
func (v *ViTNet) NumOutputs() int { return 1 }

// QuantLayers implements Backbone.
func (v *ViTNet) QuantLayers() []LayerRef { return v.quant }

// Forward implements Backbone: the last block's map, NCHW.
func (v *ViTNet) Forward(img *tensor.Tensor, ov nn.Overrides) []*tensor.Tensor {
	return v.ForwardFrom(0, img, nil, ov, nil)
}

// ForwardFrom implements Backbone.
func (v *ViTNet) ForwardFrom(start int, x *tensor.Tensor, _ []*tensor.Tensor, ov nn.Overrides, inputs []*tensor.Tensor) []*tensor.Tensor {
	for i := start; i < len(v.blocks); i++ {
		if inputs != nil {
			inputs[i] = x
		}
		x = v.blocks[i].Forward(x, ov)
	}
	return []*tensor.Tensor{tensor.NHWCToNCHW(x)}
}

// grid is one block run's token layout: the attention runs on nw
// sequences of th×tw tokens (windows of the zero-padded map, or the map).
type vitGrid struct {
	n, h, w   int
	th, tw    int // tokens per sequence: window or map
	nwh, nww  int // windows per image (1×1 for global attention)
	sequences int
}

func (b *vitNetBlock) layout(x *tensor.Tensor) vitGrid {
	g := vitGrid{n: x.Shape[0], h: x.Shape[1], w: x.Shape[2], th: x.Shape[1], tw: x.Shape[2], nwh: 1, nww: 1}
	if b.window > 0 {
		g.th, g.tw = b.window, b.window
		g.nwh = (g.h + b.window - 1) / b.window
		g.nww = (g.w + b.window - 1) / b.window
	}
	g.sequences = g.n * g.nwh * g.nww
	return g
}

// src returns, for sequence token t, the flat (image, y, x) position in
// the map, or -1 for window padding.
func (g vitGrid) src(t int) int {
	T := g.th * g.tw
	s, r := t/T, t%T
	img, wi := s/(g.nwh*g.nww), s%(g.nwh*g.nww)
	y := (wi/g.nww)*g.th + r/g.tw
	x := (wi%g.nww)*g.tw + r%g.tw
	if y >= g.h || x >= g.w {
		return -1
	}
	return (img*g.h+y)*g.w + x
}

// forward: x + proj(attention(norm1(x))), then x + mlp(norm2(x)).
func (b *vitNetBlock) forward(x *tensor.Tensor, ov nn.Overrides) *tensor.Tensor {
	D := b.dim
	g := b.layout(x)
	T := g.th * g.tw
	M := g.sequences * T
	// norm1, then window partition (zero tokens where the map is padded).
	xnBuf := nn.GetScratch(M * D)
	xn := (*xnBuf)[:M*D]
	normed := nn.GetScratch(x.Numel())
	b.norm1.Forward((*normed)[:x.Numel()], x.Data)
	for t := 0; t < M; t++ {
		if p := g.src(t); p >= 0 {
			copy(xn[t*D:(t+1)*D], (*normed)[p*D:(p+1)*D])
		} else {
			clear(xn[t*D : (t+1)*D])
		}
	}
	nn.PutScratch(normed)
	qkvBuf := nn.GetScratch(M * 3 * D)
	qkv := (*qkvBuf)[:M*3*D]
	b.qkv.Run(ov, qkv, xn, M)
	att := xn // reuse
	b.attention(att, qkv, g)
	prBuf := nn.GetScratch(M * D)
	b.proj.Run(ov, *prBuf, att, M)
	out := x.Clone()
	for t := 0; t < M; t++ {
		if p := g.src(t); p >= 0 {
			o := out.Data[p*D : (p+1)*D]
			for i, v := range (*prBuf)[t*D : (t+1)*D] {
				o[i] += v
			}
		}
	}
	nn.PutScratch(prBuf)
	nn.PutScratch(qkvBuf)
	nn.PutScratch(xnBuf)
	residualMLP(out.Data, g.n*g.h*g.w, D, b.norm2, b.fc1, b.fc2, ov)
	return out
}

// attend implements Attention.Attend (qkv rows in the block's sequence order).
func (b *vitNetBlock) attend(x *tensor.Tensor, qkv, out []float32) {
	b.attention(out, qkv, b.layout(x))
}

// relTable is get_rel_pos for q_size = k_size = s: the table linearly
// interpolated (align_corners False) to 2s-1 rows when its length
// differs, then R[i][j] = table[i - j + s - 1] ([s, s, dh]).
func relTable(table []float32, rows, dh, s int) []float32 {
	want := 2*s - 1
	t := table
	if rows != want {
		// F.interpolate(table.reshape(1, rows, dh).permute(0, 2, 1), size=want, mode="linear").
		t = make([]float32, want*dh)
		i0, i1, l0, l1 := nn.LinearIndices(rows, want)
		for j := range i0 {
			for c := 0; c < dh; c++ {
				t[j*dh+c] = table[i0[j]*dh+c]*l0[j] + table[i1[j]*dh+c]*l1[j]
			}
		}
	}
	out := make([]float32, s*s*dh)
	for i := 0; i < s; i++ {
		for j := 0; j < s; j++ {
			copy(out[(i*s+j)*dh:(i*s+j+1)*dh], t[(i-j+s-1)*dh:(i-j+s)*dh])
		}
	}
	return out
}

// attention computes, per sequence and head, softmax(scale·q·kᵀ + rel)·v
// into out ([M, D]): rel[(qy,qx),(ky,kx)] = q·Rh[qy,ky] + q·Rw[qx,kx] with
// the unscaled q (add_decomposed_rel_pos). Keys and values are packed once
// per sequence and head; queries run in chunks of 48 rows, each chunk's
// scores, relative terms, softmax and product with v in one pass over a
// chunk×T tile, so a global block's T×T score matrix (4096² per head for
// ViTDet-B at 1024²) is never written.
func (b *vitNetBlock) attention(out, qkv []float32, g vitGrid) {
	D, H := b.dim, b.heads
	dh := D / H
	T := g.th * g.tw
	scale := float32(1 / math.Sqrt(float64(dh)))
	var rh, rw []float32
	if b.relH != nil {
		rh = relTable(b.relH, b.relRows, dh, g.th)
		rw = relTable(b.relW, b.relRows, dh, g.tw)
	}
	jobs := g.sequences * H
	kLen, vLen := nn.PackedLen(dh, T), nn.PackedLen(T, dh)
	packs := nn.GetScratch(jobs * (kLen + vLen))
	pk := *packs
	nn.ParallelFor(jobs, 1, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			s, h := t/H, t%H
			base := s * T * 3 * D
			dst := pk[t*(kLen+vLen):]
			nn.PackB(dst[:kLen], true, dh, T, qkv[base+D+h*dh:], 3*D)
			nn.PackB(dst[kLen:kLen+vLen], false, T, dh, qkv[base+2*D+h*dh:], 3*D)
		}
	})
	const chunk = 8 * nn.MR
	chunks := (T + chunk - 1) / chunk
	nr := g.th + g.tw
	nn.ParallelFor(jobs*chunks, 1, func(lo, hi int) {
		sb := nn.GetScratch(chunk*T + chunk*dh + chunk*nr)
		S := (*sb)[:chunk*T]
		qs := (*sb)[chunk*T : chunk*T+chunk*dh]
		rel := (*sb)[chunk*T+chunk*dh:]
		for t := lo; t < hi; t++ {
			job, c := t/chunks, t%chunks
			s, h := job/H, job%H
			r0 := c * chunk
			rows := min(chunk, T-r0)
			base := s * T * 3 * D
			for r := 0; r < rows; r++ {
				q := qkv[base+(r0+r)*3*D+h*dh : base+(r0+r)*3*D+h*dh+dh]
				d := qs[r*dh : r*dh+dh]
				for i, v := range q {
					d[i] = v * scale
				}
				if rh != nil {
					qy, qx := (r0+r)/g.tw, (r0+r)%g.tw
					relr := rel[r*nr : (r+1)*nr]
					for ky := 0; ky < g.th; ky++ {
						relr[ky] = dot(q, rh[(qy*g.th+ky)*dh:(qy*g.th+ky+1)*dh])
					}
					for kx := 0; kx < g.tw; kx++ {
						relr[g.th+kx] = dot(q, rw[(qx*g.tw+kx)*dh:(qx*g.tw+kx+1)*dh])
					}
				}
			}
			kp := pk[job*(kLen+vLen):]
			nn.MulPacked(rows, qs, dh, kp[:kLen], dh, T, S, T, false)
			for r := 0; r < rows; r++ {
				row := S[r*T : (r+1)*T]
				if rh != nil {
					relr := rel[r*nr : (r+1)*nr]
					for k := range row {
						row[k] = row[k] + relr[k/g.tw] + relr[g.th+k%g.tw]
					}
				}
				nn.SoftmaxRow(row)
			}
			nn.MulPacked(rows, S, T, kp[kLen:kLen+vLen], T, dh, out[(s*T+r0)*D+h*dh:], D, false)
		}
		nn.PutScratch(sb)
	})
	nn.PutScratch(packs)
}

func dot(a, b []float32) float32 {
	var s float32
	for i, v := range a {
		s += v * b[i]
	}
	return s
}
