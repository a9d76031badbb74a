package maskrcnn

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/flbq/flbq/runtime/detection"
	"github.com/flbq/flbq/runtime/model"
)

// Settings are the Mask R-CNN keys of "flbq.config" beyond model.Config's
// own fields, named after torchvision MaskRCNN's constructor arguments.
// Every key is optional; absent keys take torchvision's defaults.
//
//	anchor_sizes              [[32],[64],[128],[256],[512]]  one list per pyramid level (incl. pool)
//	aspect_ratios             [[0.5,1,2], ...]               one list per level (default for all levels)
//	rpn_pre_nms_top_n_test    1000
//	rpn_post_nms_top_n_test   1000
//	rpn_nms_thresh            0.7
//	rpn_score_thresh          0.0
//	box_score_thresh          0.05
//	box_nms_thresh            0.5
//	box_detections_per_img    100
//	mask_thresh               0.5   (binarisation of pasted masks; not a torchvision argument)
//	category_ids              [K]   COCO category id of each label (default: the label itself,
//	                                as torchvision's COCO models use)
//
// and the keys that describe other frameworks' inference (mmdetection's
// values in brackets), so that a converted model gives its source's
// detections without code of its own:
//
//	anchor_round              true   base anchors rounded to integers [false]
//	anchor_strides            none   fixed stride per level; none: padded image // feature [4,8,16,32,64]
//	rpn_min_size              1e-3   proposals with a side < this are dropped [0]
//	rpn_min_size_strict       false  ... with a side <= this (mmdetection 2.25 [true]; 2.11 false)
//	roi_sampling_ratio        2      RoIAlign samples per bin; 0: adaptive [0]
//	roi_aligned               false  RoIAlign half-pixel offset [true]
//	roi_strides               none   fixed RoI pooling strides of the 4 levels; none: inferred [4,8,16,32]
//	box_min_size              1e-2   detections with a side < this are dropped [0]
//	box_drop_empty            false  clip final boxes to the image, drop empty ones (detectron2 [false; detectron2 true])
//	box_delta_clamp           "upper" clamp of dw, dh at log(1000/16); "symmetric" clamps at ± ["symmetric"]
//	mask_paste                "torchvision"  or "grid_sample" (mmdetection's _do_paste_mask, >= mask_thresh)
type Settings struct {
	AnchorSizes         [][]float64 `json:"anchor_sizes,omitempty"`
	AspectRatios        [][]float64 `json:"aspect_ratios,omitempty"`
	RPNPreNMSTopN       *int        `json:"rpn_pre_nms_top_n_test,omitempty"`
	RPNPostNMSTopN      *int        `json:"rpn_post_nms_top_n_test,omitempty"`
	RPNNMSThresh        *float64    `json:"rpn_nms_thresh,omitempty"`
	RPNScoreThresh      *float64    `json:"rpn_score_thresh,omitempty"`
	BoxScoreThresh      *float64    `json:"box_score_thresh,omitempty"`
	BoxNMSThresh        *float64    `json:"box_nms_thresh,omitempty"`
	BoxDetectionsPerImg *int        `json:"box_detections_per_img,omitempty"`
	MaskThresh          *float64    `json:"mask_thresh,omitempty"`
	CategoryIDs         []int64     `json:"category_ids,omitempty"`

	AnchorRound      *bool    `json:"anchor_round,omitempty"`
	AnchorStrides    []int    `json:"anchor_strides,omitempty"`
	RPNMinSize       *float64 `json:"rpn_min_size,omitempty"`
	RPNMinSizeStrict bool     `json:"rpn_min_size_strict,omitempty"`
	RoISamplingRatio *int     `json:"roi_sampling_ratio,omitempty"`
	RoIAligned       *bool    `json:"roi_aligned,omitempty"`
	RoIStrides       []int    `json:"roi_strides,omitempty"`
	BoxMinSize       *float64 `json:"box_min_size,omitempty"`
	BoxDropEmpty     bool     `json:"box_drop_empty,omitempty"`
	BoxDeltaClamp    string   `json:"box_delta_clamp,omitempty"`
	MaskPaste        string   `json:"mask_paste,omitempty"`
}

var settingKeys = []string{"anchor_sizes", "aspect_ratios", "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test",
	"rpn_nms_thresh", "rpn_score_thresh", "box_score_thresh", "box_nms_thresh", "box_detections_per_img",
	"mask_thresh", "category_ids", "anchor_round", "anchor_strides", "rpn_min_size", "rpn_min_size_strict", "roi_sampling_ratio",
	"roi_aligned", "roi_strides", "box_min_size", "box_drop_empty", "box_delta_clamp", "mask_paste"}

// ParseSettings reads the Mask R-CNN keys from a model configuration's Extra.
func ParseSettings(c *model.Config) (*Settings, error) {
	sub := map[string]json.RawMessage{}
	for _, k := range settingKeys {
		if v, ok := c.Extra[k]; ok {
			sub[k] = v
		}
	}
	b, _ := json.Marshal(sub)
	var s Settings
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("flbq.config: mask r-cnn settings: %w", err)
	}
	return &s, nil
}

// DetectionConfig returns the detection.Config the settings describe for
// numClasses classes, validating every value.
func (s *Settings) DetectionConfig(numClasses int) (detection.Config, error) {
	bad := func(f string, a ...any) (detection.Config, error) {
		return detection.Config{}, fmt.Errorf("flbq.config: "+f, a...)
	}
	cfg := detection.DefaultConfig(numClasses)
	if s.AnchorSizes != nil {
		cfg.Anchors.Sizes = s.AnchorSizes
		if s.AspectRatios == nil {
			cfg.Anchors.AspectRatios = make([][]float64, len(s.AnchorSizes))
			for i := range cfg.Anchors.AspectRatios {
				cfg.Anchors.AspectRatios[i] = []float64{0.5, 1, 2}
			}
		}
	}
	if s.AspectRatios != nil {
		cfg.Anchors.AspectRatios = s.AspectRatios
	}
	if len(cfg.Anchors.Sizes) != 5 || len(cfg.Anchors.AspectRatios) != 5 {
		return bad("anchor_sizes and aspect_ratios need one list per pyramid level (5), have %d and %d", len(cfg.Anchors.Sizes), len(cfg.Anchors.AspectRatios))
	}
	a := -1
	for l := range cfg.Anchors.Sizes {
		n := len(cfg.Anchors.Sizes[l]) * len(cfg.Anchors.AspectRatios[l])
		if n == 0 || (a >= 0 && n != a) {
			return bad("every pyramid level needs the same non-zero number of anchors (level %d has %d)", l, n)
		}
		a = n
		for _, v := range append(append([]float64(nil), cfg.Anchors.Sizes[l]...), cfg.Anchors.AspectRatios[l]...) {
			if !(v > 0 && v < 1e6) {
				return bad("anchor size or aspect ratio %v out of range", v)
			}
		}
	}
	setInt := func(dst *int, v *int, name string) error {
		if v != nil {
			if *v < 0 {
				return fmt.Errorf("flbq.config: %s = %d must be >= 0", name, *v)
			}
			*dst = *v
		}
		return nil
	}
	setF := func(dst *float64, v *float64, name string) error {
		if v != nil {
			if math.IsNaN(*v) || *v < 0 || *v > 1 {
				return fmt.Errorf("flbq.config: %s = %v must be in [0, 1]", name, *v)
			}
			*dst = *v
		}
		return nil
	}
	var mt float64 = float64(cfg.MaskThresh)
	for _, err := range []error{
		setInt(&cfg.RPN.PreNMSTopN, s.RPNPreNMSTopN, "rpn_pre_nms_top_n_test"),
		setInt(&cfg.RPN.PostNMSTopN, s.RPNPostNMSTopN, "rpn_post_nms_top_n_test"),
		setInt(&cfg.RoI.DetectionsPerImg, s.BoxDetectionsPerImg, "box_detections_per_img"),
		setF(&cfg.RPN.NMSThresh, s.RPNNMSThresh, "rpn_nms_thresh"),
		setF(&cfg.RPN.ScoreThresh, s.RPNScoreThresh, "rpn_score_thresh"),
		setF(&cfg.RoI.ScoreThresh, s.BoxScoreThresh, "box_score_thresh"),
		setF(&cfg.RoI.NMSThresh, s.BoxNMSThresh, "box_nms_thresh"),
		setF(&mt, s.MaskThresh, "mask_thresh"),
	} {
		if err != nil {
			return detection.Config{}, err
		}
	}
	cfg.MaskThresh = float32(mt)
	if s.AnchorRound != nil {
		cfg.Anchors.Unrounded = !*s.AnchorRound
	}
	if s.AnchorStrides != nil {
		if len(s.AnchorStrides) != len(cfg.Anchors.Sizes) {
			return bad("anchor_strides: %d strides for %d pyramid levels", len(s.AnchorStrides), len(cfg.Anchors.Sizes))
		}
		for _, v := range s.AnchorStrides {
			if v < 1 || v > 1<<12 {
				return bad("anchor_strides: stride %d out of range", v)
			}
		}
		cfg.Anchors.Strides = s.AnchorStrides
	}
	for _, f := range []struct {
		dst  *float64
		v    *float64
		name string
	}{{&cfg.RPN.MinSize, s.RPNMinSize, "rpn_min_size"}, {&cfg.RoI.MinSize, s.BoxMinSize, "box_min_size"}} {
		if f.v != nil {
			if !(*f.v >= 0 && *f.v < 1e6) {
				return bad("%s = %v must be in [0, 1e6)", f.name, *f.v)
			}
			*f.dst = *f.v
		}
	}
	cfg.RPN.MinSizeStrict = s.RPNMinSizeStrict
	cfg.RoI.DropEmpty = s.BoxDropEmpty
	if v := s.RoISamplingRatio; v != nil {
		if *v < 0 || *v > 64 {
			return bad("roi_sampling_ratio = %d must be in 0..64 (0: adaptive)", *v)
		}
		cfg.BoxPool.SamplingRatio, cfg.MaskPool.SamplingRatio = *v, *v
	}
	if s.RoIAligned != nil {
		cfg.BoxPool.Aligned, cfg.MaskPool.Aligned = *s.RoIAligned, *s.RoIAligned
	}
	if s.RoIStrides != nil {
		if len(s.RoIStrides) != 4 {
			return bad("roi_strides: %d strides, want one per pooled level (4)", len(s.RoIStrides))
		}
		for _, v := range s.RoIStrides {
			if v < 1 || v > 1<<12 {
				return bad("roi_strides: stride %d out of range", v)
			}
		}
		cfg.BoxPool.Strides, cfg.MaskPool.Strides = s.RoIStrides, s.RoIStrides
	}
	switch s.BoxDeltaClamp {
	case "", "upper":
	case "symmetric":
		cfg.DeltaClipBelow = true
	default:
		return bad("box_delta_clamp %q: want \"upper\" or \"symmetric\"", s.BoxDeltaClamp)
	}
	if s.MaskPaste != "" {
		p, err := detection.ParseMaskPaste(s.MaskPaste)
		if err != nil {
			return bad("%v", err)
		}
		cfg.MaskPaste = p
	}
	if s.CategoryIDs != nil && len(s.CategoryIDs) != numClasses {
		return bad("%d category_ids for num_classes %d", len(s.CategoryIDs), numClasses)
	}
	return cfg, nil
}

// defaultSettings are torchvision MaskRCNN's constructor defaults for the
// keys a torchvision model states (export_torchvision.py writes them).
var defaultSettings = []struct{ key, value string }{
	{"min_size", "800"}, {"max_size", "1333"},
	{"image_mean", "[0.485, 0.456, 0.406]"}, {"image_std", "[0.229, 0.224, 0.225]"},
	{"anchor_sizes", "[[32], [64], [128], [256], [512]]"}, {"aspect_ratios", "[[0.5, 1, 2], ...]"},
	{"rpn_pre_nms_top_n_test", "1000"}, {"rpn_post_nms_top_n_test", "1000"}, {"rpn_nms_thresh", "0.7"},
	{"rpn_score_thresh", "0"}, {"box_score_thresh", "0.05"}, {"box_nms_thresh", "0.5"},
	{"box_detections_per_img", "100"},
}

// DefaultsUsed lists, for a detection config (flbq.config JSON), each
// torchvision setting it leaves out, with the default flbq will use
// ("anchor_sizes: using [[32], ...]"). A torchvision model converted
// without its own values gets a different detector silently otherwise.
func DefaultsUsed(configJSON []byte) []string {
	var m map[string]json.RawMessage
	if json.Unmarshal(configJSON, &m) != nil {
		return nil
	}
	if t, _ := m["task"]; string(t) != `"detection"` {
		return nil
	}
	var out []string
	for _, d := range defaultSettings {
		if _, ok := m[d.key]; !ok {
			out = append(out, d.key+": using torchvision's default "+d.value)
		}
	}
	return out
}
