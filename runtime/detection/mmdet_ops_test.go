package detection

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"testing"
)

// mmdetOps are tools/refgen/mmdet_ops_goldens.py's cases: mmdetection
// v2.25.0's AnchorGenerator, delta2bbox and _do_paste_mask re-implemented
// in torch.
type mmdetOps struct {
	Anchors struct {
		FeatSizes [][2]int    `json:"feat_sizes"`
		Strides   []int       `json:"strides"`
		Sizes     []float64   `json:"sizes"`
		Ratios    []float64   `json:"ratios"`
		Anchors   [][]float32 `json:"anchors"`
	}
	Decode struct {
		RoIs, Deltas, Boxes []float32
		Weights             [4]float64
		Image               [2]int
	}
	Paste []struct {
		Mask, Box, Probs []float32
		Image            [2]int
		Region           [4]int
	}
}

func loadMMDetOps(t *testing.T) *mmdetOps {
	b, err := os.ReadFile("testdata/mmdet_ops_goldens.json")
	if err != nil {
		t.Fatal(err)
	}
	var g mmdetOps
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return &g
}

func maxAbsDiff(t *testing.T, what string, got, want []float32) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	worst := 0.0
	for i := range got {
		worst = math.Max(worst, math.Abs(float64(got[i])-float64(want[i])))
	}
	return worst
}

// TestMMDetAnchors: Unrounded base anchors on fixed strides are
// mmdetection's AnchorGenerator(scales=[8], ratios=[0.5, 1, 2],
// strides=[4..64]), exactly; torchvision's rounding and derived strides
// give other anchors on the same maps.
func TestMMDetAnchors(t *testing.T) {
	g := loadMMDetOps(t).Anchors
	ag := AnchorGenerator{Unrounded: true, Strides: g.Strides}
	for _, s := range g.Sizes {
		ag.Sizes = append(ag.Sizes, []float64{s})
		ag.AspectRatios = append(ag.AspectRatios, g.Ratios)
	}
	// The image the strides would be derived from: 40×52 pads to 64 on the
	// last level's 1×1 map, so torchvision would use 40 // 1 = 40, not 64.
	got, err := ag.Anchors(40, 52, g.FeatSizes)
	if err != nil {
		t.Fatal(err)
	}
	for l := range got {
		if d := maxAbsDiff(t, "anchors", got[l], g.Anchors[l]); d != 0 {
			t.Errorf("level %d: anchors differ by %g", l, d)
		}
	}
	tv := AnchorGenerator{Sizes: ag.Sizes, AspectRatios: ag.AspectRatios}
	other, err := tv.Anchors(40, 52, g.FeatSizes)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxAbsDiff(t, "anchors", other[0], g.Anchors[0]); d == 0 {
		t.Error("torchvision's rounded anchors equal mmdetection's: the case does not test rounding")
	}
	last := len(g.FeatSizes) - 1
	derived, _ := AnchorGenerator{Sizes: ag.Sizes, AspectRatios: ag.AspectRatios, Unrounded: true}.Anchors(40, 52, g.FeatSizes)
	if d := maxAbsDiff(t, "anchors", derived[last-1], g.Anchors[last-1]); d == 0 {
		t.Error("derived strides equal the fixed ones: the case does not test Strides")
	}
	if _, err := (AnchorGenerator{Sizes: ag.Sizes, AspectRatios: ag.AspectRatios, Strides: []int{4}}).Anchors(40, 52, g.FeatSizes); err == nil {
		t.Error("1 stride for 5 levels accepted")
	}
}

// TestMMDetDecode: ClipBelow is delta2bbox's symmetric clamp (deltas with
// raw dw, dh of -30, -25, 24, 22 among them).
func TestMMDetDecode(t *testing.T) {
	g := loadMMDetOps(t).Decode
	c := BoxCoder{Weights: g.Weights, Clip: BboxXformClip, ClipBelow: true}
	got, err := c.Decode(g.Deltas, g.RoIs)
	if err != nil {
		t.Fatal(err)
	}
	if err := ClipBoxesToImage(got, g.Image[0], g.Image[1]); err != nil {
		t.Fatal(err)
	}
	if d := maxAbsDiff(t, "boxes", got, g.Boxes); d > 1e-4 {
		t.Errorf("boxes differ by %g px", d)
	}
	c.ClipBelow = false
	up, _ := c.Decode(g.Deltas, g.RoIs)
	_ = ClipBoxesToImage(up, g.Image[0], g.Image[1])
	if d := maxAbsDiff(t, "boxes", up, g.Boxes); d < 1e-2 {
		t.Errorf("the upper clamp alone gives mmdetection's boxes too (%g): the case does not test the lower clamp", d)
	}
}

// TestMMDetPaste: PasteMaskGridSample is _do_paste_mask (grid_sample) on
// boxes inside, on and past the border, outside, and of zero width.
func TestMMDetPaste(t *testing.T) {
	for i, c := range loadMMDetOps(t).Paste {
		r, err := PasteMaskGridSample(nil, c.Image[0], c.Image[1], c.Mask, 28, c.Box)
		if err != nil {
			t.Fatal(err)
		}
		if got := [4]int{r.X0, r.Y0, r.X1, r.Y1}; got != c.Region {
			if !(r.Empty() && (c.Region[2] <= c.Region[0] || c.Region[3] <= c.Region[1])) {
				t.Errorf("case %d (box %v): region %v, want %v", i, c.Box, got, c.Region)
			}
			continue
		}
		if d := maxAbsDiff(t, "probs", r.Probs, c.Probs); d > 2e-6 {
			t.Errorf("case %d (box %v): probabilities differ by %g", i, c.Box, d)
		}
	}
	if _, err := PasteMaskGridSample(nil, 10, 10, make([]float32, 3), 28, []float32{0, 0, 1, 1}); err == nil {
		t.Error("a mask of 3 values for M=28 accepted")
	}
	for _, s := range []string{"torchvision", "grid_sample"} {
		if p, err := ParseMaskPaste(s); err != nil || p.String() != s {
			t.Errorf("ParseMaskPaste(%q) = %v, %v", s, p, err)
		}
	}
	if _, err := ParseMaskPaste("mmdet"); err == nil {
		t.Error("ParseMaskPaste(mmdet) accepted")
	}
}

// TestDropEmpty: detectron2's detector_postprocess clips the final boxes
// and drops the empty ones with their masks, keeping the order.
func TestDropEmpty(t *testing.T) {
	det := Detections{
		Boxes:  []float32{10, 10, 50, 40, 240, 5, 260, 30, 20, 30, 20, 60, -5, 2, 8, 9},
		Scores: []float32{0.9, 0.8, 0.7, 0.6},
		Labels: []int{1, 2, 3, 4},
	}
	probs := []float32{1, 1, 2, 2, 3, 3, 4, 4}
	got, p := dropEmpty(det, probs, 2, 100, 230)
	if fmt.Sprint(got.Labels) != "[1 4]" || fmt.Sprint(p) != "[1 1 4 4]" || fmt.Sprint(got.Boxes) != "[10 10 50 40 0 2 8 9]" {
		t.Errorf("kept %v %v, probs %v", got.Labels, got.Boxes, p)
	}
}
