package calib

import (
	"fmt"

	"github.com/flbq/flbq/runtime/kernels"
	"github.com/flbq/flbq/runtime/maskrcnn"
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

// FakeQuantHeads turns d's pyramid and head layers (maskrcnn.HeadLayers)
// into the float twin of a quantized model's integer heads: each weight
// quantized per output channel at b bits with vanilla min–max scales and
// dequantized (the values the model stores), and each product's input rows
// rounded to int8 as the kernels quantize them (kernels.FakeQuantize), so
// only the float rounding of the products differs from the integer
// kernels. The mask logits, computed in fp32 per predicted label, get the
// weights only. Call it before d's first forward pass.
func FakeQuantHeads(d *maskrcnn.Detector, b int) error {
	for _, l := range d.HeadLayers() {
		q, err := FakeQuantWeight(l.Weight(), l.Shape(), l.Axis(), b, qformat.MinMax)
		if err != nil {
			return fmt.Errorf("%s: %w", l.Name(), err)
		}
		l.SetWeight(q)
		if !l.PerLabel {
			g := l.GEMM()
			g.Impl = fakeQuantRows{g}
		}
	}
	return nil
}

// fakeQuantRows is a Linear whose input rows are int8-rounded first.
type fakeQuantRows struct{ l *nn.Linear }

func (f fakeQuantRows) Forward(dst, x []float32, M int) {
	xq := nn.GetScratch(M * f.l.In)
	defer nn.PutScratch(xq)
	if err := kernels.FakeQuantize(*xq, x, M, f.l.In); err != nil {
		panic(err) // shapes are the layer's own
	}
	f.l.ForwardFP32(dst, *xq, M)
}
