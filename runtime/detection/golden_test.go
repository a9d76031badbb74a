package detection

import (
	"encoding/json"
	"math"
	"os"
	"sync"
	"testing"
)

// Goldens from tools/refgen/detection_ops_goldens.py (torchvision 0.14).
type goldenFile struct {
	Torch       string `json:"torch"`
	Torchvision string `json:"torchvision"`
	NMS         []struct {
		Name   string
		Boxes  []float32
		Scores []float32
		Thr    float64
		Keep   []int
	} `json:"nms"`
	BatchedNMS []struct {
		Name   string
		Boxes  []float32
		Scores []float32
		Idxs   []int
		Thr    float64
		Keep   []int
	} `json:"batched_nms"`
	Coder []struct {
		Weights   [4]float64
		Boxes     []float32
		Deltas    []float32
		K         int
		Decoded   []float32
		Reference []float32
		Encoded   []float32
	} `json:"coder"`
	Anchors []struct {
		Name    string
		Sizes   [][]float64
		Ratios  [][]float64
		Image   [2]int
		Feats   [][2]int
		Cell    [][]float32
		Anchors []float32
	} `json:"anchors"`
	RPN []struct {
		Name        string
		Image       [2]int
		Padded      [2]int
		Feats       [][2]int
		Pre, Post   int
		ScoreThresh float64 `json:"score_thresh"`
		NMSThresh   float64 `json:"nms_thresh"`
		Objectness  [][]float32
		Deltas      [][]float32
		Boxes       []float32
		Scores      []float32
	} `json:"rpn"`
	RoIAlign struct {
		Feat  []float32
		Shape [3]int
		Cases []struct {
			Scale         float32
			SamplingRatio int `json:"sampling_ratio"`
			Aligned       bool
			Out           [2]int
			Boxes         []float32
			Result        []float32
		}
	} `json:"roi_align"`
	Multiscale []struct {
		Image          [2]int
		Shapes         [][2]int
		Channels       int
		CanonicalScale int `json:"canonical_scale"`
		Feats          [][]float32
		Out            int
		Boxes          []float32
		Levels         []int
		Scales         []float64
		Result         []float32
	} `json:"multiscale"`
	Postprocess []struct {
		Name        string
		Image       [2]int
		K           int
		ScoreThresh float64 `json:"score_thresh"`
		NMSThresh   float64 `json:"nms_thresh"`
		Det         int
		Proposals   []float32
		Logits      []float32
		Regression  []float32
		Boxes       []float32
		Scores      []float32
		Labels      []int
	} `json:"postprocess"`
	Paste []struct {
		Resized      [2]int
		Orig         [2]int
		Boxes        []float32
		Labels       []int
		Probs        []float32
		ResizedBoxes []float32 `json:"resized_boxes"`
		Pasted       []float32
	} `json:"paste"`
}

var (
	goldenOnce sync.Once
	golden     goldenFile
	goldenErr  error
)

func loadGolden(t *testing.T) *goldenFile {
	t.Helper()
	goldenOnce.Do(func() {
		b, err := os.ReadFile("testdata/detection_ops_goldens.json")
		if err != nil {
			goldenErr = err
			return
		}
		goldenErr = json.Unmarshal(b, &golden)
	})
	if goldenErr != nil {
		t.Fatalf("goldens: %v", goldenErr)
	}
	return &golden
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// closeBoxes checks |a-b| <= 1e-3 + 1e-4·|b| per coordinate and returns the max |Δ|.
func closeVals(t *testing.T, what string, got, want []float32, abs, rel float64) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	worst := 0.0
	bad := 0
	for i := range got {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		worst = math.Max(worst, d)
		if d > abs+rel*math.Abs(float64(want[i])) || math.IsNaN(d) {
			if bad < 5 {
				t.Errorf("%s[%d] = %v, want %v", what, i, got[i], want[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values out of tolerance", what, bad, len(got))
	}
	return worst
}

func TestGoldenNMS(t *testing.T) {
	g := loadGolden(t)
	for _, c := range g.NMS {
		keep, err := NMS(c.Boxes, c.Scores, c.Thr)
		if err != nil {
			t.Fatal(err)
		}
		if !equalInts(keep, c.Keep) {
			t.Errorf("nms %s: got %d kept %v…, want %d %v…", c.Name, len(keep), head(keep), len(c.Keep), head(c.Keep))
		}
	}
	for _, c := range g.BatchedNMS {
		keep, err := BatchedNMS(c.Boxes, c.Scores, c.Idxs, c.Thr)
		if err != nil {
			t.Fatal(err)
		}
		if !equalInts(keep, c.Keep) {
			t.Errorf("batched_nms %s: got %d kept %v…, want %d %v…", c.Name, len(keep), head(keep), len(c.Keep), head(c.Keep))
		}
	}
}

func head(v []int) []int {
	if len(v) > 12 {
		return v[:12]
	}
	return v
}

func TestGoldenBoxCoder(t *testing.T) {
	g := loadGolden(t)
	for _, c := range g.Coder {
		bc := BoxCoder{Weights: c.Weights, Clip: BboxXformClip}
		dec, err := bc.Decode(c.Deltas, c.Boxes)
		if err != nil {
			t.Fatal(err)
		}
		w := closeVals(t, "decode", dec, c.Decoded, 1e-3, 1e-4)
		enc, err := bc.Encode(c.Reference, c.Boxes)
		if err != nil {
			t.Fatal(err)
		}
		w2 := closeVals(t, "encode", enc, c.Encoded, 1e-5, 1e-5)
		t.Logf("weights %v: decode max |Δ| %.3g px, encode max |Δ| %.3g", c.Weights, w, w2)
	}
}

func TestGoldenAnchors(t *testing.T) {
	g := loadGolden(t)
	for _, c := range g.Anchors {
		ag := AnchorGenerator{Sizes: c.Sizes, AspectRatios: c.Ratios}
		for l := range c.Cell {
			cell, err := ag.CellAnchors(l)
			if err != nil {
				t.Fatal(err)
			}
			closeVals(t, c.Name+" cell", cell, c.Cell[l], 0, 0)
		}
		per, err := ag.Anchors(c.Image[0], c.Image[1], c.Feats)
		if err != nil {
			t.Fatal(err)
		}
		var all []float32
		for _, a := range per {
			all = append(all, a...)
		}
		closeVals(t, c.Name+" anchors", all, c.Anchors, 0, 0)
	}
}

func TestGoldenRPNFilterProposals(t *testing.T) {
	g := loadGolden(t)
	ag := DefaultAnchorGenerator()
	for _, c := range g.RPN {
		var obj, del []FeatureMap
		for l, f := range c.Feats {
			obj = append(obj, FeatureMap{C: 3, H: f[0], W: f[1], Data: c.Objectness[l]})
			del = append(del, FeatureMap{C: 12, H: f[0], W: f[1], Data: c.Deltas[l]})
		}
		o, d, per, err := FlattenRPNHead(obj, del)
		if err != nil {
			t.Fatal(err)
		}
		anchors, err := ag.Anchors(c.Padded[0], c.Padded[1], c.Feats)
		if err != nil {
			t.Fatal(err)
		}
		var all []float32
		for _, a := range anchors {
			all = append(all, a...)
		}
		props, err := RPNBoxCoder().Decode(d, all)
		if err != nil {
			t.Fatal(err)
		}
		cfg := RPNConfig{PreNMSTopN: c.Pre, PostNMSTopN: c.Post, NMSThresh: c.NMSThresh, ScoreThresh: c.ScoreThresh, MinSize: 1e-3}
		boxes, scores, err := FilterProposals(props, o, per, c.Image[0], c.Image[1], cfg)
		if err != nil {
			t.Fatal(err)
		}
		if len(scores) != len(c.Scores) {
			t.Fatalf("rpn %s: %d proposals, want %d", c.Name, len(scores), len(c.Scores))
		}
		wb := closeVals(t, "rpn "+c.Name+" boxes", boxes, c.Boxes, 1e-3, 1e-4)
		ws := closeVals(t, "rpn "+c.Name+" scores", scores, c.Scores, 1e-4, 0)
		t.Logf("rpn %s: %d proposals, max |Δbox| %.3g px, max |Δscore| %.3g", c.Name, len(scores), wb, ws)
	}
}

func TestGoldenRoIAlign(t *testing.T) {
	g := loadGolden(t)
	ra := g.RoIAlign
	feat := FeatureMap{C: ra.Shape[0], H: ra.Shape[1], W: ra.Shape[2], Data: ra.Feat}
	worst := 0.0
	for _, c := range ra.Cases {
		got, err := RoIAlign(feat, c.Boxes, RoIAlignParams{PooledH: c.Out[0], PooledW: c.Out[1], SpatialScale: c.Scale, SamplingRatio: c.SamplingRatio, Aligned: c.Aligned})
		if err != nil {
			t.Fatal(err)
		}
		worst = math.Max(worst, closeVals(t, "roi_align", got, c.Result, 1e-6, 0))
	}
	t.Logf("roi_align: %d cases, max |Δ| %.3g", len(ra.Cases), worst)
}

func TestGoldenMultiScaleRoIAlign(t *testing.T) {
	g := loadGolden(t)
	for _, c := range g.Multiscale {
		var feats []FeatureMap
		for l, s := range c.Shapes {
			feats = append(feats, FeatureMap{C: c.Channels, H: s[0], W: s[1], Data: c.Feats[l]})
		}
		m := MultiScaleRoIAlign{OutputSize: c.Out, SamplingRatio: 2, CanonicalScale: c.CanonicalScale, CanonicalLevel: 4}
		scales, mapper, err := m.Scales(feats, c.Image[0], c.Image[1])
		if err != nil {
			t.Fatal(err)
		}
		for i := range scales {
			if float64(scales[i]) != c.Scales[i] {
				t.Errorf("scale %d = %v, want %v", i, scales[i], c.Scales[i])
			}
		}
		lv, err := mapper.Levels(c.Boxes)
		if err != nil {
			t.Fatal(err)
		}
		if !equalInts(lv, c.Levels) {
			t.Errorf("levels %v, want %v", lv, c.Levels)
		}
		got, err := m.Apply(feats, c.Boxes, c.Image[0], c.Image[1])
		if err != nil {
			t.Fatal(err)
		}
		w := closeVals(t, "multiscale", got, c.Result, 1e-6, 0)
		t.Logf("multiscale canonical %d: max |Δ| %.3g", c.CanonicalScale, w)
	}
}

func TestGoldenPostprocessDetections(t *testing.T) {
	g := loadGolden(t)
	for _, c := range g.Postprocess {
		cfg := RoIHeadsConfig{ScoreThresh: c.ScoreThresh, NMSThresh: c.NMSThresh, DetectionsPerImg: c.Det, MinSize: 1e-2}
		d, err := PostprocessDetections(c.Logits, c.Regression, c.Proposals, c.K, c.Image[0], c.Image[1], RoIBoxCoder(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !equalInts(d.Labels, c.Labels) {
			t.Fatalf("%s: labels %v, want %v", c.Name, d.Labels, c.Labels)
		}
		wb := closeVals(t, c.Name+" boxes", d.Boxes, c.Boxes, 1e-3, 1e-4)
		ws := closeVals(t, c.Name+" scores", d.Scores, c.Scores, 1e-4, 0)
		t.Logf("postprocess %s: %d detections, max |Δbox| %.3g px, max |Δscore| %.3g", c.Name, d.Len(), wb, ws)
	}
}

func TestGoldenPasteMasks(t *testing.T) {
	g := loadGolden(t)
	for _, c := range g.Paste {
		boxes := append([]float32(nil), c.Boxes...)
		if err := ResizeBoxes(boxes, c.Resized[0], c.Resized[1], c.Orig[0], c.Orig[1]); err != nil {
			t.Fatal(err)
		}
		closeVals(t, "resized boxes", boxes, c.ResizedBoxes, 0, 0)
		got, err := PasteMasksInImage(c.Probs, 28, boxes, c.Orig[0], c.Orig[1])
		if err != nil {
			t.Fatal(err)
		}
		w := closeVals(t, "pasted", got, c.Pasted, 1e-6, 0)
		hw := c.Orig[0] * c.Orig[1]
		gb, wb := BinarizeMasks(got, 0.5), BinarizeMasks(c.Pasted, 0.5)
		minIoU := 1.0
		for i := 0; i < len(c.Labels); i++ {
			var inter, uni int
			for p := i * hw; p < (i+1)*hw; p++ {
				if gb[p] == 1 && wb[p] == 1 {
					inter++
				}
				if gb[p] == 1 || wb[p] == 1 {
					uni++
				}
			}
			iou := 1.0
			if uni > 0 {
				iou = float64(inter) / float64(uni)
			}
			minIoU = math.Min(minIoU, iou)
		}
		if minIoU < 0.99 {
			t.Errorf("pasted binary mask IoU %v < 0.99", minIoU)
		}
		t.Logf("paste: max |Δprob| %.3g, min binary IoU %v", w, minIoU)
	}
}
