package modelpkg

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/cputime"
	"github.com/flbq/flbq/runtime/imageio"
	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/runtime/qmodel"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/solver"
)

// The whole quantized detector against fp32 on a Swin-T-size Mask R-CNN
// (embed 96, depths 2-2-6-2, torchvision's default heads, 91 classes,
// random weights made in Go and packed as flbq generate packs a model):
//
//	go test ./gen/modelpkg -run '^$' -bench QuantizedDetector -benchtime 2x -cpu 1   # and -cpu 2
//
// Variants, interleaved in every iteration so that they share the
// machine's load: fp32; q4-fp32heads (every backbone linear at uniform 4
// bits, heads as in the source); q4-int8 (the same backbone, pyramid and
// heads at 8 bits on the integer kernels). Metrics per variant: process
// CPU ms per image (<v>-cpu-ms) and wall ms per stage; fp32/<v> is the
// ratio of CPU times. tools/refgen/maskrcnn_bench_torchvision.py times
// PyTorch on the same configuration; with FLBQ_BENCH_MODELS=DIR (its
// --export directory) each case loads that script's model file of the same
// size and threshold instead, so both sides run the same weights and keep
// the same detections.
const benchSwinT = `{"family":"swin","task":"detection","patch_size":[4,4],"embed_dim":96,"depths":[2,2,6,2],
	"num_heads":[3,6,12,24],"window_size":[7,7],"out_norms":true,"out_channels":256,
	"num_classes":91,"min_size":%d,"max_size":1333}`

// randomDetectorFile returns a model file of cfgJSON with random weights.
func randomDetectorFile(b *testing.B, cfgJSON string) *safetensors.File {
	cfg, err := model.ParseConfig([]byte(cfgJSON))
	if err != nil {
		b.Fatal(err)
	}
	w := model.NewRandomWeights(1)
	m, err := model.Build(cfg, w)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := maskrcnn.New(m); err != nil {
		b.Fatal(err)
	}
	blob, err := w.EncodeRandom(map[string]string{safetensors.ConfigKey: cfgJSON})
	if err != nil {
		b.Fatal(err)
	}
	f, err := safetensors.Parse(blob)
	if err != nil {
		b.Fatal(err)
	}
	return f
}

// uniformAlloc gives every quantizable layer of f's model bits bits.
func uniformAlloc(b *testing.B, f *safetensors.File, bits int) *solver.Allocation {
	m, err := model.FromFile(f)
	if err != nil {
		b.Fatal(err)
	}
	a := &solver.Allocation{Solver: "uniform", TargetBits: float64(bits), AvgBits: float64(bits)}
	for _, l := range m.QuantLayers() {
		a.Units = append(a.Units, solver.AllocUnit{UnitID: solver.UnitID{Layer: l.Name}, Channels: [2]int{0, l.Out},
			Weights: int64(l.Out) * int64(l.In), Bits: bits})
	}
	return a
}

func BenchmarkQuantizedDetector(b *testing.B) {
	names := []string{"fp32", "q4-fp32heads", "q4-int8"}
	for _, sz := range [][2]int{{512, 512}, {800, 1216}} {
		var own []*maskrcnn.Detector // Go's random weights, shared by both thresholds
		img := randomImage(sz[0], sz[1])
		for _, thresh := range []float64{0, 0.05} {
			b.Run(fmt.Sprintf("SwinT/%dx%d/score%g", sz[0], sz[1], thresh), func(b *testing.B) {
				var dets []*maskrcnn.Detector
				if dir := os.Getenv("FLBQ_BENCH_MODELS"); dir != "" {
					f, err := safetensors.Open(filepath.Join(dir, fmt.Sprintf("SwinT-%dx%d-score%g.safetensors", sz[0], sz[1], thresh)))
					if err != nil {
						b.Fatal(err)
					}
					dets = detectorVariants(b, f)
				} else {
					if own == nil {
						own = detectorVariants(b, randomDetectorFile(b, fmt.Sprintf(benchSwinT, min(sz[0], sz[1]))))
					}
					dets = own
				}
				vs := make([]*maskrcnn.Detector, len(dets))
				for i, d := range dets {
					vs[i] = d.WithOptions(maskrcnn.Options{ScoreThresh: thresh})
					// Warm-up on the timed image: builds every GEMM and grows
					// the heap and buffer pools to the steady working set (the
					// first image's page faults are not per-image work).
					if _, err := vs[i].DetectRGB(img); err != nil {
						b.Fatal(err)
					}
				}
				cpu := make([]time.Duration, len(vs))
				tm := make([]maskrcnn.Timings, len(vs))
				n := make([]int, len(vs))
				runtime.GC()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					for k, d := range vs {
						c0 := cputime.Process()
						out, err := d.DetectRGB(img)
						if err != nil {
							b.Fatal(err)
						}
						cpu[k] += cputime.Process() - c0
						t := out.Timings
						tm[k].Backbone += t.Backbone
						tm[k].Pyramid += t.Pyramid
						tm[k].RPN += t.RPN
						tm[k].RoIHeads += t.RoIHeads
						tm[k].Masks += t.Masks
						n[k] += len(out.Detections)
					}
				}
				b.StopTimer()
				per := func(d time.Duration) float64 { return d.Seconds() * 1e3 / float64(b.N) }
				for k, v := range names {
					b.ReportMetric(per(cpu[k]), v+"-cpu-ms")
					b.ReportMetric(per(tm[k].Backbone), v+"-backbone-ms")
					b.ReportMetric(per(tm[k].Pyramid), v+"-fpn-ms")
					b.ReportMetric(per(tm[k].RPN), v+"-rpn-ms")
					b.ReportMetric(per(tm[k].RoIHeads), v+"-roi-ms")
					b.ReportMetric(per(tm[k].Masks), v+"-masks-ms")
					b.ReportMetric(float64(n[k])/float64(b.N), v+"-dets")
					if k > 0 {
						b.ReportMetric(cpu[0].Seconds()/cpu[k].Seconds(), "fp32/"+v)
					}
				}
				b.ReportMetric(float64(backend.Threads()), "threads")
			})
		}
	}
}

// detectorVariants returns f's fp32 detector and its uniform-4-bit
// packed forms with fp32 and int8 heads.
func detectorVariants(b *testing.B, f *safetensors.File) []*maskrcnn.Detector {
	fp, err := maskrcnn.New(mustModel(b, f))
	if err != nil {
		b.Fatal(err)
	}
	dets := []*maskrcnn.Detector{fp}
	a := uniformAlloc(b, f, 4)
	for _, h := range []Heads{HeadsFP32, HeadsInt8} {
		blob, layers, err := Pack(f, a, qformat.MSE, h)
		if err != nil {
			b.Fatal(err)
		}
		q, err := qmodel.Load(blob, layers)
		if err != nil {
			b.Fatal(err)
		}
		dets = append(dets, q.Detector)
	}
	return dets
}

func mustModel(b *testing.B, f *safetensors.File) *model.Model {
	m, err := model.FromFile(f)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

func randomImage(h, w int) *imageio.RGB {
	r := rand.New(rand.NewSource(5))
	img := &imageio.RGB{W: w, H: h, Pix: make([]uint8, 3*h*w)}
	for i := range img.Pix {
		img.Pix[i] = uint8(r.Intn(256))
	}
	return img
}
