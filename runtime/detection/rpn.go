package detection

import (
	"fmt"
	"math"
	"slices"
)

// RPNConfig holds the RegionProposalNetwork's eval-mode settings.
type RPNConfig struct {
	PreNMSTopN  int     // per level, before NMS (torchvision: rpn_pre_nms_top_n_test = 1000)
	PostNMSTopN int     // per image, after NMS (rpn_post_nms_top_n_test = 1000)
	NMSThresh   float64 // rpn_nms_thresh = 0.7
	ScoreThresh float64 // rpn_score_thresh = 0.0 (kept when sigmoid(objectness) >= thresh)
	// MinSize drops boxes with a side < MinSize (torchvision: 1e-3), or
	// with a side <= MinSize when MinSizeStrict (mmdetection 2.25's
	// min_bbox_size, 0 there: empty boxes go).
	MinSize       float64
	MinSizeStrict bool
}

// DefaultRPNConfig is torchvision MaskRCNN's eval-mode configuration.
func DefaultRPNConfig() RPNConfig {
	return RPNConfig{PreNMSTopN: 1000, PostNMSTopN: 1000, NMSThresh: 0.7, ScoreThresh: 0, MinSize: 1e-3}
}

func sigmoid32(x float32) float32 {
	return float32(1 / (1 + math.Exp(-float64(x))))
}

// FlattenRPNHead converts one image's RPN head outputs to torchvision's
// concat_box_prediction_layers order: for each level l, objectness[l] is
// A×H×W and deltas[l] is (4A)×H×W (CHW, or HWC when ChannelsLast, which
// is already the flattened order); the results are concatenated over
// levels in (y, x, anchor) order — objectness of length ΣH·W·A and deltas of
// 4 times that — together with the number of anchors per level.
func FlattenRPNHead(objectness, deltas []FeatureMap) (obj, del []float32, perLevel []int, err error) {
	if len(objectness) != len(deltas) {
		return nil, nil, nil, fmt.Errorf("detection: rpn head: %d objectness maps, %d delta maps", len(objectness), len(deltas))
	}
	for l := range objectness {
		o, d := objectness[l], deltas[l]
		if err := o.check(); err != nil {
			return nil, nil, nil, fmt.Errorf("detection: rpn objectness level %d: %w", l, err)
		}
		if err := d.check(); err != nil {
			return nil, nil, nil, fmt.Errorf("detection: rpn deltas level %d: %w", l, err)
		}
		a := o.C
		if d.C != 4*a || d.H != o.H || d.W != o.W {
			return nil, nil, nil, fmt.Errorf("detection: rpn level %d: deltas %dx%dx%d do not match objectness %dx%dx%d", l, d.C, d.H, d.W, o.C, o.H, o.W)
		}
		hw := o.H * o.W
		if o.ChannelsLast && d.ChannelsLast {
			obj, del = append(obj, o.Data...), append(del, d.Data...)
			perLevel = append(perLevel, hw*a)
			continue
		}
		if o.ChannelsLast || d.ChannelsLast {
			return nil, nil, nil, fmt.Errorf("detection: rpn level %d: objectness and deltas differ in layout", l)
		}
		for p := 0; p < hw; p++ {
			for k := 0; k < a; k++ {
				obj = append(obj, o.Data[k*hw+p])
				for c := 0; c < 4; c++ {
					del = append(del, d.Data[(4*k+c)*hw+p])
				}
			}
		}
		perLevel = append(perLevel, hw*a)
	}
	return obj, del, perLevel, nil
}

// FilterProposals is RegionProposalNetwork.filter_proposals for one image:
// proposals (n×4, decoded) and objectness logits (n) are concatenated over
// levels with numAnchorsPerLevel entries each; imageH×imageW is the image's
// (resized, unpadded) size. It keeps the PreNMSTopN highest logits per
// level, applies the sigmoid, clips, removes boxes smaller than MinSize,
// keeps probabilities >= ScoreThresh, runs NMS per level and keeps the
// PostNMSTopN best. Returns boxes (m×4) and probabilities (m).
func FilterProposals(proposals, objectness []float32, numAnchorsPerLevel []int, imageH, imageW int, cfg RPNConfig) ([]float32, []float32, error) {
	n, err := checkBoxes("proposals", proposals)
	if err != nil {
		return nil, nil, err
	}
	if len(objectness) != n {
		return nil, nil, fmt.Errorf("detection: filter_proposals: %d objectness values for %d proposals", len(objectness), n)
	}
	total := 0
	for _, c := range numAnchorsPerLevel {
		if c < 0 {
			return nil, nil, fmt.Errorf("detection: filter_proposals: negative anchor count %d", c)
		}
		total += c
	}
	if total != n {
		return nil, nil, fmt.Errorf("detection: filter_proposals: anchors per level sum to %d, have %d proposals", total, n)
	}
	var sel, lvl []int
	off := 0
	for l, c := range numAnchorsPerLevel {
		for _, i := range TopK(objectness[off:off+c], cfg.PreNMSTopN) {
			sel = append(sel, off+i)
			lvl = append(lvl, l)
		}
		off += c
	}
	boxes := GatherBoxes(proposals, sel)
	scores := make([]float32, len(sel))
	for j, i := range sel {
		scores[j] = sigmoid32(objectness[i])
	}
	if err := ClipBoxesToImage(boxes, imageH, imageW); err != nil {
		return nil, nil, err
	}
	keep, _ := RemoveSmallBoxes(boxes, cfg.MinSize)
	if cfg.MinSizeStrict {
		m := float32(cfg.MinSize)
		keep = slices.DeleteFunc(keep, func(i int) bool { return !(boxes[4*i+2]-boxes[4*i] > m && boxes[4*i+3]-boxes[4*i+1] > m) })
	}
	boxes, scores, lvl = GatherBoxes(boxes, keep), gather32(scores, keep), gatherInt(lvl, keep)
	th := float32(cfg.ScoreThresh)
	keep = keep[:0]
	for i, s := range scores {
		if s >= th {
			keep = append(keep, i)
		}
	}
	boxes, scores, lvl = GatherBoxes(boxes, keep), gather32(scores, keep), gatherInt(lvl, keep)
	keep, err = BatchedNMS(boxes, scores, lvl, cfg.NMSThresh)
	if err != nil {
		return nil, nil, err
	}
	if cfg.PostNMSTopN >= 0 && len(keep) > cfg.PostNMSTopN {
		keep = keep[:cfg.PostNMSTopN]
	}
	return GatherBoxes(boxes, keep), gather32(scores, keep), nil
}
