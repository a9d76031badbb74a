// Package models_test checks the bundled trained detectors against
// torchvision on held-out images.
package models_test

import (
	"math"
	"testing"

	"github.com/flbq/flbq/runtime/coco"
	"github.com/flbq/flbq/runtime/cocomask"
	"github.com/flbq/flbq/runtime/imageio"
	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/tools/data/shapes"
	"github.com/flbq/flbq/tools/pipeline"
)

// The ViTDet-style model (window attention with padding, global blocks,
// decomposed relative positions, ViTDet's heads) gives torchvision's
// detections on the first three images of the held-out split. Goldens:
//
//	go run ./tools/flbq data shapes --n 3 --seed 2 --size 192 --out /tmp/shapes3
//	/usr/bin/python3 tools/refgen/eval_shapes.py --model tools/models/shapes-vitdet-d128.safetensors \
//	    --data /tmp/shapes3 --out tools/models/testdata/shapes-vitdet-d128.torchvision.json --threads 1
func TestViTDetMatchesTorchvision(t *testing.T) {
	want, err := coco.ReadResults("testdata/shapes-vitdet-d128.torchvision.json")
	if err != nil {
		t.Fatal(err)
	}
	d, err := maskrcnn.Load("shapes-vitdet-d128.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	var got []coco.Result
	for i := 1; i <= 3; i++ {
		img, _ := shapes.Render(2, i-1, 192)
		out, err := d.DetectRGB(imageio.FromImage(img))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, pipeline.Results(int64(i), out.Detections)...)
	}
	if len(got) != len(want) || len(want) < 20 {
		t.Fatalf("%d detections, torchvision %d", len(got), len(want))
	}
	var maxBox, maxScore, minIoU float64 = 0, 0, 1
	for i := range want {
		g, w := got[i], want[i]
		if g.ImageID != w.ImageID || g.CategoryID != w.CategoryID {
			t.Fatalf("detection %d: image %d class %d, torchvision image %d class %d", i, g.ImageID, g.CategoryID, w.ImageID, w.CategoryID)
		}
		for k := range 4 {
			maxBox = math.Max(maxBox, math.Abs(g.BBox[k]-w.BBox[k]))
		}
		maxScore = math.Max(maxScore, math.Abs(g.Score-w.Score))
		gm, err1 := g.Segmentation.ToRLE(192, 192)
		wm, err2 := w.Segmentation.ToRLE(192, 192)
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		minIoU = math.Min(minIoU, cocomask.MaskIoU(gm, wm, g.BBox, w.BBox, false))
	}
	t.Logf("%d detections: max |Δbox| %.2g px, |Δscore| %.2g, min mask IoU %.4f", len(want), maxBox, maxScore, minIoU)
	if maxBox > 1e-3 || maxScore > 1e-5 || minIoU < 0.98 {
		t.Errorf("max |Δbox| %g px (bar 1e-3), |Δscore| %g (bar 1e-5), min mask IoU %g (bar 0.98)", maxBox, maxScore, minIoU)
	}
}
