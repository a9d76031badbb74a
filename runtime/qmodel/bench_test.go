package qmodel_test

import (
	"math/rand"
	"testing"

	"github.com/flbq/flbq/runtime/kernels"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/runtime/tensor"
)

// BenchmarkBundledBackbone times the backbone of the bundled Swin Mask R-CNN
// (embed_dim 32) on one 192×192 image: fp32, and with every quantizable
// linear on kernels.QLinear at uniform 4 and 8 bits.
func BenchmarkBundledBackbone(b *testing.B) {
	m, err := model.Load("../maskrcnn/testdata/swin_maskrcnn.safetensors")
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewSource(3))
	x := tensor.New(1, 3, 192, 192)
	for i := range x.Data {
		x.Data[i] = float32(r.NormFloat64())
	}
	for _, v := range []struct {
		name string
		bits int
	}{{"fp32", 0}, {"q4", 4}, {"q8", 8}} {
		b.Run(v.name, func(b *testing.B) {
			for _, l := range m.QuantLayers() {
				if v.bits == 0 {
					if err := m.SetLinearImpl(l.Name, nil); err != nil {
						b.Fatal(err)
					}
					continue
				}
				q, err := kernels.QuantizeLinear(l.Layer.Weight, l.Out, l.In, qformat.UniformBits(l.Out, v.bits), qformat.MinMax, l.Layer.Bias)
				if err != nil {
					b.Fatal(err)
				}
				if err := m.SetLinearImpl(l.Name, qop{q}); err != nil {
					b.Fatal(err)
				}
			}
			m.Backbone.Forward(x, nil)
			for b.Loop() {
				m.Backbone.Forward(x, nil)
			}
		})
	}
}

type qop struct{ q *kernels.QLinear }

func (o qop) Forward(dst, x []float32, M int) {
	if err := o.q.Forward(dst, x, M); err != nil {
		panic(err)
	}
}
