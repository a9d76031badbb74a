package main

import (
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/flbq/flbq/generated/shapesswin"
	"github.com/flbq/flbq/runtime/coco"
	"github.com/flbq/flbq/runtime/imageio"
	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/tools/pipeline"
)

// flbq detect on a generated package's packed weights gives exactly the
// detections of the package's own New().
func TestDetectPackedModel(t *testing.T) {
	img := "../../runtime/maskrcnn/testdata/images/shapes.png"
	out := filepath.Join(t.TempDir(), "dets.json")
	if _, err := runCLI(t, "detect", "--model", "../../generated/shapesswin/weights.bin", "--score-thresh", "0.05", "--out", out, img); err != nil {
		t.Fatal(err)
	}
	got, err := coco.ReadResults(out)
	if err != nil {
		t.Fatal(err)
	}
	qm, err := shapesswin.New()
	if err != nil {
		t.Fatal(err)
	}
	rgb, err := imageio.Load(img)
	if err != nil {
		t.Fatal(err)
	}
	o, err := qm.Detector.WithOptions(maskrcnn.Options{ScoreThresh: 0.05}).DetectRGB(rgb)
	if err != nil {
		t.Fatal(err)
	}
	want := pipeline.Results(1, o.Detections)
	if len(want) == 0 || len(got) != len(want) {
		t.Fatalf("%d detections, the package gives %d", len(got), len(want))
	}
	for i := range want {
		a, _ := json.Marshal(got[i])
		b, _ := json.Marshal(want[i])
		if string(a) != string(b) {
			t.Fatalf("detection %d: %s, the package gives %s", i, a, b)
		}
	}
	// A packed model takes no allocation.
	if _, err := pipeline.LoadDetector("../../generated/shapesswin/weights.bin", "../models/shapes-swin-t32.alloc.json", ""); err == nil {
		t.Error("an allocation was applied to a packed model")
	}
}
