package model

import (
	"fmt"

	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/tensor"
)

// Pyramid turns backbone outputs into the detector's feature pyramid: four
// levels ("fpn.0".."fpn.3", strides 4..32) plus "fpn.pool" (stride 64).
type Pyramid interface {
	// Forward returns the levels as NCHW tensors.
	Forward(feats []*tensor.Tensor) []*tensor.Tensor
	// ForwardNHWC returns the levels channels-last ([n, h, w, c]), as the
	// pyramid computes them (Forward transposes these).
	ForwardNHWC(feats []*tensor.Tensor) []*tensor.Tensor
	OutChannels() int
	// Layers lists the pyramid's convolutions and transposed convolutions.
	Layers() ([]*nn.Conv2d, []*nn.ConvTranspose2d)
}

// toNCHW transposes channels-last levels to NCHW.
func toNCHW(levels []*tensor.Tensor) []*tensor.Tensor {
	out := make([]*tensor.Tensor, len(levels))
	for i, t := range levels {
		n, h, w, c := t.Shape[0], t.Shape[1], t.Shape[2], t.Shape[3]
		out[i] = tensor.New(n, c, h, w)
		nn.ToNCHW(out[i].Data, t.Data, n, c, h*w)
	}
	return out
}

// nhwc returns the channels-last copy of an NCHW tensor.
func nhwc(x *tensor.Tensor) *tensor.Tensor {
	n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	t := tensor.New(n, h, w, c)
	nn.ToNHWC(t.Data, x.Data, n, c, h*w)
	return t
}

// conv runs c on a channels-last tensor.
func conv(c *nn.Conv2d, x *tensor.Tensor) *tensor.Tensor {
	n, h, w := x.Shape[0], x.Shape[1], x.Shape[2]
	oh, ow := c.OutSize(h, w)
	y := tensor.New(n, oh, ow, c.OutC)
	c.ForwardNHWC(y.Data, x.Data, n, h, w)
	return y
}

// deconv runs c on a channels-last tensor.
func deconv(c *nn.ConvTranspose2d, x *tensor.Tensor) *tensor.Tensor {
	n, h, w := x.Shape[0], x.Shape[1], x.Shape[2]
	y := tensor.New(n, h*c.K, w*c.K, c.OutC)
	c.ForwardNHWC(y.Data, x.Data, n, h, w)
	return y
}

// maxPoolNHWC is MaxPool2d on a channels-last tensor.
func maxPoolNHWC(x *tensor.Tensor, kernel, stride int) *tensor.Tensor {
	n, h, w, c := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	d, oh, ow := nn.MaxPool2dNHWC(x.Data, n, c, h, w, kernel, stride, 0)
	return tensor.From(d, n, oh, ow, c)
}

// normNHWC is LayerNorm2d on a channels-last tensor (a LayerNorm of each
// pixel's channels), in place.
func normNHWC(l *LayerNorm, x *tensor.Tensor) {
	c := x.Shape[3]
	nn.LayerNorm(x.Data, x.Data, len(x.Data)/c, c, l.Weight, l.Bias, l.Eps)
}

// FPN is torchvision's FeaturePyramidNetwork with LastLevelMaxPool:
// inner_blocks.{i}.0 (1×1 conv), layer_blocks.{i}.0 (3×3 conv, padding 1),
// top-down nearest upsampling to each lateral's size.
type FPN struct {
	Inner, Layer []*nn.Conv2d
	outC         int
}

// LoadFPN reads prefix.inner_blocks / prefix.layer_blocks (e.g. prefix "backbone.fpn").
func LoadFPN(w *Weights, prefix string, inChannels []int, outC int) (*FPN, error) {
	l := &loader{w: w}
	f := &FPN{outC: outC}
	for i, c := range inChannels {
		n := fmt.Sprintf("%s.inner_blocks.%d.0", prefix, i)
		f.Inner = append(f.Inner, nn.NewConv2d(n, c, outC, 1, 1, 0, l.f(n+".weight", outC, c, 1, 1), l.f(n+".bias", outC)))
		n = fmt.Sprintf("%s.layer_blocks.%d.0", prefix, i)
		f.Layer = append(f.Layer, nn.NewConv2d(n, outC, outC, 3, 1, 1, l.f(n+".weight", outC, outC, 3, 3), l.f(n+".bias", outC)))
	}
	return f, l.err
}

// OutChannels implements Pyramid.
func (f *FPN) OutChannels() int { return f.outC }

// Layers implements Pyramid.
func (f *FPN) Layers() ([]*nn.Conv2d, []*nn.ConvTranspose2d) {
	return append(append([]*nn.Conv2d(nil), f.Inner...), f.Layer...), nil
}

// Forward implements Pyramid.
func (f *FPN) Forward(feats []*tensor.Tensor) []*tensor.Tensor { return toNCHW(f.ForwardNHWC(feats)) }

// ForwardNHWC implements Pyramid. The channels-last inputs and the inner
// (lateral) maps are scratch buffers, returned as soon as the next level
// no longer needs them; only the levels are allocated.
func (f *FPN) ForwardNHWC(feats []*tensor.Tensor) []*tensor.Tensor {
	L := len(feats)
	res := make([]*tensor.Tensor, L+1)
	inner := func(i int) (*tensor.Tensor, *[]float32) {
		x := feats[i]
		n, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
		xs := nn.GetScratch(len(x.Data))
		nn.ToNHWC(*xs, x.Data, n, c, h*w)
		cv := f.Inner[i]
		ys := nn.GetScratch(n * h * w * cv.OutC)
		cv.ForwardNHWC(*ys, *xs, n, h, w)
		nn.PutScratch(xs)
		return tensor.From(*ys, n, h, w, cv.OutC), ys
	}
	last, lastBuf := inner(L - 1)
	res[L-1] = conv(f.Layer[L-1], last)
	for i := L - 2; i >= 0; i-- {
		lat, latBuf := inner(i)
		n, h, w, c := lat.Shape[0], lat.Shape[1], lat.Shape[2], lat.Shape[3]
		nn.ResizeNearestAddNHWC(lat.Data, last.Data, n, c, last.Shape[1], last.Shape[2], h, w)
		nn.PutScratch(lastBuf)
		last, lastBuf = lat, latBuf
		res[i] = conv(f.Layer[i], last)
	}
	nn.PutScratch(lastBuf)
	res[L] = maxPoolNHWC(res[L-1], 1, 2) // LastLevelMaxPool: every other pixel
	return res
}

// SimpleFP is the ViTDet simple feature pyramid on a stride-16 map:
// simfp_4 (deconv 2×2, LayerNorm2d, GELU, deconv 2×2), simfp_8 (deconv
// 2×2), simfp_16 (identity), simfp_32 (max-pool 2×2), each followed by
// lateral.{i} (1×1 conv without bias + LayerNorm2d) and output.{i} (3×3
// conv without bias + LayerNorm2d); plus a pool level (LastLevelMaxPool).
type SimpleFP struct {
	Up4a, Up4b, Up8  *nn.ConvTranspose2d
	Norm4            *LayerNorm
	Lateral, Output  []*nn.Conv2d
	LatNorm, OutNorm []*LayerNorm
	outC             int
}

const ln2dEps = 1e-6

// LoadSimpleFP reads prefix.simfp_* / lateral.* / output.* (prefix "backbone").
func LoadSimpleFP(w *Weights, prefix string, dim, outC int) (*SimpleFP, error) {
	l := &loader{w: w}
	s := &SimpleFP{outC: outC}
	d2, d4 := dim/2, dim/4
	s.Up4a = &nn.ConvTranspose2d{Name: prefix + ".simfp_4.0", InC: dim, OutC: d2, K: 2, Weight: l.f(prefix+".simfp_4.0.weight", dim, d2, 2, 2), Bias: l.f(prefix+".simfp_4.0.bias", d2)}
	s.Norm4 = loadLN(l, prefix+".simfp_4.1", d2, ln2dEps)
	s.Up4b = &nn.ConvTranspose2d{Name: prefix + ".simfp_4.3", InC: d2, OutC: d4, K: 2, Weight: l.f(prefix+".simfp_4.3.weight", d2, d4, 2, 2), Bias: l.f(prefix+".simfp_4.3.bias", d4)}
	s.Up8 = &nn.ConvTranspose2d{Name: prefix + ".simfp_8.0", InC: dim, OutC: d2, K: 2, Weight: l.f(prefix+".simfp_8.0.weight", dim, d2, 2, 2), Bias: l.f(prefix+".simfp_8.0.bias", d2)}
	for i, c := range []int{d4, d2, dim, dim} {
		n := fmt.Sprintf("%s.lateral.%d", prefix, i)
		s.Lateral = append(s.Lateral, nn.NewConv2d(n+".0", c, outC, 1, 1, 0, l.f(n+".0.weight", outC, c, 1, 1), nil))
		s.LatNorm = append(s.LatNorm, loadLN(l, n+".1", outC, ln2dEps))
		n = fmt.Sprintf("%s.output.%d", prefix, i)
		s.Output = append(s.Output, nn.NewConv2d(n+".0", outC, outC, 3, 1, 1, l.f(n+".0.weight", outC, outC, 3, 3), nil))
		s.OutNorm = append(s.OutNorm, loadLN(l, n+".1", outC, ln2dEps))
	}
	return s, l.err
}

// LoadSimpleFPDetectron2 reads the same pyramid in detectron2's
// SimpleFeaturePyramid names (modeling/backbone/vit.py): simfp_2.{0,1,3}
// the upsampling, simfp_2.{4,5} the 1×1 and 3×3 convolutions with their
// .norm; simfp_3.0 and simfp_3.{1,2}; simfp_4.{0,1}; simfp_5.{1,2} after
// the max-pool (index 0).
func LoadSimpleFPDetectron2(w *Weights, prefix string, dim, outC int) (*SimpleFP, error) {
	l := &loader{w: w}
	s := &SimpleFP{outC: outC}
	d2, d4 := dim/2, dim/4
	p2, p3 := prefix+".simfp_2", prefix+".simfp_3"
	s.Up4a = &nn.ConvTranspose2d{Name: p2 + ".0", InC: dim, OutC: d2, K: 2, Weight: l.f(p2+".0.weight", dim, d2, 2, 2), Bias: l.f(p2+".0.bias", d2)}
	s.Norm4 = loadLN(l, p2+".1", d2, ln2dEps)
	s.Up4b = &nn.ConvTranspose2d{Name: p2 + ".3", InC: d2, OutC: d4, K: 2, Weight: l.f(p2+".3.weight", d2, d4, 2, 2), Bias: l.f(p2+".3.bias", d4)}
	s.Up8 = &nn.ConvTranspose2d{Name: p3 + ".0", InC: dim, OutC: d2, K: 2, Weight: l.f(p3+".0.weight", dim, d2, 2, 2), Bias: l.f(p3+".0.bias", d2)}
	for _, lvl := range []struct {
		in       int
		lat, out string
	}{{d4, p2 + ".4", p2 + ".5"}, {d2, p3 + ".1", p3 + ".2"}, {dim, prefix + ".simfp_4.0", prefix + ".simfp_4.1"}, {dim, prefix + ".simfp_5.1", prefix + ".simfp_5.2"}} {
		s.Lateral = append(s.Lateral, nn.NewConv2d(lvl.lat, lvl.in, outC, 1, 1, 0, l.f(lvl.lat+".weight", outC, lvl.in, 1, 1), nil))
		s.LatNorm = append(s.LatNorm, loadLN(l, lvl.lat+".norm", outC, ln2dEps))
		s.Output = append(s.Output, nn.NewConv2d(lvl.out, outC, outC, 3, 1, 1, l.f(lvl.out+".weight", outC, outC, 3, 3), nil))
		s.OutNorm = append(s.OutNorm, loadLN(l, lvl.out+".norm", outC, ln2dEps))
	}
	return s, l.err
}

// OutChannels implements Pyramid.
func (s *SimpleFP) OutChannels() int { return s.outC }

// Layers implements Pyramid.
func (s *SimpleFP) Layers() ([]*nn.Conv2d, []*nn.ConvTranspose2d) {
	return append(append([]*nn.Conv2d(nil), s.Lateral...), s.Output...), []*nn.ConvTranspose2d{s.Up4a, s.Up4b, s.Up8}
}

// Forward implements Pyramid; feats[0] is the encoder map (NCHW, stride 16).
func (s *SimpleFP) Forward(feats []*tensor.Tensor) []*tensor.Tensor {
	return toNCHW(s.ForwardNHWC(feats))
}

// ForwardNHWC implements Pyramid.
func (s *SimpleFP) ForwardNHWC(feats []*tensor.Tensor) []*tensor.Tensor {
	x := nhwc(feats[0])
	p4 := deconv(s.Up4a, x)
	normNHWC(s.Norm4, p4)
	nn.GELU(p4.Data)
	p4 = deconv(s.Up4b, p4)
	p8 := deconv(s.Up8, x)
	p32 := maxPoolNHWC(x, 2, 2)
	res := make([]*tensor.Tensor, 5)
	for i, in := range []*tensor.Tensor{p4, p8, x, p32} {
		y := conv(s.Lateral[i], in)
		normNHWC(s.LatNorm[i], y)
		y = conv(s.Output[i], y)
		normNHWC(s.OutNorm[i], y)
		res[i] = y
	}
	res[4] = maxPoolNHWC(res[3], 1, 2)
	return res
}
