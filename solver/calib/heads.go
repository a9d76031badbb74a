package calib

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/qformat"
)

// DefaultHeadBits is the paper's uniform bit-width of the detection heads.
const DefaultHeadBits = 8

// FakeQuantWeight returns w (shape, row-major, torch layout) quantized per
// output channel at b bits and dequantized, with the output channel on axis
// outAxis (0 for Linear and Conv2d [out, in, kh, kw]; 1 for ConvTranspose2d
// [in, out, k, k]). The heads use qformat.MinMax ("vanilla") as the paper
// does.
func FakeQuantWeight(w []float32, shape []int, outAxis, b int, rule qformat.Rule) ([]float32, error) {
	// The same quantize/dequantize the generated packages store and load.
	q, scale, zero, err := qformat.QuantizeTensor(w, shape, outAxis, b, rule)
	if err != nil {
		return nil, fmt.Errorf("fake-quant: %w", err)
	}
	return qformat.DequantizeTensor(q, shape, outAxis, scale, zero)
}

// HeadPatterns select the head weight tensors (path.Match on the tensor
// name) that QuantizedHeadTensors quantizes: the Mask R-CNN RPN and RoI
// heads. Only tensors with at least two dimensions (weights, not biases or
// norms) are taken.
var HeadPatterns = []string{"rpn.*", "roi_heads.*"}

// QuantizedHeadTensors returns fake-quantized copies (b bits, vanilla
// min–max scales, per output channel) of every weight tensor of the file
// behind w whose name matches one of patterns (HeadPatterns when nil),
// keyed by name. ConvTranspose weights (names containing "conv5_mask", as
// in torchvision's MaskRCNNPredictor) have the output channel on axis 1.
// The Mask R-CNN heads loader can take these in place of the fp32 tensors.
func QuantizedHeadTensors(w *model.Weights, patterns []string, b int) (map[string][]float32, error) {
	if patterns == nil {
		patterns = HeadPatterns
	}
	out := map[string][]float32{}
	names := w.File.Names()
	sort.Strings(names)
	for _, name := range names {
		match := false
		for _, p := range patterns {
			if ok, _ := path.Match(p, name); ok {
				match = true
			}
		}
		info, _ := w.File.Info(name)
		if !match || len(info.Shape) < 2 || !info.DType.IsFloat() {
			continue
		}
		data, shape, err := w.File.Float32(name)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		axis := 0
		if strings.Contains(name, "conv5_mask") {
			axis = 1
		}
		q, err := FakeQuantWeight(data, shape, axis, b, qformat.MinMax)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		out[name] = q
	}
	return out, nil
}

// QuantizePyramid replaces the weights of the model's feature pyramid
// (torchvision FPN or ViTDet's simple feature pyramid: every Conv2d and
// ConvTranspose2d) by their b-bit fake-quantized values with vanilla
// scales, in place, and returns the number of tensors changed. Call it
// before the model's first forward pass (ConvTranspose2d caches a
// transposed copy of its weight) and not while other goroutines use m.
func QuantizePyramid(m *model.Model, b int) (int, error) {
	var convs []*nn.Conv2d
	var tconvs []*nn.ConvTranspose2d
	switch p := m.Pyramid.(type) {
	case *model.FPN:
		convs = append(append(convs, p.Inner...), p.Layer...)
	case *model.SimpleFP:
		convs = append(append(convs, p.Lateral...), p.Output...)
		tconvs = append(tconvs, p.Up4a, p.Up4b, p.Up8)
	case nil:
		return 0, fmt.Errorf("the model has no feature pyramid")
	default:
		return 0, fmt.Errorf("unknown pyramid type %T", p)
	}
	n := 0
	for _, c := range convs {
		q, err := FakeQuantWeight(c.Weight, []int{c.OutC, c.InC, c.KH, c.KW}, 0, b, qformat.MinMax)
		if err != nil {
			return n, fmt.Errorf("%s: %w", c.Name, err)
		}
		c.Weight = q
		n++
	}
	for _, c := range tconvs {
		q, err := FakeQuantWeight(c.Weight, []int{c.InC, c.OutC, c.K, c.K}, 1, b, qformat.MinMax)
		if err != nil {
			return n, fmt.Errorf("%s: %w", c.Name, err)
		}
		c.Weight = q
		n++
	}
	return n, nil
}
