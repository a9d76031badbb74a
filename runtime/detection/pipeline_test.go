package detection

import (
	"encoding/hex"
	"encoding/json"
	"math"
	"os"
	"testing"
)

type pipelineGolden struct {
	NumClasses int `json:"num_classes"`
	Channels   int
	Cases      []pipelineCase
}

// pipelineCase is one image of the recorded torchvision run.
type pipelineCase struct {
	Orig, Resized, Padded [2]int
	Shapes                [][3]int
	Features              [][]float32
	Objectness, Deltas    [][]float32
	Proposals             []float32
	PooledSums            []float32 `json:"pooled_sums"`
	PooledHead            []float32 `json:"pooled_head"`
	ClassLogits           []float32 `json:"class_logits"`
	BoxRegression         []float32 `json:"box_regression"`
	MaskLogits            []float32 `json:"mask_logits"`
	Boxes, Scores         []float32
	Labels                []int
	Masks                 string
}

// replayHeads returns torchvision's recorded head outputs, checking that
// they are asked for the same number of RoIs.
type replayHeads struct {
	t                      *testing.T
	obj, del               []FeatureMap
	logits, reg, maskLogit []float32
	k                      int
	pooledBox              []float32
}

func (h *replayHeads) RPN([]FeatureMap) ([]FeatureMap, []FeatureMap, error) { return h.obj, h.del, nil }
func (h *replayHeads) Box(pooled []float32, n int) ([]float32, []float32, error) {
	if n*h.k != len(h.logits) {
		h.t.Fatalf("box head asked for %d RoIs, torchvision had %d", n, len(h.logits)/h.k)
	}
	h.pooledBox = pooled
	return h.logits, h.reg, nil
}
func (h *replayHeads) Mask(pooled []float32, n int) ([]float32, error) { return h.maskLogit, nil }

func TestGoldenPipeline(t *testing.T) {
	g := loadPipelineGolden(t)
	for ci, c := range g.Cases {
		feats, heads, cfg, geo := replayCase(t, &g, c)
		res, err := Run(feats, geo, heads, cfg)
		if err != nil {
			t.Fatal(err)
		}
		wp := closeVals(t, "proposals", res.Proposals, c.Proposals, 1e-3, 1e-4)
		// Pooled box features: per-RoI sums and the first RoIs in full.
		per := len(heads.pooledBox) / (len(c.Proposals) / 4)
		sums := make([]float32, len(c.PooledSums))
		for i := range sums {
			var s float64
			for _, v := range heads.pooledBox[i*per : (i+1)*per] {
				s += float64(v)
			}
			sums[i] = float32(s)
		}
		closeVals(t, "pooled sums", sums, c.PooledSums, 1e-4, 1e-4)
		wpool := closeVals(t, "pooled", heads.pooledBox[:len(c.PooledHead)], c.PooledHead, 1e-6, 0)
		if !equalInts(res.Labels, c.Labels) {
			t.Fatalf("labels %v, want %v", res.Labels, c.Labels)
		}
		wb := closeVals(t, "boxes", res.Boxes, c.Boxes, 1e-3, 1e-4)
		ws := closeVals(t, "scores", res.Scores, c.Scores, 1e-4, 0)
		want, _ := hex.DecodeString(c.Masks)
		hw := c.Orig[0] * c.Orig[1]
		minIoU, diffPx := 1.0, 0
		for i := 0; i < res.Len(); i++ {
			var inter, uni int
			for p := 0; p < hw; p++ {
				q := i*hw + p
				wv := want[q/8]>>(7-q%8)&1 == 1
				gv := res.Masks[q] == 1
				if wv && gv {
					inter++
				}
				if wv || gv {
					uni++
				}
				if wv != gv {
					diffPx++
				}
			}
			if uni > 0 {
				minIoU = math.Min(minIoU, float64(inter)/float64(uni))
			}
		}
		if minIoU < 0.99 {
			t.Errorf("mask IoU %v < 0.99", minIoU)
		}
		t.Logf("image %d (%dx%d): %d proposals max |Δ| %.2g px, pooled max |Δ| %.2g, %d detections max |Δbox| %.2g px, max |Δscore| %.2g, masks min IoU %v (%d pixels differ)",
			ci, c.Orig[0], c.Orig[1], len(res.ProposalScores), wp, wpool, res.Len(), wb, ws, minIoU, diffPx)
	}
}

func TestRunErrors(t *testing.T) {
	f := FeatureMap{C: 1, H: 2, W: 2, Data: make([]float32, 4)}
	geo := ImageGeometry{ResizedH: 8, ResizedW: 8, PaddedH: 8, PaddedW: 8, OrigH: 8, OrigW: 8}
	cfg := DefaultConfig(2)
	if _, err := Run([]FeatureMap{f}, geo, &replayHeads{}, cfg); err == nil {
		t.Error("one level: no error")
	}
	if _, err := Run([]FeatureMap{f, f}, ImageGeometry{}, &replayHeads{}, cfg); err == nil {
		t.Error("zero geometry: no error")
	}
	if _, err := Run([]FeatureMap{f, f}, geo, nil, cfg); err == nil {
		t.Error("nil heads: no error")
	}
	bad := FeatureMap{C: 1, H: 2, W: 2, Data: make([]float32, 3)}
	if _, err := Run([]FeatureMap{f, bad}, geo, &replayHeads{}, cfg); err == nil {
		t.Error("bad feature map: no error")
	}
	// Heads whose RPN output does not match the anchor count.
	h := &replayHeads{obj: []FeatureMap{{C: 1, H: 2, W: 2, Data: make([]float32, 4)}, {C: 1, H: 2, W: 2, Data: make([]float32, 4)}},
		del: []FeatureMap{{C: 4, H: 2, W: 2, Data: make([]float32, 16)}, {C: 4, H: 2, W: 2, Data: make([]float32, 16)}}}
	cfg.Anchors = AnchorGenerator{Sizes: [][]float64{{4}, {8}}, AspectRatios: [][]float64{{0.5, 1, 2}, {0.5, 1, 2}}}
	if _, err := Run([]FeatureMap{f, f}, geo, h, cfg); err == nil {
		t.Error("RPN head / anchor mismatch: no error")
	}
}

func loadPipelineGolden(t *testing.T) pipelineGolden {
	t.Helper()
	b, err := os.ReadFile("testdata/detection_pipeline_goldens.json")
	if err != nil {
		t.Fatal(err)
	}
	var g pipelineGolden
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	return g
}

// replayCase sets up Run for one golden case: the recorded features and
// head outputs, and the fixture's configuration.
func replayCase(t *testing.T, g *pipelineGolden, c pipelineCase) ([]FeatureMap, *replayHeads, Config, ImageGeometry) {
	var feats, obj, del []FeatureMap
	for l, s := range c.Shapes {
		feats = append(feats, FeatureMap{C: s[0], H: s[1], W: s[2], Data: c.Features[l]})
		obj = append(obj, FeatureMap{C: 3, H: s[1], W: s[2], Data: c.Objectness[l]})
		del = append(del, FeatureMap{C: 12, H: s[1], W: s[2], Data: c.Deltas[l]})
	}
	heads := &replayHeads{t: t, obj: obj, del: del, logits: c.ClassLogits, reg: c.BoxRegression, maskLogit: c.MaskLogits, k: g.NumClasses}
	cfg := DefaultConfig(g.NumClasses)
	cfg.RPN.PreNMSTopN, cfg.RPN.PostNMSTopN = 300, 60
	cfg.RoI.DetectionsPerImg = 8
	geo := ImageGeometry{ResizedH: c.Resized[0], ResizedW: c.Resized[1], PaddedH: c.Padded[0], PaddedW: c.Padded[1], OrigH: c.Orig[0], OrigW: c.Orig[1]}
	return feats, heads, cfg, geo
}
