package model_test

import (
	"fmt"
	"math/rand"
	"runtime"
	"testing"
	"time"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/cputime"
	"github.com/flbq/flbq/runtime/imageio"
	"github.com/flbq/flbq/runtime/kernels"
	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/runtime/tensor"
	"github.com/flbq/flbq/tools/data/shapes"
)

// Quantized vs fp32 on the same model and image (issue 8). Each iteration
// runs fp32, then uniform 4-bit, then uniform 3-bit (every backbone linear on
// kernels.QLinear, min–max scales), so the three share the machine's load
// and their ratios come from one run:
//
//	go test ./runtime/model -run '^$' -bench QuantVsFP32 -benchtime 5x -cpu 1,2
//
// Metrics per variant: wall ms per image (<v>-ms) and process CPU ms per
// image (<v>-cpu-ms, user+system of all threads, steadier on a shared
// machine), and fp32 time over quantized time (fp32/<v>, from wall time).
// Cases: the bundled trained detector (tools/models/shapes-swin-t32,
// Swin embed 32, 192×192, a rendered shapes image) and a Swin-T-size
// detector (embed 96, depths 2-2-6-2, random weights, torchvision's default
// heads with box_score_thresh 0) at 512×512.

const bundledModel = "../../tools/models/shapes-swin-t32.safetensors"

const swinTDetector = `{"family":"swin","task":"detection","patch_size":[4,4],"embed_dim":96,"depths":[2,2,6,2],
	"num_heads":[3,6,12,24],"window_size":[7,7],"out_norms":true,"out_channels":256,
	"num_classes":91,"min_size":512,"max_size":1333,"box_score_thresh":0}`

type qop struct{ q *kernels.QLinear }

func (o qop) Forward(dst, x []float32, M int) {
	if err := o.q.Forward(dst, x, M); err != nil {
		panic(err)
	}
}

// variant is one implementation of every quantizable backbone linear.
type variant struct {
	name string
	ops  map[string]nn.LinearOp // nil: fp32
}

func variants(b *testing.B, m *model.Model) []variant {
	vs := []variant{{name: "fp32"}}
	for _, bits := range []int{4, 3} {
		v := variant{name: fmt.Sprintf("q%d", bits), ops: map[string]nn.LinearOp{}}
		for _, l := range m.QuantLayers() {
			q, err := kernels.QuantizeLinear(l.Layer.Weight, l.Out, l.In, qformat.UniformBits(l.Out, bits), qformat.MinMax, l.Layer.Bias)
			if err != nil {
				b.Fatal(err)
			}
			v.ops[l.Name] = qop{q}
		}
		vs = append(vs, v)
	}
	return vs
}

func (v variant) install(b *testing.B, m *model.Model) {
	for _, l := range m.QuantLayers() {
		var op nn.LinearOp
		if v.ops != nil {
			op = v.ops[l.Name]
		}
		if err := m.SetLinearImpl(l.Name, op); err != nil {
			b.Fatal(err)
		}
	}
}

// shapesImage is the pixels of `flbq data shapes -n 1 --seed 7` (RGB is
// planar, so the conversion goes through imageio, not a byte copy).
func shapesImage(size int) *imageio.RGB {
	img, _ := shapes.Render(7, 0, size)
	return imageio.FromImage(img)
}

// compare runs every variant once per iteration (after one warm-up each)
// and reports per-variant wall and CPU times and fp32/variant ratios.
func compare(b *testing.B, m *model.Model, vs []variant, run func() int) {
	wall := make([]time.Duration, len(vs))
	cpu := make([]time.Duration, len(vs))
	dets := make([]int, len(vs))
	for _, v := range vs {
		v.install(b, m)
		run()
	}
	runtime.GC()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k, v := range vs {
			v.install(b, m)
			c0, t0 := cputime.Process(), time.Now()
			dets[k] += run()
			wall[k] += time.Since(t0)
			cpu[k] += cputime.Process() - c0
		}
	}
	b.StopTimer()
	vs[0].install(b, m)
	n := float64(b.N)
	for k, v := range vs {
		b.ReportMetric(wall[k].Seconds()*1e3/n, v.name+"-ms")
		b.ReportMetric(cpu[k].Seconds()*1e3/n, v.name+"-cpu-ms")
		if k > 0 {
			b.ReportMetric(wall[0].Seconds()/wall[k].Seconds(), "fp32/"+v.name)
		}
		if dets[k] > 0 {
			b.ReportMetric(float64(dets[k])/n, v.name+"-dets")
		}
	}
	b.ReportMetric(float64(backend.Threads()), "threads")
}

func BenchmarkQuantVsFP32(b *testing.B) {
	for _, c := range []struct {
		name string
		size int
		load func() (*maskrcnn.Detector, error)
		img  func() *imageio.RGB
	}{
		{"Bundled/192x192", 192, func() (*maskrcnn.Detector, error) { return maskrcnn.Load(bundledModel) },
			func() *imageio.RGB { return shapesImage(192) }},
		{"SwinT/512x512", 512, func() (*maskrcnn.Detector, error) {
			cfg, err := model.ParseConfig([]byte(swinTDetector))
			if err != nil {
				return nil, err
			}
			m, err := model.Build(cfg, model.NewRandomWeights(1))
			if err != nil {
				return nil, err
			}
			return maskrcnn.New(m)
		}, func() *imageio.RGB {
			r := rand.New(rand.NewSource(5))
			img := &imageio.RGB{W: 512, H: 512, Pix: make([]uint8, 3*512*512)}
			for i := range img.Pix {
				img.Pix[i] = uint8(r.Intn(256))
			}
			return img
		}},
	} {
		var d *maskrcnn.Detector
		var vs []variant
		setup := func(b *testing.B) {
			if d != nil {
				return
			}
			var err error
			if d, err = c.load(); err != nil {
				b.Fatal(err)
			}
			vs = variants(b, d.Model)
		}
		b.Run(c.name+"/backbone", func(b *testing.B) {
			setup(b)
			x := tensor.New(1, 3, c.size, c.size)
			r := rand.New(rand.NewSource(3))
			for i := range x.Data {
				x.Data[i] = float32(r.NormFloat64())
			}
			compare(b, d.Model, vs, func() int { d.Model.Backbone.Forward(x, nil); return 0 })
		})
		b.Run(c.name+"/detector", func(b *testing.B) {
			setup(b)
			img := c.img()
			compare(b, d.Model, vs, func() int {
				out, err := d.DetectRGB(img)
				if err != nil {
					b.Fatal(err)
				}
				return len(out.Detections)
			})
		})
	}
}
