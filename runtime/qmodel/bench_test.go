package qmodel_test

import (
	"math/rand"
	"runtime"
	"testing"

	"github.com/flbq/flbq/generated/tinyswin"
	"github.com/flbq/flbq/runtime/cputime"
	"github.com/flbq/flbq/runtime/kernels"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/runtime/tensor"
)

// threadCPU returns the calling thread's CPU time in nanoseconds.
func threadCPU() int64 { return int64(cputime.Thread()) }

// timed wraps a layer's implementation and adds the calling thread's CPU
// time of every call to *ns (run with -cpu 1: the work stays on that thread).
type timed struct {
	op nn.LinearOp
	ns *int64
}

func (t timed) Forward(dst, x []float32, M int) {
	t0 := threadCPU()
	t.op.Forward(dst, x, M)
	*t.ns += threadCPU() - t0
}

type qop struct{ q *kernels.QLinear }

func (o qop) Forward(dst, x []float32, M int) {
	if err := o.q.Forward(dst, x, M); err != nil {
		panic(err)
	}
}

// dpBits returns the tile bit-widths of layer name in the generated
// tinyswin package (the bundled model's DP allocation at 4 average bits).
func dpBits(b *testing.B, name string) []uint8 {
	for _, l := range tinyswin.Layers {
		if l.Name == name {
			tb, err := l.TileBits()
			if err != nil {
				b.Fatal(err)
			}
			return tb
		}
	}
	b.Fatalf("layer %s not in tinyswin", name)
	return nil
}

// BenchmarkBundledBackbone times the backbone of the bundled Swin Mask R-CNN
// (stage widths 16–128) on one 192×192 image: fp32, and with every
// quantizable linear on kernels.QLinear at uniform 4 and 8 bits. Besides wall
// time it reports the thread CPU time of the whole forward ("cpu-ms/op") and
// of the quantizable linears alone ("linear-cpu-ms/op"); run with -cpu 1 for
// these to be exact (other threads' work is not counted).
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
	}{{"fp32", 0}, {"q4", 4}, {"q8", 8}, {"dp4", -1}} {
		b.Run(v.name, func(b *testing.B) {
			var linNS int64
			for _, l := range m.QuantLayers() {
				var op nn.LinearOp = nn.LinearFunc(l.Layer.ForwardFP32)
				if v.bits != 0 {
					tb := qformat.UniformBits(l.Out, max(v.bits, 1))
					if v.bits < 0 {
						tb = dpBits(b, l.Name)
					}
					q, err := kernels.QuantizeLinear(l.Layer.Weight, l.Out, l.In, tb, qformat.MinMax, l.Layer.Bias)
					if err != nil {
						b.Fatal(err)
					}
					op = qop{q}
				}
				if err := m.SetLinearImpl(l.Name, timed{op, &linNS}); err != nil {
					b.Fatal(err)
				}
			}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			m.Backbone.Forward(x, nil)
			linNS = 0
			var cpu int64
			for b.Loop() {
				t0 := threadCPU()
				m.Backbone.Forward(x, nil)
				cpu += threadCPU() - t0
			}
			b.ReportMetric(float64(cpu)/1e6/float64(b.N), "cpu-ms/op")
			b.ReportMetric(float64(linNS)/1e6/float64(b.N), "linear-cpu-ms/op")
			for _, l := range m.QuantLayers() {
				m.SetLinearImpl(l.Name, nil)
			}
		})
	}
}
