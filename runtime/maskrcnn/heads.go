package maskrcnn

import (
	"fmt"

	"github.com/flbq/flbq/runtime/detection"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/nn"
)

// RPNHead is torchvision's RPNHead: 3×3 convolutions with ReLU shared by
// every pyramid level (rpn.head.conv.{i}.0; conv_depth 1 by default, 2 in
// ViTDet), then 1×1 convolutions to A objectness logits
// (rpn.head.cls_logits) and 4A box deltas (rpn.head.bbox_pred) per
// location.
type RPNHead struct {
	Convs     []*nn.Conv2d
	Cls, BBox *nn.Conv2d
	A         int // anchors per location
}

// BoxHead is the box head and FastRCNNPredictor
// (roi_heads.box_predictor.cls_score, bbox_pred): TwoMLPHead
// (roi_heads.box_head.fc6, fc7, each followed by ReLU), or
// FastRCNNConvFCHead (roi_heads.box_head.{i}.0 3×3 convolutions, each with
// an optional LayerNorm2d .{i}.1 and ReLU, flattened, then Linear + ReLU
// layers; ViTDet's 4conv1fc head with LayerNorm).
type BoxHead struct {
	Convs     []*nn.Conv2d
	Norms     []*model.LayerNorm // per conv; nil entries: none
	FCs       []*nn.Linear       // fc6, fc7 (TwoMLPHead) or the conv head's
	ClsScore  *nn.Linear
	BBoxPred  *nn.Linear
	InC, Pool int // pooled input: InC×Pool×Pool
}

// MaskHead is MaskRCNNHeads (roi_heads.mask_head.{i}.0: 3×3 convolutions,
// padding 1, each followed by ReLU) and MaskRCNNPredictor
// (roi_heads.mask_predictor.conv5_mask: ConvTranspose2d 2×2 stride 2 +
// ReLU; mask_fcn_logits: 1×1 convolution to one map per class). It runs
// channels-last, on the layers' GEMMs.
type MaskHead struct {
	Convs  []*nn.Conv2d
	Norms  []*model.LayerNorm // LayerNorm2d after each conv (roi_heads.mask_head.{i}.1), or nil entries
	Deconv *nn.ConvTranspose2d
	Logits *nn.Conv2d
	InC    int
}

// Heads are a Mask R-CNN's learned heads; they implement detection.Heads
// and are safe for concurrent use (every call allocates its own buffers).
type Heads struct {
	RPNHead  *RPNHead
	BoxHead  *BoxHead
	MaskHead *MaskHead // nil for a Faster R-CNN checkpoint
}

var _ detection.Heads = (*Heads)(nil)

// hl reads head tensors, keeping the first error.
type hl struct {
	w   *model.Weights
	err error
}

func (l *hl) f(name string, shape ...int) []float32 {
	if l.err != nil {
		return nil
	}
	d, err := l.w.Float(name, shape...)
	if err != nil {
		l.err = err
	}
	return d
}

// shape returns the stored shape of name, requiring rank dims.
func (l *hl) shape(name string, rank int) []int {
	if l.err != nil {
		return nil
	}
	info, ok := l.w.File.Info(name)
	if !ok {
		l.err = fmt.Errorf("tensor %q: missing", name)
		return nil
	}
	if len(info.Shape) != rank {
		l.err = fmt.Errorf("tensor %q: shape %v, want %d dimensions", name, info.Shape, rank)
		return nil
	}
	for _, d := range info.Shape {
		if d <= 0 || d > 1<<20 {
			l.err = fmt.Errorf("tensor %q: shape %v out of range", name, info.Shape)
			return nil
		}
	}
	return info.Shape
}

// first returns the first of names present in the file (for legacy names).
func (l *hl) first(names ...string) string {
	for _, n := range names {
		if l.w.Has(n) {
			return n
		}
	}
	return names[0]
}

func (l *hl) conv(name string, in, out, k, pad int) *nn.Conv2d {
	return nn.NewConv2d(name, in, out, k, 1, pad, l.f(name+".weight", out, in, k, k), l.f(name+".bias", out))
}

// convMaybeBias is conv whose bias may be absent (a conv followed by a norm).
func (l *hl) convMaybeBias(name string, in, out, k, pad int) *nn.Conv2d {
	var b []float32
	if l.w.Has(name + ".bias") {
		b = l.f(name+".bias", out)
	}
	return nn.NewConv2d(name, in, out, k, 1, pad, l.f(name+".weight", out, in, k, k), b)
}

// norm2d reads the LayerNorm2d name when the file has it (eps 1e-6, as
// detectron2's LayerNorm and ViTDet's heads use), else nil.
func (l *hl) norm2d(name string, c int) *model.LayerNorm {
	if !l.w.Has(name + ".weight") {
		return nil
	}
	return &model.LayerNorm{Name: name, Weight: l.f(name+".weight", c), Bias: l.f(name+".bias", c), Eps: 1e-6}
}

func (l *hl) linear(name string, in, out int) *nn.Linear {
	return nn.NewLinear(name, in, out, l.f(name+".weight", out, in), l.f(name+".bias", out))
}

// HeadSizes are the widths of the heads (torchvision's constructor
// arguments); channels, anchors and classes come from the config.
type HeadSizes struct {
	Representation int   // TwoMLPHead representation size (1024)
	MaskLayers     []int // MaskRCNNHeads layers ((256, 256, 256, 256)); nil: no mask branch
	MaskDim        int   // MaskRCNNPredictor dim_reduced (256)
}

// DefaultHeadSizes are torchvision MaskRCNN's.
func DefaultHeadSizes() HeadSizes {
	return HeadSizes{Representation: 1024, MaskLayers: []int{256, 256, 256, 256}, MaskDim: 256}
}

func maskConvName(w *model.Weights, i int) string {
	n := fmt.Sprintf("roi_heads.mask_head.%d.0", i)
	if !w.Has(n+".weight") && w.Has(fmt.Sprintf("roi_heads.mask_head.mask_fcn%d.weight", i+1)) {
		n = fmt.Sprintf("roi_heads.mask_head.mask_fcn%d", i+1)
	}
	return n
}

// InferHeadSizes reads the head widths from the stored tensor shapes
// (a file without roi_heads.mask_* tensors has no mask branch).
func InferHeadSizes(w *model.Weights) (HeadSizes, error) {
	if w.File == nil {
		return DefaultHeadSizes(), nil
	}
	l := &hl{w: w}
	var s HeadSizes
	if w.Has("roi_heads.box_head.fc6.weight") || !w.Has("roi_heads.box_head.0.0.weight") {
		if sh := l.shape("roi_heads.box_head.fc6.weight", 2); sh != nil {
			s.Representation = sh[0]
		}
	} else {
		// FastRCNNConvFCHead: the last Linear after the convs.
		n := 0
		for w.Has(fmt.Sprintf("roi_heads.box_head.%d.0.weight", n)) {
			n++
		}
		for j := n + 1; w.Has(fmt.Sprintf("roi_heads.box_head.%d.weight", j)); j += 2 {
			if sh := l.shape(fmt.Sprintf("roi_heads.box_head.%d.weight", j), 2); sh != nil {
				s.Representation = sh[0]
			}
		}
	}
	for i := 0; w.Has(maskConvName(w, i) + ".weight"); i++ {
		sh := l.shape(maskConvName(w, i)+".weight", 4)
		if sh == nil {
			break
		}
		s.MaskLayers = append(s.MaskLayers, sh[0])
	}
	if len(s.MaskLayers) > 0 || w.Has("roi_heads.mask_predictor.conv5_mask.weight") {
		if sh := l.shape("roi_heads.mask_predictor.conv5_mask.weight", 4); sh != nil {
			s.MaskDim = sh[1]
		}
		if s.MaskLayers == nil {
			s.MaskLayers = []int{}
		}
	}
	return s, l.err
}

// LoadHeads reads the rpn.* and roi_heads.* tensors of a torchvision
// MaskRCNN state_dict: channels is the pyramid's width, anchors the anchors
// per location, numClasses K (with background), pool the box RoI pool size
// (7). Hidden sizes (TwoMLPHead's representation size, the mask head's
// layers and predictor width) are read from the tensors' shapes
// (InferHeadSizes); every tensor is checked for presence, dtype and shape,
// and errors name it. Torchvision's pre-0.13 names (rpn.head.conv.weight,
// roi_heads.mask_head.mask_fcn{i}) are accepted too. The mask branch is
// optional: without roi_heads.mask_* tensors the result has no MaskHead.
func LoadHeads(w *model.Weights, channels, anchors, numClasses, pool int) (*Heads, error) {
	s, err := InferHeadSizes(w)
	if err != nil {
		return nil, err
	}
	return LoadHeadsSized(w, channels, anchors, numClasses, pool, s)
}

// LoadHeadsSized is LoadHeads with the head widths given.
func LoadHeadsSized(w *model.Weights, channels, anchors, numClasses, pool int, s HeadSizes) (*Heads, error) {
	if channels <= 0 || anchors <= 0 || numClasses <= 0 || pool <= 0 || s.Representation <= 0 {
		return nil, fmt.Errorf("maskrcnn heads: channels %d, anchors %d, classes %d, pool %d, representation %d must be positive", channels, anchors, numClasses, pool, s.Representation)
	}
	l := &hl{w: w}
	h := &Heads{}
	// RPN.
	h.RPNHead = &RPNHead{
		Cls:  l.conv("rpn.head.cls_logits", channels, anchors, 1, 0),
		BBox: l.conv("rpn.head.bbox_pred", channels, 4*anchors, 1, 0),
		A:    anchors,
	}
	if !w.Has("rpn.head.conv.0.0.weight") && w.Has("rpn.head.conv.weight") {
		h.RPNHead.Convs = []*nn.Conv2d{l.conv("rpn.head.conv", channels, channels, 3, 1)}
	} else {
		for i := 0; i == 0 || w.Has(fmt.Sprintf("rpn.head.conv.%d.0.weight", i)); i++ {
			h.RPNHead.Convs = append(h.RPNHead.Convs, l.conv(fmt.Sprintf("rpn.head.conv.%d.0", i), channels, channels, 3, 1))
		}
	}
	// Box head.
	rep := s.Representation
	bh := &BoxHead{InC: channels, Pool: pool}
	if w.Has("roi_heads.box_head.fc6.weight") || !w.Has("roi_heads.box_head.0.0.weight") {
		bh.FCs = []*nn.Linear{l.linear("roi_heads.box_head.fc6", channels*pool*pool, rep), l.linear("roi_heads.box_head.fc7", rep, rep)}
	} else {
		n := 0
		for ; w.Has(fmt.Sprintf("roi_heads.box_head.%d.0.weight", n)); n++ {
			name := fmt.Sprintf("roi_heads.box_head.%d", n)
			bh.Convs = append(bh.Convs, l.convMaybeBias(name+".0", channels, channels, 3, 1))
			bh.Norms = append(bh.Norms, l.norm2d(name+".1", channels))
		}
		in := channels * pool * pool
		for j := n + 1; w.Has(fmt.Sprintf("roi_heads.box_head.%d.weight", j)); j += 2 {
			sh := l.shape(fmt.Sprintf("roi_heads.box_head.%d.weight", j), 2)
			if sh == nil {
				break
			}
			bh.FCs = append(bh.FCs, l.linear(fmt.Sprintf("roi_heads.box_head.%d", j), in, sh[0]))
			in = sh[0]
		}
		if len(bh.FCs) == 0 && l.err == nil {
			l.err = fmt.Errorf("tensor %q: missing (the conv box head's first Linear)", fmt.Sprintf("roi_heads.box_head.%d.weight", n+1))
		}
		rep = in
	}
	bh.ClsScore = l.linear("roi_heads.box_predictor.cls_score", rep, numClasses)
	bh.BBoxPred = l.linear("roi_heads.box_predictor.bbox_pred", rep, 4*numClasses)
	h.BoxHead = bh
	if l.err != nil {
		return nil, l.err
	}
	if s.MaskLayers == nil {
		return h, nil
	}
	if s.MaskDim <= 0 {
		return nil, fmt.Errorf("maskrcnn heads: mask predictor width %d", s.MaskDim)
	}
	mh := &MaskHead{InC: channels}
	c := channels
	for i, out := range s.MaskLayers {
		if out <= 0 {
			return nil, fmt.Errorf("maskrcnn heads: mask head layer %d has %d channels", i, out)
		}
		mh.Convs = append(mh.Convs, l.convMaybeBias(maskConvName(w, i), c, out, 3, 1))
		mh.Norms = append(mh.Norms, l.norm2d(fmt.Sprintf("roi_heads.mask_head.%d.1", i), out))
		c = out
	}
	d := s.MaskDim
	mh.Deconv = &nn.ConvTranspose2d{Name: "roi_heads.mask_predictor.conv5_mask", InC: c, OutC: d, K: 2,
		Weight: l.f("roi_heads.mask_predictor.conv5_mask.weight", c, d, 2, 2), Bias: l.f("roi_heads.mask_predictor.conv5_mask.bias", d)}
	mh.Logits = l.conv("roi_heads.mask_predictor.mask_fcn_logits", d, numClasses, 1, 0)
	if l.err != nil {
		return nil, l.err
	}
	h.MaskHead = mh
	return h, nil
}

// Linears lists the heads' linear layers (box head and predictor).
func (h *Heads) Linears() []*nn.Linear {
	b := h.BoxHead
	return append(append([]*nn.Linear(nil), b.FCs...), b.ClsScore, b.BBoxPred)
}

// RPN implements detection.Heads. It computes channels-last (an NCHW
// level is transposed first) and returns channels-last maps.
func (h *Heads) RPN(features []detection.FeatureMap) (obj, del []detection.FeatureMap, err error) {
	r := h.RPNHead
	for i, f := range features {
		if f.C != r.Convs[0].InC || len(f.Data) != f.C*f.H*f.W {
			return nil, nil, fmt.Errorf("maskrcnn: rpn head: level %d is %dx%dx%d (%d values), want %d channels", i, f.C, f.H, f.W, len(f.Data), r.Convs[0].InC)
		}
		hw := f.H * f.W
		t := f.Data
		var ts *[]float32 // t's scratch buffer, once t is not the input
		if !f.ChannelsLast {
			ts = nn.GetScratch(len(f.Data))
			t = *ts
			nn.ToNHWC(t, f.Data, 1, f.C, hw)
		}
		for _, cv := range r.Convs {
			us := nn.GetScratch(cv.OutC * hw)
			cv.ForwardNHWC(*us, t, 1, f.H, f.W)
			nn.ReLU(*us)
			if ts != nil {
				nn.PutScratch(ts)
			}
			ts, t = us, *us
		}
		o := make([]float32, r.A*hw)
		d := make([]float32, 4*r.A*hw)
		r.Cls.ForwardNHWC(o, t, 1, f.H, f.W)
		r.BBox.ForwardNHWC(d, t, 1, f.H, f.W)
		if ts != nil {
			nn.PutScratch(ts)
		}
		obj = append(obj, detection.FeatureMap{C: r.A, H: f.H, W: f.W, Data: o, ChannelsLast: true})
		del = append(del, detection.FeatureMap{C: 4 * r.A, H: f.H, W: f.W, Data: d, ChannelsLast: true})
	}
	return obj, del, nil
}

// Box implements detection.Heads.
func (h *Heads) Box(pooled []float32, n int) (classLogits, boxRegression []float32, err error) {
	b := h.BoxHead
	in := b.InC * b.Pool * b.Pool
	if len(pooled) != n*in {
		return nil, nil, fmt.Errorf("maskrcnn: box head: %d values for %d RoIs of %d", len(pooled), n, in)
	}
	y := pooled
	if len(b.Convs) > 0 {
		// Conv → LayerNorm2d → ReLU, channels-last over all RoIs, then
		// back to (C, H, W) per RoI for the flatten.
		pp := b.Pool * b.Pool
		y = make([]float32, len(pooled))
		nn.ToNHWC(y, pooled, n, b.InC, pp)
		for i, cv := range b.Convs {
			t := make([]float32, n*cv.OutC*pp)
			cv.ForwardNHWC(t, y, n, b.Pool, b.Pool)
			if nrm := b.Norms[i]; nrm != nil {
				nn.LayerNorm(t, t, n*pp, cv.OutC, nrm.Weight, nrm.Bias, nrm.Eps)
			}
			nn.ReLU(t)
			y = t
		}
		t := make([]float32, len(y))
		nn.ToNCHW(t, y, n, b.Convs[len(b.Convs)-1].OutC, pp)
		y = t
	}
	for _, fc := range b.FCs {
		x := make([]float32, n*fc.Out)
		fc.Forward(x, y, n)
		nn.ReLU(x)
		y = x
	}
	classLogits = make([]float32, n*b.ClsScore.Out)
	boxRegression = make([]float32, n*b.BBoxPred.Out)
	b.ClsScore.Forward(classLogits, y, n)
	b.BBoxPred.Forward(boxRegression, y, n)
	return classLogits, boxRegression, nil
}

// Mask implements detection.Heads.
func (h *Heads) Mask(pooled []float32, n int) ([]float32, error) {
	xs, s, err := h.maskTrunk(pooled, n)
	if err != nil || xs == nil {
		return nil, err
	}
	defer nn.PutScratch(xs)
	x := *xs
	lg := h.MaskHead.Logits
	d, k, mm := lg.InC, lg.OutC, s*s
	out := make([]float32, n*k*mm)
	nn.ParallelFor(n, 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			for l := 0; l < k; l++ {
				maskLogit(out[(i*k+l)*mm:(i*k+l+1)*mm], x[i*mm*d:(i+1)*mm*d], lg, l, d)
			}
		}
	})
	return out, nil
}

var _ detection.LabelMasker = (*Heads)(nil)

// MaskLabels implements detection.LabelMasker: mask_fcn_logits evaluated
// for each RoI's label only (a 1×1 convolution, so one dot product over
// the channels per pixel).
func (h *Heads) MaskLabels(pooled []float32, n int, labels []int) ([]float32, error) {
	if len(labels) != n {
		return nil, fmt.Errorf("maskrcnn: mask head: %d labels for %d RoIs", len(labels), n)
	}
	lg := h.MaskHead
	if lg != nil {
		for _, l := range labels {
			if l < 0 || l >= lg.Logits.OutC {
				return nil, fmt.Errorf("maskrcnn: mask head: label %d out of range [0,%d)", l, lg.Logits.OutC)
			}
		}
	}
	xs, s, err := h.maskTrunk(pooled, n)
	if err != nil || xs == nil {
		return nil, err
	}
	defer nn.PutScratch(xs)
	x := *xs
	d, mm := lg.Logits.InC, s*s
	out := make([]float32, n*mm)
	nn.ParallelFor(n, 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			maskLogit(out[i*mm:(i+1)*mm], x[i*mm*d:(i+1)*mm*d], lg.Logits, labels[i], d)
		}
	})
	return out, nil
}

// maskLogit writes class l's logits of one RoI (x: mm pixels × d channels).
func maskLogit(o, x []float32, lg *nn.Conv2d, l, d int) {
	w := lg.Weight[l*d : (l+1)*d]
	var b float32
	if lg.Bias != nil {
		b = lg.Bias[l]
	}
	for p := range o {
		px := x[p*d : (p+1)*d]
		px = px[:len(w)]
		var acc float32
		for c, wc := range w {
			acc += wc * px[c]
		}
		o[p] = acc + b
	}
}

// maskTrunk runs MaskRCNNHeads and conv5_mask (with their ReLUs) and
// returns the n RoIs' features channels-last (n × 2s × 2s × D) in a
// scratch buffer the caller returns with nn.PutScratch, and 2s; nil for no
// RoIs. Its intermediate maps are scratch too: the mask head is the
// detector's largest transient allocation (80 MB for 100 RoIs at
// torchvision's widths), which left to the garbage collector costs more
// than the convolutions on the integer kernels.
func (h *Heads) maskTrunk(pooled []float32, n int) (*[]float32, int, error) {
	m := h.MaskHead
	if m == nil {
		return nil, 0, fmt.Errorf("maskrcnn: the checkpoint has no mask head")
	}
	if n == 0 {
		return nil, 0, nil
	}
	if n < 0 || len(pooled)%(n*m.InC) != 0 {
		return nil, 0, fmt.Errorf("maskrcnn: mask head: %d values for %d RoIs of %d channels", len(pooled), n, m.InC)
	}
	s := 1
	for s*s < len(pooled)/(n*m.InC) {
		s++
	}
	if n*m.InC*s*s != len(pooled) {
		return nil, 0, fmt.Errorf("maskrcnn: mask head: %d values for %d RoIs of %d channels is not square", len(pooled), n, m.InC)
	}
	hw := s * s
	// CHW → HWC per RoI.
	xs := nn.GetScratch(len(pooled))
	nn.ToNHWC(*xs, pooled, n, m.InC, hw)
	for li, cv := range m.Convs {
		ys := nn.GetScratch(n * hw * cv.OutC)
		y := *ys
		cv.ForwardNHWC(y, *xs, n, s, s)
		nn.PutScratch(xs)
		if nrm := m.Norms[li]; nrm != nil {
			// Channels-last: LayerNorm2d is a LayerNorm over each pixel's channels.
			nn.LayerNorm(y, y, n*hw, cv.OutC, nrm.Weight, nrm.Bias, nrm.Eps)
		}
		nn.ReLU(y)
		xs = ys
	}
	// conv5_mask: each input pixel gives a 2×2 block of outputs.
	s2 := 2 * s
	out := nn.GetScratch(n * s2 * s2 * m.Deconv.OutC)
	m.Deconv.ForwardNHWC(*out, *xs, n, s, s)
	nn.PutScratch(xs)
	nn.ReLU(*out)
	return out, s2, nil
}
