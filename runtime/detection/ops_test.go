package detection

import (
	"math"
	"strings"
	"testing"
)

func TestNMSHandComputed(t *testing.T) {
	// Box 0 and 1 overlap with IoU 81/100; box 2 is disjoint. The float32
	// IoU 0.81000000238 compares above the float64 threshold 0.81.
	boxes := []float32{0, 0, 10, 10, 1, 1, 10, 10, 20, 20, 30, 30}
	scores := []float32{0.9, 0.8, 0.7}
	for _, c := range []struct {
		thr  float64
		want []int
	}{{0.5, []int{0, 2}}, {0.81, []int{0, 2}}, {0.8100001, []int{0, 1, 2}}, {0.0, []int{0, 2}}} {
		keep, err := NMS(boxes, scores, c.thr)
		if err != nil || !equalInts(keep, c.want) {
			t.Errorf("thr %v: keep %v (%v), want %v", c.thr, keep, err, c.want)
		}
	}
	// IoU exactly 0.5 is not suppressed (strictly greater suppresses):
	// [0,0,2,1] vs [0,0,1,1]: inter 1, union 2.
	keep, _ := NMS([]float32{0, 0, 2, 1, 0, 0, 1, 1}, []float32{1, 0.5}, 0.5)
	if !equalInts(keep, []int{0, 1}) {
		t.Errorf("IoU == threshold: keep %v, want [0 1]", keep)
	}
	// Equal scores: input order decides (stable sort); lower index wins.
	keep, _ = NMS([]float32{0, 0, 10, 10, 0, 0, 10, 10, 0, 0, 10, 10}, []float32{0.5, 0.5, 0.5}, 0.5)
	if !equalInts(keep, []int{0}) {
		t.Errorf("equal scores: keep %v, want [0]", keep)
	}
	keep, _ = NMS([]float32{0, 0, 10, 10, 0, 0, 10, 10}, []float32{0.5, 0.6}, 0.5)
	if !equalInts(keep, []int{1}) {
		t.Errorf("higher score second: keep %v, want [1]", keep)
	}
	// Zero-area boxes give IoU 0/0 = NaN and never suppress each other.
	keep, _ = NMS([]float32{5, 5, 5, 5, 5, 5, 5, 5}, []float32{1, 1}, 0.1)
	if !equalInts(keep, []int{0, 1}) {
		t.Errorf("degenerate: keep %v, want [0 1]", keep)
	}
	// Empty input.
	keep, err := NMS(nil, nil, 0.5)
	if err != nil || len(keep) != 0 {
		t.Errorf("empty: %v %v", keep, err)
	}
	// Bad shapes are errors, not panics.
	if _, err := NMS([]float32{0, 0, 1}, []float32{1}, 0.5); err == nil {
		t.Error("boxes not a multiple of 4: no error")
	}
	if _, err := NMS([]float32{0, 0, 1, 1}, nil, 0.5); err == nil {
		t.Error("score count mismatch: no error")
	}
}

func TestBatchedNMSHandComputed(t *testing.T) {
	boxes := []float32{0, 0, 10, 10, 0, 0, 10, 10, 1, 1, 10, 10, 50, 50, 60, 60}
	scores := []float32{0.9, 0.8, 0.95, 0.1}
	idxs := []int{1, 2, 1, 2}
	keep, err := BatchedNMS(boxes, scores, idxs, 0.5)
	if err != nil || !equalInts(keep, []int{2, 1, 3}) {
		t.Errorf("coordinate trick: keep %v (%v), want [2 1 3]", keep, err)
	}
	// The vanilla path (> 1000 boxes) agrees on the same problem padded with
	// far-away, well-separated low-score boxes of other classes.
	n := 1100
	big := make([]float32, 0, 4*n)
	bs := make([]float32, 0, n)
	bi := make([]int, 0, n)
	big, bs, bi = append(big, boxes...), append(bs, scores...), append(bi, idxs...)
	for i := 4; i < n; i++ {
		x := float32(100 + 20*i)
		big = append(big, x, 0, x+10, 10)
		bs = append(bs, 0.01*float32(n-i)/float32(n))
		bi = append(bi, 3+i%4)
	}
	keep, err = BatchedNMS(big, bs, bi, 0.5)
	if err != nil || len(keep) != n-1 || !equalInts(keep[:3], []int{2, 1, 3}) {
		t.Errorf("vanilla: %d kept, first %v (%v)", len(keep), head(keep), err)
	}
}

func TestTopK(t *testing.T) {
	got := TopK([]float32{0.1, 0.5, 0.5, float32(math.NaN()), 0.9}, 4)
	if !equalInts(got, []int{3, 4, 1, 2}) {
		t.Errorf("TopK = %v, want [3 4 1 2] (NaN first, ties by index)", got)
	}
	if got := TopK([]float32{1, 2}, 5); !equalInts(got, []int{1, 0}) {
		t.Errorf("k > n: %v", got)
	}
	if got := TopK(nil, 3); len(got) != 0 {
		t.Errorf("empty: %v", got)
	}
}

func TestBoxCoderHandComputed(t *testing.T) {
	// Box [0,0,10,20]: w=10, h=20, centre (5,10).
	box := []float32{0, 0, 10, 20}
	// dx=0.1 → cx=6, dy=-0.25 → cy=5, dw=log 2 → w=20, dh=0 → h=20.
	d, err := RPNBoxCoder().Decode([]float32{0.1, -0.25, float32(math.Ln2), 0}, box)
	if err != nil {
		t.Fatal(err)
	}
	want := []float32{-4, -5, 16, 15}
	for i := range want {
		if math.Abs(float64(d[i]-want[i])) > 1e-5 {
			t.Fatalf("decode = %v, want %v", d, want)
		}
	}
	// RoI weights divide the deltas: (1, -2.5, 5·log2, 0) gives the same box.
	d, _ = RoIBoxCoder().Decode([]float32{1, -2.5, float32(5 * math.Ln2), 0}, box)
	for i := range want {
		if math.Abs(float64(d[i]-want[i])) > 1e-5 {
			t.Fatalf("roi decode = %v, want %v", d, want)
		}
	}
	// dw is clamped at log(1000/16): width 10 → at most 625.
	d, _ = RPNBoxCoder().Decode([]float32{0, 0, 100, 100}, box)
	if w := d[2] - d[0]; math.Abs(float64(w)-625) > 1e-3 {
		t.Errorf("clamped width %v, want 625", w)
	}
	if h := d[3] - d[1]; math.Abs(float64(h)-1250) > 1e-3 {
		t.Errorf("clamped height %v, want 1250", h)
	}
	// Encode inverts decode.
	e, err := RoIBoxCoder().Encode([]float32{-4, -5, 16, 15}, box)
	if err != nil {
		t.Fatal(err)
	}
	we := []float32{1, -2.5, float32(5 * math.Ln2), 0}
	for i := range we {
		if math.Abs(float64(e[i]-we[i])) > 1e-5 {
			t.Fatalf("encode = %v, want %v", e, we)
		}
	}
	// Several predictions per box, empty input, bad shapes.
	d, _ = RPNBoxCoder().Decode(make([]float32, 8), box)
	if len(d) != 8 || d[4] != 0 || d[7] != 20 {
		t.Errorf("k=2 decode = %v", d)
	}
	if d, err := RPNBoxCoder().Decode(nil, nil); err != nil || len(d) != 0 {
		t.Errorf("empty decode: %v %v", d, err)
	}
	if _, err := RPNBoxCoder().Decode(make([]float32, 3), box); err == nil {
		t.Error("bad delta count: no error")
	}
}

func TestClipAndRemoveSmall(t *testing.T) {
	b := []float32{-5, -1, 30, 50, 10, 10, 10.0005, 20, 3, 4, 3.5, 4.5}
	if err := ClipBoxesToImage(b, 40, 20); err != nil {
		t.Fatal(err)
	}
	want := []float32{0, 0, 20, 40, 10, 10, 10.0005, 20, 3, 4, 3.5, 4.5}
	for i := range want {
		if b[i] != want[i] {
			t.Fatalf("clip = %v, want %v", b, want)
		}
	}
	keep, _ := RemoveSmallBoxes(b, 1e-3)
	if !equalInts(keep, []int{0, 2}) {
		t.Errorf("remove small 1e-3: %v, want [0 2]", keep)
	}
	keep, _ = RemoveSmallBoxes(b, 0.5)
	if !equalInts(keep, []int{0, 2}) {
		t.Errorf("remove small 0.5 (>= keeps 0.5): %v, want [0 2]", keep)
	}
}

func TestAnchorsHandComputed(t *testing.T) {
	g := AnchorGenerator{Sizes: [][]float64{{32}}, AspectRatios: [][]float64{{0.5, 1, 2}}}
	cell, err := g.CellAnchors(0)
	if err != nil {
		t.Fatal(err)
	}
	// ratio 0.5: h = sqrt(.5)·32 = 22.63, w = 45.25 → half 22.63/11.31 → round.
	want := []float32{-23, -11, 23, 11, -16, -16, 16, 16, -11, -23, 11, 23}
	for i := range want {
		if cell[i] != want[i] {
			t.Fatalf("cell = %v, want %v", cell, want)
		}
	}
	// Image 10×9 with a 3×2 feature map: strides 10//3 = 3 and 9//2 = 4.
	a, err := g.Anchors(10, 9, [][2]int{{3, 2}})
	if err != nil {
		t.Fatal(err)
	}
	if len(a[0]) != 3*2*3*4 {
		t.Fatalf("%d anchor values", len(a[0]))
	}
	// Location (y=2, x=1), anchor 1: shift (4, 6).
	got := a[0][((2*2+1)*3+1)*4:][:4]
	if got[0] != -12 || got[1] != -10 || got[2] != 20 || got[3] != 22 {
		t.Errorf("anchor = %v, want [-12 -10 20 22]", got)
	}
	if _, err := g.Anchors(10, 9, [][2]int{{0, 2}}); err == nil {
		t.Error("zero feature size: no error")
	}
	if _, err := g.Anchors(10, 9, [][2]int{{1, 1}, {1, 1}}); err == nil {
		t.Error("level count mismatch: no error")
	}
}

func TestRoIAlignHandComputed(t *testing.T) {
	// 1×2×3 map [[0 1 2] [3 4 5]].
	f := FeatureMap{C: 1, H: 2, W: 3, Data: []float32{0, 1, 2, 3, 4, 5}}
	// aligned=true, box [0.5,0.5,1.5,1.5] → ROI [0,0]-[1,1], one sample at
	// (0.5, 0.5) with sampling 1: (0+1+3+4)/4 = 2.
	out, err := RoIAlign(f, []float32{0.5, 0.5, 1.5, 1.5}, RoIAlignParams{PooledH: 1, PooledW: 1, SpatialScale: 1, SamplingRatio: 1, Aligned: true})
	if err != nil || out[0] != 2 {
		t.Errorf("aligned centre sample = %v (%v), want 2", out, err)
	}
	// aligned=false: the ROI is forced to at least 1×1; box [1,0,1,0]
	// samples (0.5, 1.5) → (1+2+4+5)/4 = 3.
	out, _ = RoIAlign(f, []float32{1, 0, 1, 0}, RoIAlignParams{PooledH: 1, PooledW: 1, SpatialScale: 1, SamplingRatio: 1})
	if out[0] != 3 {
		t.Errorf("degenerate box = %v, want 3", out)
	}
	// Sample past the bottom-right corner but within +1: snaps to the last
	// pixel (5). Sample beyond (y > H): contributes 0.
	out, _ = RoIAlign(f, []float32{2.5, 1.5, 3.5, 2.5}, RoIAlignParams{PooledH: 1, PooledW: 1, SpatialScale: 1, SamplingRatio: 1})
	if out[0] != 5 {
		t.Errorf("edge snap = %v, want 5", out)
	}
	out, _ = RoIAlign(f, []float32{0, 2.5, 1, 3.5}, RoIAlignParams{PooledH: 1, PooledW: 1, SpatialScale: 1, SamplingRatio: 1})
	if out[0] != 0 {
		t.Errorf("y > H sample = %v, want 0", out)
	}
	// y in [-1, 0]: clamps to row 0. Box y from -1.5 to -0.5 → sample -1 → row 0.
	out, _ = RoIAlign(f, []float32{0, -1.5, 1, -0.5}, RoIAlignParams{PooledH: 1, PooledW: 1, SpatialScale: 1, SamplingRatio: 1})
	if out[0] != 0.5 {
		t.Errorf("y = -1 sample = %v, want 0.5", out)
	}
	// Adaptive grid: box 0..3 × 0..2 with 1×1 output samples ceil(3)×ceil(2)
	// points at x ∈ {0.5,1.5,2.5}, y ∈ {0.5,1.5}; y=1.5 snaps to row 1.
	out, _ = RoIAlign(f, []float32{0, 0, 3, 2}, RoIAlignParams{PooledH: 1, PooledW: 1, SpatialScale: 1, SamplingRatio: 0})
	// row y=0.5: x=0.5 → 2, 1.5 → 3, 2.5 → x snaps to 2: (2+5)/2 = 3.5; row y=1.5 (snap row 1): 3.5, 4.5, 5.
	want := float32((2 + 3 + 3.5 + 3.5 + 4.5 + 5) / 6.0)
	if math.Abs(float64(out[0]-want)) > 1e-6 {
		t.Errorf("adaptive = %v, want %v", out[0], want)
	}
	// Empty boxes, bad inputs.
	if out, err := RoIAlign(f, nil, RoIAlignParams{PooledH: 7, PooledW: 7, SpatialScale: 1, SamplingRatio: 2}); err != nil || len(out) != 0 {
		t.Errorf("empty: %v %v", out, err)
	}
	if _, err := RoIAlign(FeatureMap{C: 1, H: 2, W: 2, Data: make([]float32, 3)}, []float32{0, 0, 1, 1}, RoIAlignParams{PooledH: 1, PooledW: 1, SamplingRatio: 1}); err == nil {
		t.Error("bad feature shape: no error")
	}
	if _, err := RoIAlign(f, []float32{0, 0, float32(math.Inf(1)), 1}, RoIAlignParams{PooledH: 1, PooledW: 1, SpatialScale: 1}); err == nil || !strings.Contains(err.Error(), "non-finite") {
		t.Errorf("infinite box with adaptive grid: %v", err)
	}
	if out, err := RoIAlign(f, []float32{float32(math.NaN()), 0, 1, 1}, RoIAlignParams{PooledH: 2, PooledW: 2, SpatialScale: 1, SamplingRatio: 2}); err != nil || len(out) != 4 {
		t.Errorf("NaN box: %v %v", out, err)
	}
}

func TestLevelMapper(t *testing.T) {
	m := LevelMapper{KMin: 2, KMax: 5, CanonicalScale: 224, CanonicalLevel: 4, Eps: 1e-6}
	boxes := []float32{0, 0, 224, 224, 0, 0, 112, 112, 0, 0, 111.9, 111.9, 0, 0, 1000, 1000, 0, 0, 1, 1, 0, 0, 0, 0}
	lv, err := m.Levels(boxes)
	if err != nil || !equalInts(lv, []int{2, 1, 0, 3, 0, 0}) {
		t.Errorf("levels %v (%v), want [2 1 0 3 0 0]", lv, err)
	}
	if s := InferScale(25, 100); s != 0.25 {
		t.Errorf("InferScale(25,100) = %v", s)
	}
	if s := InferScale(13, 100); s != 0.125 {
		t.Errorf("InferScale(13,100) = %v (log2 .13 = -2.94 → -3)", s)
	}
}

func TestPostprocessHandComputed(t *testing.T) {
	// Two proposals, three classes, zero regression: boxes are the proposals.
	props := []float32{0, 0, 10, 10, 1, 1, 10, 10}
	logits := []float32{0, 2, 1, 0, 1, 3}
	reg := make([]float32, 2*4*3)
	d, err := PostprocessDetections(logits, reg, props, 3, 20, 20, RoIBoxCoder(), RoIHeadsConfig{ScoreThresh: 0.2, NMSThresh: 0.5, DetectionsPerImg: 10, MinSize: 1e-2})
	if err != nil {
		t.Fatal(err)
	}
	// softmax row0: [.090 .665 .245], row1: [.042 .114 .844].
	// Class 2 boxes overlap (IoU .81): row1's .844 wins over row0's .245.
	if !equalInts(d.Labels, []int{2, 1}) || math.Abs(float64(d.Scores[0])-0.8437947) > 1e-6 || math.Abs(float64(d.Scores[1])-0.6652409) > 1e-6 {
		t.Errorf("detections %+v", d)
	}
	d, err = PostprocessDetections(nil, nil, nil, 3, 20, 20, RoIBoxCoder(), DefaultRoIHeadsConfig())
	if err != nil || d.Len() != 0 || d.Boxes == nil {
		t.Errorf("empty: %+v %v", d, err)
	}
	if _, err := PostprocessDetections(logits[:5], reg, props, 3, 20, 20, RoIBoxCoder(), DefaultRoIHeadsConfig()); err == nil {
		t.Error("short logits: no error")
	}
}

func TestPasteMaskHandComputed(t *testing.T) {
	// A 2×2 mask of ones, box [2,2,5,5] in a 8×8 image. Padding 1 gives a
	// 4×4 padded mask, scale 2: expanded box [0.5,0.5,6.5,6.5] → [0,0,6,6],
	// resized to 7×7 and pasted at (0,0)..(6,6).
	mask := []float32{1, 1, 1, 1}
	dst := make([]float32, 64)
	if err := PasteMaskInImage(dst, 8, 8, mask, 2, []float32{2, 2, 5, 5}, 1); err != nil {
		t.Fatal(err)
	}
	// Resize 4→7: scale 4/7; output 3 → src (3.5·4/7 − .5) = 1.5 → inside the
	// ones: 1. Output 0 → src clamps to 0 → padded zero. Row/col 7 untouched.
	if dst[3*8+3] != 1 || dst[0] != 0 || dst[7*8+3] != 0 || dst[3*8+7] != 0 {
		t.Errorf("pasted:\n%v", dst)
	}
	// Output 1: src = 1.5·4/7 − .5 = 0.357: 0.357 of padded[1]=1.
	if got := dst[3*8+1]; math.Abs(float64(got)-0.35714287) > 1e-6 {
		t.Errorf("edge value %v, want 0.357", got)
	}
	// A box hanging off the image is cropped; one entirely outside changes nothing.
	dst2 := make([]float32, 64)
	if err := PasteMaskInImage(dst2, 8, 8, mask, 2, []float32{-3, -3, 1, 1}, 1); err != nil {
		t.Fatal(err)
	}
	if dst2[0] == 0 || dst2[63] != 0 {
		t.Errorf("partly outside: %v", dst2)
	}
	dst3 := make([]float32, 64)
	if err := PasteMaskInImage(dst3, 8, 8, mask, 2, []float32{20, 20, 30, 30}, 1); err != nil {
		t.Fatal(err)
	}
	for _, v := range dst3 {
		if v != 0 {
			t.Fatal("box outside the image wrote pixels")
		}
	}
	// Empty, invalid.
	if out, err := PasteMasksInImage(nil, 28, nil, 10, 10); err != nil || len(out) != 0 {
		t.Errorf("empty: %v %v", out, err)
	}
	if _, err := PasteMasksInImage(make([]float32, 4), 2, []float32{float32(math.NaN()), 0, 1, 1}, 8, 8); err == nil {
		t.Error("NaN box: no error")
	}
	if _, err := PasteMasksInImage(make([]float32, 3), 2, []float32{0, 0, 1, 1}, 8, 8); err == nil {
		t.Error("short mask: no error")
	}
	b := BinarizeMasks([]float32{0.5, 0.50001, 0.2}, 0.5)
	if b[0] != 0 || b[1] != 1 || b[2] != 0 {
		t.Errorf("binarize %v", b)
	}
}

func TestMaskProbsAndResize(t *testing.T) {
	logits := []float32{0, 0, 0, 0, 2, 2, 2, 2} // 1 mask × 2 classes × 2×2
	p, err := MaskProbs(logits, []int{1}, 2, 2)
	if err != nil || math.Abs(float64(p[0])-0.8807971) > 1e-6 {
		t.Errorf("mask probs %v %v", p, err)
	}
	if _, err := MaskProbs(logits, []int{2}, 2, 2); err == nil {
		t.Error("label out of range: no error")
	}
	b := []float32{10, 20, 30, 40}
	if err := ResizeBoxes(b, 100, 200, 50, 300); err != nil || b[0] != 15 || b[1] != 10 || b[2] != 45 || b[3] != 20 {
		t.Errorf("resize %v %v", b, err)
	}
}

func TestFilterProposalsErrors(t *testing.T) {
	cfg := DefaultRPNConfig()
	if _, _, err := FilterProposals(make([]float32, 8), make([]float32, 2), []int{3}, 10, 10, cfg); err == nil {
		t.Error("level sum mismatch: no error")
	}
	b, s, err := FilterProposals(nil, nil, []int{0, 0}, 10, 10, cfg)
	if err != nil || len(b) != 0 || len(s) != 0 {
		t.Errorf("empty: %v %v %v", b, s, err)
	}
}
