package qmodel_test

import (
	"math/rand"
	"runtime"
	"strings"
	"testing"

	"github.com/flbq/flbq/generated/shapesswin"
	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/qmodel"
	"github.com/flbq/flbq/runtime/tensor"
)

// recordM wraps a layer's implementation and records the rows of its first call.
type recordM struct {
	op nn.LinearOp
	m  *int
}

func (r recordM) Forward(dst, x []float32, M int) {
	if *r.m == 0 {
		*r.m = M
	}
	r.op.Forward(dst, x, M)
}

// bundled loads the generated bundled-model package and one 192×192 input,
// and returns the rows every quantized layer sees on it.
func bundled(b *testing.B) (*qmodel.Model, *tensor.Tensor, map[string]int) {
	m, err := shapesswin.New()
	if err != nil {
		b.Fatal(err)
	}
	r := rand.New(rand.NewSource(3))
	x := tensor.New(1, 3, 192, 192)
	for i := range x.Data {
		x.Data[i] = float32(r.NormFloat64())
	}
	rows := map[string]int{}
	for _, l := range shapesswin.Layers {
		lin := m.Model.Linear(l.Name)
		lin.Impl = recordM{lin.Impl, new(int)}
	}
	m.Model.Backbone.Forward(x, nil)
	for _, l := range shapesswin.Layers {
		lin := m.Model.Linear(l.Name)
		rows[l.Name] = *lin.Impl.(recordM).m
	}
	if err := m.SetSpecialised(true); err != nil {
		b.Fatal(err)
	}
	return m, x, rows
}

var paths = []struct {
	name        string
	specialised bool
}{{"generic", false}, {"specialised", true}}

// BenchmarkGeneratedLayers times every quantized layer of the bundled model
// (generated/shapesswin, DP at 4 bits) at the rows it sees on a 192×192
// image, through the generic kernels.QLinear path (runtime shapes, per-tile
// bit-width lookup) and through the package's specialised entry point;
// "cpu-us/op" is the thread CPU time (exact with -cpu 1).
func BenchmarkGeneratedLayers(b *testing.B) {
	m, _, rows := bundled(b)
	r := rand.New(rand.NewSource(4))
	for _, l := range shapesswin.Layers {
		M := rows[l.Name]
		x := make([]float32, M*l.K)
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		dst := make([]float32, M*l.N)
		lin := m.Model.Linear(l.Name)
		name := strings.TrimPrefix(l.Name, "backbone.body.")
		for _, p := range paths {
			b.Run(name+"/"+p.name, func(b *testing.B) {
				if err := m.SetSpecialised(p.specialised); err != nil {
					b.Fatal(err)
				}
				runtime.LockOSThread()
				defer runtime.UnlockOSThread()
				var cpu int64
				for b.Loop() {
					t0 := threadCPU()
					lin.Impl.Forward(dst, x, M)
					cpu += threadCPU() - t0
				}
				b.ReportMetric(float64(cpu)/1e3/float64(b.N), "cpu-us/op")
				b.ReportMetric(2*float64(M)*float64(l.N)*float64(l.K)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
			})
		}
	}
}

// BenchmarkGeneratedBackbone times the bundled model's whole quantized
// backbone on one 192×192 image with every layer on the generic path or on
// its specialised entry point; "cpu-ms/op" is the thread CPU time (exact
// with -cpu 1).
func BenchmarkGeneratedBackbone(b *testing.B) {
	m, x, _ := bundled(b)
	for _, p := range paths {
		b.Run(p.name, func(b *testing.B) {
			if err := m.SetSpecialised(p.specialised); err != nil {
				b.Fatal(err)
			}
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			m.Model.Backbone.Forward(x, nil)
			var cpu int64
			for b.Loop() {
				t0 := threadCPU()
				m.Model.Backbone.Forward(x, nil)
				cpu += threadCPU() - t0
			}
			b.ReportMetric(float64(cpu)/1e6/float64(b.N), "cpu-ms/op")
		})
	}
}

// BenchmarkGeneratedNew times the generated package's constructor: parse
// the embedded blob, dequantize the 8-bit heads, build the detector and
// check and bind the entry points.
func BenchmarkGeneratedNew(b *testing.B) {
	for b.Loop() {
		if _, err := shapesswin.New(); err != nil {
			b.Fatal(err)
		}
	}
}
