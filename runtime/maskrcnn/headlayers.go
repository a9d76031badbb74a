package maskrcnn

import "github.com/flbq/flbq/runtime/nn"

// HeadLayer is one weight layer of the feature pyramid or the Mask R-CNN
// heads. These are the layers a quantized model stores as uniform weights
// with vanilla per-output-channel scales (the paper's heads protocol) and,
// with integer heads, runs on the integer kernels through its GEMM.
// Exactly one of Conv, Deconv and Linear is set.
type HeadLayer struct {
	Conv   *nn.Conv2d
	Deconv *nn.ConvTranspose2d
	Linear *nn.Linear
	// PerLabel marks the mask logits (mask_fcn_logits): evaluated for each
	// RoI's predicted label only, one dot product per pixel, in fp32 on the
	// layer's (dequantized) weights rather than through its GEMM.
	PerLabel bool
}

// HeadLayers lists the detector's pyramid and head layers, pyramid first.
func (d *Detector) HeadLayers() []HeadLayer {
	var out []HeadLayer
	convs, deconvs := d.Model.Pyramid.Layers()
	for _, c := range deconvs {
		out = append(out, HeadLayer{Deconv: c})
	}
	for _, c := range convs {
		out = append(out, HeadLayer{Conv: c})
	}
	h := d.Heads
	r := h.RPNHead
	for _, c := range append(append([]*nn.Conv2d(nil), r.Convs...), r.Cls, r.BBox) {
		out = append(out, HeadLayer{Conv: c})
	}
	for _, c := range h.BoxHead.Convs {
		out = append(out, HeadLayer{Conv: c})
	}
	for _, l := range h.Linears() {
		out = append(out, HeadLayer{Linear: l})
	}
	if m := h.MaskHead; m != nil {
		for _, c := range m.Convs {
			out = append(out, HeadLayer{Conv: c})
		}
		out = append(out, HeadLayer{Deconv: m.Deconv}, HeadLayer{Conv: m.Logits, PerLabel: true})
	}
	return out
}

// Name is the layer's state_dict prefix.
func (l HeadLayer) Name() string {
	switch {
	case l.Conv != nil:
		return l.Conv.Name
	case l.Deconv != nil:
		return l.Deconv.Name
	}
	return l.Linear.Name
}

// WeightName is the layer's weight tensor.
func (l HeadLayer) WeightName() string { return l.Name() + ".weight" }

// Shape is the weight's torch shape.
func (l HeadLayer) Shape() []int {
	switch {
	case l.Conv != nil:
		return []int{l.Conv.OutC, l.Conv.InC, l.Conv.KH, l.Conv.KW}
	case l.Deconv != nil:
		return []int{l.Deconv.InC, l.Deconv.OutC, l.Deconv.K, l.Deconv.K}
	}
	return []int{l.Linear.Out, l.Linear.In}
}

// Axis is the weight's output-channel axis (ConvTranspose2d: 1).
func (l HeadLayer) Axis() int {
	if l.Deconv != nil {
		return 1
	}
	return 0
}

// Weight is the layer's weight in torch layout.
func (l HeadLayer) Weight() []float32 {
	switch {
	case l.Conv != nil:
		return l.Conv.Weight
	case l.Deconv != nil:
		return l.Deconv.Weight
	}
	return l.Linear.Weight
}

// SetWeight replaces the torch-layout weight; call it before the layer's
// first forward pass (its GEMM is built from the weight then).
func (l HeadLayer) SetWeight(w []float32) {
	switch {
	case l.Conv != nil:
		l.Conv.Weight = w
	case l.Deconv != nil:
		l.Deconv.Weight = w
	default:
		l.Linear.Weight = w
	}
}

// GEMM is the product the layer runs as.
func (l HeadLayer) GEMM() *nn.Linear {
	switch {
	case l.Conv != nil:
		return l.Conv.GEMM()
	case l.Deconv != nil:
		return l.Deconv.GEMM()
	}
	return l.Linear
}

// GEMMOrder maps the GEMM's weight to the torch weight: element i of the
// GEMM weight is element GEMMOrder()[i] of Weight (nil: the same layout).
func (l HeadLayer) GEMMOrder() []int {
	switch {
	case l.Conv != nil:
		if l.Conv.KH*l.Conv.KW == 1 {
			return nil
		}
		return l.Conv.GEMMOrder()
	case l.Deconv != nil:
		return l.Deconv.GEMMOrder()
	}
	return nil
}

// GEMMChannel is the output channel of GEMM row r.
func (l HeadLayer) GEMMChannel(r int) int {
	if l.Deconv != nil {
		return l.Deconv.GEMMChannel(r)
	}
	return r
}
