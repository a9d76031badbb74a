package detection

import (
	"errors"
	"fmt"

	"github.com/flbq/flbq/runtime/nn"
)

// Heads computes the learned parts of a Mask R-CNN for one image; Run
// supplies everything between them (anchors, proposal filtering, RoI
// pooling, post-processing, mask pasting). Implementations must be safe for
// concurrent use if Run is called concurrently.
type Heads interface {
	// RPN returns, per pyramid level, objectness (A×H×W) and box deltas
	// (4A×H×W) — torchvision's RPNHead.
	RPN(features []FeatureMap) (objectness, deltas []FeatureMap, err error)
	// Box maps pooled box features (n×C×7×7) to class logits (n×K) and box
	// regression (n×4K) — TwoMLPHead + FastRCNNPredictor.
	Box(pooled []float32, n int) (classLogits, boxRegression []float32, err error)
	// Mask maps pooled mask features (n×C×14×14) to mask logits (n×K×M×M)
	// — MaskRCNNHeads + MaskRCNNPredictor. Nil for a Faster R-CNN.
	Mask(pooled []float32, n int) (maskLogits []float32, err error)
}

// LabelMasker is an optional extension of Heads: the mask logits of each
// RoI's predicted class only (n×M×M, labels[i] in [0, K)), sparing the
// K-1 maps per RoI that maskrcnn_inference discards. Run uses it when the
// heads implement it.
type LabelMasker interface {
	MaskLabels(pooled []float32, n int, labels []int) (maskLogits []float32, err error)
}

// Config is the non-learned configuration of a Mask R-CNN.
type Config struct {
	NumClasses int // including background
	Anchors    AnchorGenerator
	RPN        RPNConfig
	RoI        RoIHeadsConfig
	BoxPool    MultiScaleRoIAlign
	MaskPool   MultiScaleRoIAlign
	MaskSize   int       // M of the mask predictor's output (28)
	MaskThresh float32   // binarisation threshold of pasted masks (0.5)
	MaskPaste  MaskPaste // how masks are pasted and binarised (torchvision's way)
	// DeltaClipBelow clamps box deltas dw, dh from below too (mmdetection).
	DeltaClipBelow bool
	NoMasks        bool // skip the mask branch
	// CropMasks makes Run return each binary mask cropped to the pixels
	// its box can cover (Result.MaskCrops) instead of full images
	// (Result.Masks): the same masks in O(box area) memory.
	CropMasks bool
	// Trace, when set, is called as each stage starts (StageRPN,
	// StageRoIHeads, StageMasks) and once more with StageDone.
	Trace func(Stage)
}

// Stage names a part of Run for Config.Trace.
type Stage int

// Stages of Run in order.
const (
	StageRPN      Stage = iota // RPN head, anchors, proposal filtering
	StageRoIHeads              // box RoI pooling, box head, post-processing
	StageMasks                 // mask RoI pooling, mask head, pasting
	StageDone
)

// String names the stage.
func (s Stage) String() string {
	switch s {
	case StageRPN:
		return "rpn"
	case StageRoIHeads:
		return "roi_heads"
	case StageMasks:
		return "masks"
	case StageDone:
		return "done"
	}
	return fmt.Sprintf("Stage(%d)", int(s))
}

func (c *Config) trace(s Stage) {
	if c.Trace != nil {
		c.Trace(s)
	}
}

// BinaryMask is one instance mask of an OrigH×OrigW image cropped to the
// rectangle [X0, X1) × [Y0, Y1): Pix ((Y1-Y0)×(X1-X0), row-major) is 1
// where the pasted probability exceeds the threshold; every pixel outside
// the rectangle is 0. The rectangle is empty when the box lies outside
// the image.
type BinaryMask struct {
	X0, Y0, X1, Y1 int
	Pix            []uint8
}

// DefaultConfig is torchvision MaskRCNN's eval-mode configuration.
func DefaultConfig(numClasses int) Config {
	return Config{
		NumClasses: numClasses, Anchors: DefaultAnchorGenerator(), RPN: DefaultRPNConfig(), RoI: DefaultRoIHeadsConfig(),
		BoxPool: BoxRoIPool, MaskPool: MaskRoIPool, MaskSize: 28, MaskThresh: 0.5,
	}
}

// ImageGeometry describes one image through GeneralizedRCNNTransform.
type ImageGeometry struct {
	ResizedH, ResizedW int // after resizing (image_sizes)
	PaddedH, PaddedW   int // the padded tensor the backbone saw
	OrigH, OrigW       int // the original image
}

// Result is one image's output.
type Result struct {
	Proposals      []float32 // m×4, resized-image coordinates
	ProposalScores []float32
	// Detections in original-image coordinates.
	Detections
	// Masks holds n binary masks (origH×origW each, 1 where the pasted
	// probability > MaskThresh); nil when the mask branch is off or
	// Config.CropMasks is set.
	Masks []uint8
	// MaskCrops holds the n masks cropped (Config.CropMasks).
	MaskCrops []BinaryMask
}

// Run computes detections from backbone+FPN features: pyramid levels
// finest first, the last being the extra "pool" level used only by the RPN
// (torchvision's '0'..'3','pool'); the RoI poolers use all but the last.
func Run(features []FeatureMap, g ImageGeometry, heads Heads, cfg Config) (*Result, error) {
	if len(features) < 2 {
		return nil, fmt.Errorf("detection: %d feature levels, need at least 2 (pyramid + pool)", len(features))
	}
	if g.ResizedH <= 0 || g.ResizedW <= 0 || g.PaddedH < g.ResizedH || g.PaddedW < g.ResizedW || g.OrigH <= 0 || g.OrigW <= 0 {
		return nil, fmt.Errorf("detection: bad image geometry %+v", g)
	}
	if heads == nil {
		return nil, errors.New("detection: no heads")
	}
	sizes := make([][2]int, len(features))
	for i, f := range features {
		if err := f.check(); err != nil {
			return nil, fmt.Errorf("detection: feature level %d: %w", i, err)
		}
		sizes[i] = [2]int{f.H, f.W}
	}
	// RPN.
	cfg.trace(StageRPN)
	objMaps, delMaps, err := heads.RPN(features)
	if err != nil {
		return nil, err
	}
	obj, del, perLevel, err := FlattenRPNHead(objMaps, delMaps)
	if err != nil {
		return nil, err
	}
	anchors, err := cfg.Anchors.Anchors(g.PaddedH, g.PaddedW, sizes)
	if err != nil {
		return nil, err
	}
	var all []float32
	for l, a := range anchors {
		if len(a) != 4*perLevel[l] {
			return nil, fmt.Errorf("detection: level %d: %d anchors but the RPN head predicts %d", l, len(a)/4, perLevel[l])
		}
		all = append(all, a...)
	}
	rpnCoder, roiCoder := RPNBoxCoder(), RoIBoxCoder()
	rpnCoder.ClipBelow, roiCoder.ClipBelow = cfg.DeltaClipBelow, cfg.DeltaClipBelow
	props, err := rpnCoder.Decode(del, all)
	if err != nil {
		return nil, err
	}
	props, pscores, err := FilterProposals(props, obj, perLevel, g.ResizedH, g.ResizedW, cfg.RPN)
	if err != nil {
		return nil, err
	}
	res := &Result{Proposals: props, ProposalScores: pscores}
	// Box branch.
	cfg.trace(StageRoIHeads)
	pyr := features[:len(features)-1]
	n := len(pscores)
	pooled, err := cfg.BoxPool.applyScratch(pyr, props, g.ResizedH, g.ResizedW)
	if err != nil {
		return nil, err
	}
	logits, reg, err := heads.Box(*pooled, n)
	nn.PutScratch(pooled)
	if err != nil {
		return nil, err
	}
	det, err := PostprocessDetections(logits, reg, props, cfg.NumClasses, g.ResizedH, g.ResizedW, roiCoder, cfg.RoI)
	if err != nil {
		return nil, err
	}
	// Mask branch (on resized-image boxes, before the final rescale).
	var probs []float32
	cfg.trace(StageMasks)
	if !cfg.NoMasks {
		mps, err := cfg.MaskPool.applyScratch(pyr, det.Boxes, g.ResizedH, g.ResizedW)
		if err != nil {
			return nil, err
		}
		var ml []float32
		lm, one := heads.(LabelMasker)
		if det.Len() > 0 {
			if one {
				ml, err = lm.MaskLabels(*mps, det.Len(), det.Labels)
			} else {
				ml, err = heads.Mask(*mps, det.Len())
			}
		}
		nn.PutScratch(mps)
		if err != nil {
			return nil, err
		}
		if one {
			probs, err = MaskProbs(ml, make([]int, det.Len()), 1, cfg.MaskSize)
		} else {
			probs, err = MaskProbs(ml, det.Labels, cfg.NumClasses, cfg.MaskSize)
		}
		if err != nil {
			return nil, err
		}
	}
	// transform.postprocess: rescale boxes, paste masks in the original image.
	if err := ResizeBoxes(det.Boxes, g.ResizedH, g.ResizedW, g.OrigH, g.OrigW); err != nil {
		return nil, err
	}
	if cfg.RoI.DropEmpty {
		det, probs = dropEmpty(det, probs, cfg.MaskSize*cfg.MaskSize, g.OrigH, g.OrigW)
	}
	res.Detections = det
	if !cfg.NoMasks {
		var full []uint8
		hw := g.OrigH * g.OrigW
		if cfg.CropMasks {
			res.MaskCrops = make([]BinaryMask, det.Len())
		} else {
			full = make([]uint8, det.Len()*hw)
		}
		m := cfg.MaskSize
		// Detections paste independently: split them across goroutines,
		// each with its own probability buffer.
		errs := make([]error, det.Len())
		nn.ParallelFor(det.Len(), 1, func(lo, hi int) {
			var buf []float32
			for i := lo; i < hi; i++ {
				box := det.Boxes[4*i : 4*i+4]
				var r MaskRegion
				var err error
				if cfg.MaskPaste == PasteGridSample {
					r, err = PasteMaskGridSample(buf, g.OrigH, g.OrigW, probs[i*m*m:(i+1)*m*m], m, box)
				} else {
					r, err = PasteMaskRegion(buf, g.OrigH, g.OrigW, probs[i*m*m:(i+1)*m*m], m, box, 1)
				}
				if err != nil {
					errs[i] = err
					continue
				}
				buf = r.Probs
				bm := BinaryMask{X0: r.X0, Y0: r.Y0, X1: r.X1, Y1: r.Y1, Pix: make([]uint8, len(r.Probs))}
				for p, v := range r.Probs {
					if cfg.MaskPaste.foreground(v, cfg.MaskThresh) {
						bm.Pix[p] = 1
					}
				}
				if cfg.CropMasks {
					res.MaskCrops[i] = bm
					continue
				}
				dst := full[i*hw : (i+1)*hw]
				for y := bm.Y0; y < bm.Y1; y++ {
					copy(dst[y*g.OrigW+bm.X0:y*g.OrigW+bm.X1], bm.Pix[(y-bm.Y0)*(bm.X1-bm.X0):(y-bm.Y0+1)*(bm.X1-bm.X0)])
				}
			}
		})
		for _, err := range errs {
			if err != nil {
				return nil, err
			}
		}
		res.Masks = full
	}
	cfg.trace(StageDone)
	return res, nil
}

// dropEmpty clips boxes to the image and keeps the detections (and their
// mask probabilities, per values each) whose boxes have an area, as
// detectron2's detector_postprocess does.
func dropEmpty(det Detections, probs []float32, per, h, w int) (Detections, []float32) {
	_ = ClipBoxesToImage(det.Boxes, h, w) // 4-aligned by construction
	var keep []int
	for i := 0; i < det.Len(); i++ {
		b := det.Boxes[4*i : 4*i+4]
		if b[2] > b[0] && b[3] > b[1] {
			keep = append(keep, i)
		}
	}
	if len(keep) == det.Len() {
		return det, probs
	}
	var p []float32
	if probs != nil {
		p = make([]float32, 0, len(keep)*per)
		for _, i := range keep {
			p = append(p, probs[i*per:(i+1)*per]...)
		}
	}
	return Detections{Boxes: GatherBoxes(det.Boxes, keep), Scores: gather32(det.Scores, keep), Labels: gatherInt(det.Labels, keep)}, p
}
