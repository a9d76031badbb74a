package detection

import (
	"fmt"
	"math"
)

// RoIHeadsConfig holds RoIHeads' eval-mode post-processing settings.
type RoIHeadsConfig struct {
	ScoreThresh      float64 // box_score_thresh = 0.05 (kept when score > thresh)
	NMSThresh        float64 // box_nms_thresh = 0.5
	DetectionsPerImg int     // box_detections_per_img = 100
	MinSize          float64 // boxes with a side < MinSize are dropped (torchvision: 1e-2; mmdetection: 0)
	// DropEmpty clips the final boxes to the original image and drops
	// those with no area, after the top-k (detectron2's detector_postprocess).
	DropEmpty bool
}

// DefaultRoIHeadsConfig is torchvision MaskRCNN's default.
func DefaultRoIHeadsConfig() RoIHeadsConfig {
	return RoIHeadsConfig{ScoreThresh: 0.05, NMSThresh: 0.5, DetectionsPerImg: 100, MinSize: 1e-2}
}

// Detections are one image's detections: Boxes (n×4, x1y1x2y2), Scores and
// Labels (class index, 1..K-1; 0 is background), in descending score order.
type Detections struct {
	Boxes  []float32
	Scores []float32
	Labels []int
}

// Len is the number of detections.
func (d Detections) Len() int { return len(d.Scores) }

// Softmax returns the row-wise softmax of an n×k matrix (float32, as torch's
// F.softmax(x, -1): exp(x - max) · (1 / Σ)).
func Softmax(x []float32, k int) ([]float32, error) {
	if k <= 0 || len(x)%k != 0 {
		return nil, fmt.Errorf("detection: softmax: %d values in rows of %d", len(x), k)
	}
	out := make([]float32, len(x))
	for r := 0; r < len(x)/k; r++ {
		row, o := x[r*k:(r+1)*k], out[r*k:(r+1)*k]
		m := float32(math.Inf(-1))
		for _, v := range row {
			if v > m || v != v {
				m = v
			}
		}
		var s float32
		for i, v := range row {
			o[i] = float32(math.Exp(float64(v - m)))
			s += o[i]
		}
		inv := 1 / s
		for i := range o {
			o[i] = float32(o[i] * inv)
		}
	}
	return out, nil
}

// PostprocessDetections is RoIHeads.postprocess_detections for one image:
// classLogits n×K, boxRegression n×4K (coder weights (10,10,5,5) unless
// coder says otherwise), proposals n×4, imageH×imageW the resized image
// size. Per class: softmax score, decoded and clipped box; background
// dropped; score > ScoreThresh; boxes smaller than MinSize dropped; NMS per
// class; the DetectionsPerImg best kept.
func PostprocessDetections(classLogits, boxRegression, proposals []float32, numClasses, imageH, imageW int, coder BoxCoder, cfg RoIHeadsConfig) (Detections, error) {
	n, err := checkBoxes("proposals", proposals)
	if err != nil {
		return Detections{}, err
	}
	k := numClasses
	if k < 1 {
		return Detections{}, fmt.Errorf("detection: postprocess: %d classes", k)
	}
	if len(classLogits) != n*k || len(boxRegression) != 4*n*k {
		return Detections{}, fmt.Errorf("detection: postprocess: %d proposals, %d classes: have %d logits (want %d) and %d box deltas (want %d)", n, k, len(classLogits), n*k, len(boxRegression), 4*n*k)
	}
	empty := Detections{Boxes: []float32{}, Scores: []float32{}, Labels: []int{}}
	if n == 0 {
		return empty, nil
	}
	predBoxes, err := coder.Decode(boxRegression, proposals)
	if err != nil {
		return Detections{}, err
	}
	scores, err := Softmax(classLogits, k)
	if err != nil {
		return Detections{}, err
	}
	if err := ClipBoxesToImage(predBoxes, imageH, imageW); err != nil {
		return Detections{}, err
	}
	th := float32(cfg.ScoreThresh)
	var boxes, sc []float32
	var labels []int
	for i := 0; i < n; i++ {
		for c := 1; c < k; c++ {
			s := scores[i*k+c]
			if s > th {
				boxes = append(boxes, predBoxes[(i*k+c)*4:(i*k+c)*4+4]...)
				sc = append(sc, s)
				labels = append(labels, c)
			}
		}
	}
	keep, err := RemoveSmallBoxes(boxes, cfg.MinSize)
	if err != nil {
		return Detections{}, err
	}
	boxes, sc, labels = GatherBoxes(boxes, keep), gather32(sc, keep), gatherInt(labels, keep)
	keep, err = BatchedNMS(boxes, sc, labels, cfg.NMSThresh)
	if err != nil {
		return Detections{}, err
	}
	if cfg.DetectionsPerImg >= 0 && len(keep) > cfg.DetectionsPerImg {
		keep = keep[:cfg.DetectionsPerImg]
	}
	return Detections{Boxes: GatherBoxes(boxes, keep), Scores: gather32(sc, keep), Labels: gatherInt(labels, keep)}, nil
}
