package maskrcnn

import (
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/cputime"
	"github.com/flbq/flbq/runtime/imageio"
	"github.com/flbq/flbq/runtime/model"
)

// Real-size configurations with random weights (generated in Go, never
// stored): torchvision MaskRCNN's heads and settings (91 classes, 1000
// proposals), except box_score_thresh 0 so that every image keeps the full
// 100 detections and the mask branch runs at its worst case. min_size is
// set to the benchmark image's short side so the network sees exactly
// that size. tools/refgen/maskrcnn_bench_torchvision.py times the same.
const (
	benchSwinT = `{"family":"swin","task":"detection","patch_size":[4,4],"embed_dim":96,"depths":[2,2,6,2],
		"num_heads":[3,6,12,24],"window_size":[7,7],"out_norms":true,"out_channels":256`
	benchViTB = `{"family":"vit","task":"detection","patch_size":16,"image_size":224,"num_layers":12,"num_heads":12,
		"hidden_dim":768,"mlp_dim":3072,"out_channels":256`
)

func benchDetector(b *testing.B, cfgJSON string, minSize int) *Detector {
	js := fmt.Sprintf(`%s,"num_classes":91,"min_size":%d,"max_size":1333,"box_score_thresh":0}`, cfgJSON, minSize)
	cfg, err := model.ParseConfig([]byte(js))
	if err != nil {
		b.Fatal(err)
	}
	m, err := model.Build(cfg, model.NewRandomWeights(1))
	if err != nil {
		b.Fatal(err)
	}
	d, err := New(m)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

func randomRGB(h, w int) *imageio.RGB {
	r := rand.New(rand.NewSource(5))
	img := &imageio.RGB{W: w, H: h, Pix: make([]uint8, 3*h*w)}
	for i := range img.Pix {
		img.Pix[i] = uint8(r.Intn(256))
	}
	return img
}

// BenchmarkDetector times the whole fp32 detector (preprocessing to pasted
// masks) and reports each stage's share of the time.
//
//	go test ./runtime/maskrcnn -run '^$' -bench Detector -benchtime 1x
func BenchmarkDetector(b *testing.B) {
	for _, mc := range []struct{ name, cfg string }{{"SwinT", benchSwinT}, {"ViTB", benchViTB}} {
		for _, sz := range [][2]int{{512, 512}, {800, 1216}} {
			b.Run(fmt.Sprintf("%s/%dx%d", mc.name, sz[0], sz[1]), func(b *testing.B) {
				d := benchDetector(b, mc.cfg, min(sz[0], sz[1]))
				// Warm-up on a small image: packs every layer's weights once.
				if _, err := d.DetectRGB(randomRGB(160, 160)); err != nil {
					b.Fatal(err)
				}
				img := randomRGB(sz[0], sz[1])
				var tm Timings
				dets := 0
				cpu0 := cputime.Process()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					out, err := d.DetectRGB(img)
					if err != nil {
						b.Fatal(err)
					}
					t := out.Timings
					tm.Preprocess += t.Preprocess
					tm.Backbone += t.Backbone
					tm.Pyramid += t.Pyramid
					tm.RPN += t.RPN
					tm.RoIHeads += t.RoIHeads
					tm.Masks += t.Masks
					dets += len(out.Detections)
				}
				b.StopTimer()
				cpu := cputime.Process() - cpu0
				total := tm.Total().Seconds()
				share := func(x time.Duration) float64 { return 100 * x.Seconds() / total }
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "images/s")
				b.ReportMetric(share(tm.Preprocess), "%preproc")
				b.ReportMetric(share(tm.Backbone), "%backbone")
				b.ReportMetric(share(tm.Pyramid), "%fpn")
				b.ReportMetric(share(tm.RPN), "%rpn")
				b.ReportMetric(share(tm.RoIHeads), "%roi_heads")
				b.ReportMetric(share(tm.Masks), "%masks")
				b.ReportMetric(float64(dets)/float64(b.N), "dets/img")
				// Process CPU time: a load-independent measure of the work on a
				// shared machine (with one thread it is the single-core time).
				b.ReportMetric(cpu.Seconds()/float64(b.N), "cpu-s/img")
				b.ReportMetric(float64(backend.Threads()), "threads")
			})
		}
	}
}
