package maskrcnn

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/flbq/flbq/runtime/cocomask"
	"github.com/flbq/flbq/runtime/imageio"
)

type goldenCase struct {
	Image                 string
	Orig, Resized, Padded [2]int
	Proposals             []float32
	ProposalScores        []float32 `json:"proposal_scores"`
	Boxes, Scores         []float32
	Labels                []int
	Masks                 [][]uint32
}

type goldens struct {
	Models map[string]map[string]goldenCase
}

func loadGoldens(t testing.TB) *goldens {
	t.Helper()
	b, err := os.ReadFile("testdata/goldens.json")
	if err != nil {
		t.Fatal(err)
	}
	var g goldens
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return &g
}

var (
	detMu    sync.Mutex
	detCache = map[string]*Detector{}
)

func loadDetector(t testing.TB, name string) *Detector {
	t.Helper()
	detMu.Lock()
	defer detMu.Unlock()
	if d := detCache[name]; d != nil {
		return d
	}
	d, err := Load(filepath.Join("testdata", name+".safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	detCache[name] = d
	return d
}

// maxViolation returns the largest |got-want| and whether every element
// satisfies |got-want| <= abs or <= rel·|want|.
func maxViolation(got, want []float32, abs, rel float64) (float64, bool) {
	worst, ok := 0.0, true
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		worst = math.Max(worst, d)
		if !(d <= abs || d <= rel*math.Abs(float64(want[i]))) {
			ok = false
		}
	}
	return worst, ok
}

func sortedKeys[V any](m map[string]V) []string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	return k
}

// TestGoldens: proposals and detections of both backbones match
// torchvision's MaskRCNN (tools/refgen/maskrcnn_fixtures.py).
func TestGoldens(t *testing.T) {
	g := loadGoldens(t)
	if len(g.Models) != 2 {
		t.Fatalf("%d models in the goldens, want 2", len(g.Models))
	}
	for _, mname := range sortedKeys(g.Models) {
		d := loadDetector(t, mname)
		for _, cname := range sortedKeys(g.Models[mname]) {
			c := g.Models[mname][cname]
			t.Run(mname+"/"+cname, func(t *testing.T) {
				img, err := imageio.Load(filepath.Join("testdata", "images", c.Image))
				if err != nil {
					t.Fatal(err)
				}
				out, err := d.DetectRGB(img)
				if err != nil {
					t.Fatal(err)
				}
				checkCase(t, out, c)
			})
		}
	}
}

func checkCase(t *testing.T, out *Output, c goldenCase) {
	t.Helper()
	geo := out.Geometry
	if [2]int{geo.OrigH, geo.OrigW} != c.Orig || [2]int{geo.ResizedH, geo.ResizedW} != c.Resized || [2]int{geo.PaddedH, geo.PaddedW} != c.Padded {
		t.Fatalf("geometry %+v, want orig %v resized %v padded %v", geo, c.Orig, c.Resized, c.Padded)
	}
	// Proposals.
	if len(out.Proposals)*4 != len(c.Proposals) {
		t.Fatalf("%d proposals, want %d", len(out.Proposals), len(c.Proposals)/4)
	}
	var props []float32
	for _, p := range out.Proposals {
		props = append(props, p[:]...)
	}
	pd, ok := maxViolation(props, c.Proposals, 1e-3, 1e-4)
	if !ok {
		t.Errorf("proposals differ by up to %.3g px", pd)
	}
	psd, ok := maxViolation(out.ProposalScores, c.ProposalScores, 1e-4, 0)
	if !ok {
		t.Errorf("proposal scores differ by up to %.3g", psd)
	}
	// Detections.
	dets := out.Detections
	if len(dets) != len(c.Scores) {
		t.Fatalf("%d detections, want %d", len(dets), len(c.Scores))
	}
	var boxes, scores []float32
	for i, det := range dets {
		if det.Label != c.Labels[i] {
			t.Fatalf("detection %d: label %d, want %d", i, det.Label, c.Labels[i])
		}
		boxes = append(boxes, det.Box[:]...)
		scores = append(scores, det.Score)
	}
	bd, ok := maxViolation(boxes, c.Boxes, 1e-3, 1e-4)
	if !ok {
		t.Errorf("boxes differ by up to %.3g px", bd)
	}
	sd, ok := maxViolation(scores, c.Scores, 1e-4, 0)
	if !ok {
		t.Errorf("scores differ by up to %.3g", sd)
	}
	minIoU, diffPx := 1.0, 0
	for i, det := range dets {
		want := cocomask.RLE{H: c.Orig[0], W: c.Orig[1], Counts: c.Masks[i]}
		if err := want.Validate(); err != nil {
			t.Fatalf("golden mask %d: %v", i, err)
		}
		got := det.Mask.RLE()
		if err := got.Validate(); err != nil {
			t.Fatalf("mask %d: %v", i, err)
		}
		wm, gm := want.Decode(), det.Mask.Full()
		var inter, uni int
		for p := range wm {
			if wm[p] != 0 && gm[p] != 0 {
				inter++
			}
			if wm[p] != 0 || gm[p] != 0 {
				uni++
			}
			if (wm[p] != 0) != (gm[p] != 0) {
				diffPx++
			}
		}
		iou := 1.0
		if uni > 0 {
			iou = float64(inter) / float64(uni)
		}
		if iou < 0.99 {
			t.Errorf("mask %d: IoU %.4f < 0.99", i, iou)
		}
		minIoU = math.Min(minIoU, iou)
		if a := det.Mask.Area(); a != int(got.Area()) {
			t.Errorf("mask %d: area %d, RLE area %d", i, a, got.Area())
		}
	}
	t.Logf("%s: %d proposals (max |Δ| %.2g px, scores %.2g), %d detections (max |Δbox| %.2g px, |Δscore| %.2g), masks min IoU %.4f, %d pixels differ",
		fmt.Sprint(c.Orig), len(out.Proposals), pd, psd, len(dets), bd, sd, minIoU, diffPx)
}
