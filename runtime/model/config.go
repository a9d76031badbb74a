package model

import (
	"encoding/json"
	"fmt"

	"github.com/flbq/flbq/runtime/imageio"
)

// Config is the model configuration stored as JSON under the safetensors
// metadata key "flbq.config". Hyperparameters carry the names of
// torchvision's constructor arguments (SwinTransformer, VisionTransformer,
// FeaturePyramidNetwork, MaskRCNN/GeneralizedRCNNTransform).
type Config struct {
	Family string `json:"family"` // "swin" or "vit"
	Task   string `json:"task"`   // "detection" (backbone + pyramid [+ heads]) or "classification" (vit)

	// Swin (torchvision.models.SwinTransformer).
	PatchSize  Ints    `json:"patch_size,omitempty"`  // [4,4] (Swin) or 16 (ViT)
	EmbedDim   int     `json:"embed_dim,omitempty"`   // 96 for swin_t
	Depths     Ints    `json:"depths,omitempty"`      // [2,2,6,2]
	NumHeads   Ints    `json:"num_heads,omitempty"`   // [3,6,12,24] (Swin) or 12 (ViT)
	WindowSize Ints    `json:"window_size,omitempty"` // [7,7]
	MLPRatio   float64 `json:"mlp_ratio,omitempty"`   // 4
	// OutNorms: backbone.out_norms.{0..3} LayerNorms on the Swin stage outputs (mmdetection style).
	OutNorms bool `json:"out_norms,omitempty"`
	// ShiftSingleWindow keeps the window//2 cyclic shift (and its -100
	// mask) on a map axis that one window covers, as mmdetection and the
	// official Swin detection code do; torchvision (the default) drops it.
	ShiftSingleWindow bool `json:"shift_single_window,omitempty"`

	// ViT (torchvision.models.VisionTransformer; ViTDet-style backbone).
	ImageSize          int   `json:"image_size,omitempty"` // classifier input / pos_embed pretraining size
	NumLayers          int   `json:"num_layers,omitempty"`
	HiddenDim          int   `json:"hidden_dim,omitempty"`
	MLPDim             int   `json:"mlp_dim,omitempty"`
	RepresentationSize int   `json:"representation_size,omitempty"`
	PosEmbedClsToken   *bool `json:"pos_embed_cls_token,omitempty"` // detection: backbone.pos_embed has a leading class-token entry (default true, as ViTDet)

	// detectron2's ViTDet (family "vitdet"; image_size is its img_size, the
	// grid the global blocks' rel-pos tables are sized for; window_size its
	// window).
	PretrainImageSize  int   `json:"pretrain_image_size,omitempty"`  // pos_embed grid × patch (224)
	WindowBlockIndexes Ints  `json:"window_block_indexes,omitempty"` // blocks with windowed attention
	UseRelPos          *bool `json:"use_rel_pos,omitempty"`          // decomposed relative positions (default true)

	// Pyramid (FeaturePyramidNetwork / simple feature pyramid).
	OutChannels int `json:"out_channels,omitempty"` // 256

	// Detection / classification heads and preprocessing.
	NumClasses int `json:"num_classes,omitempty"`
	MinSize    int `json:"min_size,omitempty"` // GeneralizedRCNNTransform (800)
	MaxSize    int `json:"max_size,omitempty"` // (1333)
	// Resize is the resizing convention: "torchvision" (default) or "mmcv"
	// (mmdetection's test pipeline; see imageio.Resize).
	Resize string `json:"resize,omitempty"`
	// SquarePad pads the batch to SquarePad×SquarePad (ViTDet's
	// square_pad) instead of to a multiple of 32.
	SquarePad  int       `json:"square_pad,omitempty"`
	ImageMean  []float64 `json:"image_mean,omitempty"`
	ImageStd   []float64 `json:"image_std,omitempty"`
	ResizeSize int       `json:"resize_size,omitempty"` // classifier transform (256)
	CropSize   int       `json:"crop_size,omitempty"`   // (224)
	Categories []string  `json:"categories,omitempty"`  // class names, index = label

	// Extra holds keys flbq does not interpret (e.g. Mask R-CNN head settings).
	Extra map[string]json.RawMessage `json:"-"`
}

// Ints is a list of ints that also accepts a single JSON number.
type Ints []int

// UnmarshalJSON accepts 7 or [7, 7].
func (v *Ints) UnmarshalJSON(b []byte) error {
	var n int
	if err := json.Unmarshal(b, &n); err == nil {
		*v = Ints{n}
		return nil
	}
	var l []int
	if err := json.Unmarshal(b, &l); err != nil {
		return fmt.Errorf("want an int or a list of ints, got %s", b)
	}
	*v = l
	return nil
}

// pair returns a two-element value (broadcasting a single one).
func (v Ints) pair() (int, int, bool) {
	switch len(v) {
	case 1:
		return v[0], v[0], true
	case 2:
		return v[0], v[1], true
	}
	return 0, 0, false
}

// ParseConfig decodes a flbq.config JSON document, keeping unknown keys in Extra.
func ParseConfig(b []byte) (*Config, error) {
	var c Config
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("flbq.config: %w", err)
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(b, &all); err != nil {
		return nil, fmt.Errorf("flbq.config: %w", err)
	}
	known, _ := json.Marshal(&c)
	var kn map[string]json.RawMessage
	_ = json.Unmarshal(known, &kn)
	for k, v := range all {
		if _, ok := kn[k]; !ok {
			if c.Extra == nil {
				c.Extra = map[string]json.RawMessage{}
			}
			c.Extra[k] = v
		}
	}
	c.setDefaults()
	return &c, c.Validate()
}

func (c *Config) setDefaults() {
	if c.MLPRatio == 0 {
		c.MLPRatio = 4
	}
	if len(c.ImageMean) == 0 {
		c.ImageMean = []float64{0.485, 0.456, 0.406}
	}
	if len(c.ImageStd) == 0 {
		c.ImageStd = []float64{0.229, 0.224, 0.225}
	}
	if c.Task == "detection" {
		if c.MinSize == 0 {
			c.MinSize = 800
		}
		if c.MaxSize == 0 {
			c.MaxSize = 1333
		}
	}
	if c.Task == "classification" {
		if c.CropSize == 0 {
			c.CropSize = c.ImageSize
		}
		if c.ResizeSize == 0 {
			c.ResizeSize = c.CropSize * 256 / 224
		}
	}
	if (c.Family == "vit" || c.Family == "vitdet") && c.PosEmbedClsToken == nil {
		t := true
		c.PosEmbedClsToken = &t
	}
	if c.Family == "vitdet" {
		if c.UseRelPos == nil {
			t := true
			c.UseRelPos = &t
		}
		if c.PretrainImageSize == 0 {
			c.PretrainImageSize = 224
		}
	}
}

// Validate checks that the hyperparameters describe a buildable model.
func (c *Config) Validate() error {
	bad := func(f string, a ...any) error { return fmt.Errorf("flbq.config: "+f, a...) }
	switch c.Task {
	case "detection", "classification":
	default:
		return bad("task %q: want \"detection\" or \"classification\"", c.Task)
	}
	if _, err := imageio.ParseResize(c.Resize); err != nil {
		return bad("%v", err)
	}
	if len(c.ImageMean) != 3 || len(c.ImageStd) != 3 {
		return bad("image_mean and image_std need 3 values")
	}
	for _, s := range c.ImageStd {
		if s <= 0 {
			return bad("image_std must be positive")
		}
	}
	const maxDim = 1 << 16
	switch c.Family {
	case "swin":
		if c.Task != "detection" {
			return bad("family swin supports task detection only")
		}
		if _, _, ok := c.PatchSize.pair(); !ok {
			return bad("patch_size: want [h, w]")
		}
		if _, _, ok := c.WindowSize.pair(); !ok {
			return bad("window_size: want [h, w]")
		}
		ph, pw, _ := c.PatchSize.pair()
		wh, ww, _ := c.WindowSize.pair()
		if ph <= 0 || pw <= 0 || wh <= 0 || ww <= 0 || ph > 64 || pw > 64 || wh > 64 || ww > 64 {
			return bad("patch_size and window_size must be in 1..64")
		}
		if len(c.Depths) == 0 || len(c.Depths) != len(c.NumHeads) || len(c.Depths) > 8 {
			return bad("depths and num_heads need the same (non-zero) length")
		}
		if c.EmbedDim <= 0 || c.EmbedDim > maxDim {
			return bad("embed_dim %d out of range", c.EmbedDim)
		}
		for i := range c.Depths {
			dim := c.EmbedDim << i
			if c.Depths[i] < 0 || c.Depths[i] > 1024 || c.NumHeads[i] <= 0 || dim%c.NumHeads[i] != 0 {
				return bad("stage %d: depth %d, %d heads do not fit dim %d", i, c.Depths[i], c.NumHeads[i], dim)
			}
		}
		if c.OutChannels <= 0 || c.OutChannels > maxDim {
			return bad("out_channels %d out of range", c.OutChannels)
		}
	case "vit":
		if len(c.NumHeads) != 1 {
			return bad("num_heads: want one int for vit")
		}
		if len(c.PatchSize) != 1 || c.PatchSize[0] <= 0 || c.PatchSize[0] > 64 {
			return bad("patch_size: want one int in 1..64 for vit")
		}
		if c.HiddenDim <= 0 || c.HiddenDim > maxDim || c.MLPDim <= 0 || c.MLPDim > 4*maxDim || c.NumLayers < 0 || c.NumLayers > 1024 {
			return bad("hidden_dim, mlp_dim or num_layers out of range")
		}
		if c.NumHeads[0] <= 0 || c.HiddenDim%c.NumHeads[0] != 0 {
			return bad("hidden_dim %d not divisible by num_heads %d", c.HiddenDim, c.NumHeads[0])
		}
		if c.ImageSize <= 0 || c.ImageSize%c.PatchSize[0] != 0 || c.ImageSize > maxDim {
			return bad("image_size %d must be a positive multiple of patch_size", c.ImageSize)
		}
		if c.Task == "classification" {
			if c.NumClasses <= 0 {
				return bad("num_classes must be positive")
			}
			if c.CropSize != c.ImageSize {
				return bad("crop_size %d must equal image_size %d", c.CropSize, c.ImageSize)
			}
		} else {
			if c.HiddenDim%4 != 0 {
				return bad("hidden_dim must be divisible by 4 for the simple feature pyramid")
			}
			if c.OutChannels <= 0 || c.OutChannels > maxDim {
				return bad("out_channels %d out of range", c.OutChannels)
			}
		}
	case "vitdet":
		if c.Task != "detection" {
			return bad("family vitdet supports task detection only")
		}
		if len(c.NumHeads) != 1 || c.NumHeads[0] <= 0 || len(c.PatchSize) != 1 || c.PatchSize[0] <= 0 || c.PatchSize[0] > 64 {
			return bad("vitdet: num_heads (positive) and patch_size (1..64) want one int each")
		}
		if c.HiddenDim <= 0 || c.HiddenDim > maxDim || c.HiddenDim%c.NumHeads[0] != 0 || c.HiddenDim%4 != 0 || c.MLPDim <= 0 || c.MLPDim > 4*maxDim || c.NumLayers <= 0 || c.NumLayers > 1024 {
			return bad("vitdet: hidden_dim (a multiple of num_heads and 4), mlp_dim or num_layers out of range")
		}
		p := c.PatchSize[0]
		for _, v := range []struct {
			name string
			n    int
		}{{"image_size", c.ImageSize}, {"pretrain_image_size", c.PretrainImageSize}} {
			if v.n <= 0 || v.n%p != 0 || v.n > maxDim {
				return bad("vitdet: %s %d must be a positive multiple of patch_size %d", v.name, v.n, p)
			}
		}
		if len(c.WindowBlockIndexes) > 0 {
			if w, _, ok := c.WindowSize.pair(); !ok || w <= 0 || w > 256 {
				return bad("vitdet: window_size: want one int in 1..256")
			}
		}
		for _, i := range c.WindowBlockIndexes {
			if i < 0 || i >= c.NumLayers {
				return bad("vitdet: window_block_indexes: block %d of %d", i, c.NumLayers)
			}
		}
		if c.OutChannels <= 0 || c.OutChannels > maxDim {
			return bad("out_channels %d out of range", c.OutChannels)
		}
	default:
		return bad("family %q: want \"swin\", \"vit\" or \"vitdet\"", c.Family)
	}
	if c.SquarePad != 0 && (c.SquarePad < 32 || c.SquarePad%32 != 0 || c.SquarePad > 1<<14) {
		return bad("square_pad %d: want a multiple of 32", c.SquarePad)
	}
	if len(c.Categories) > 0 && c.NumClasses > 0 && len(c.Categories) != c.NumClasses {
		return bad("%d categories for num_classes %d", len(c.Categories), c.NumClasses)
	}
	return nil
}

// Transform returns the detection preprocessing the config describes.
func (c *Config) Transform() imageio.DetectionTransform {
	r, _ := imageio.ParseResize(c.Resize) // checked by Validate
	return imageio.DetectionTransform{MinSize: c.MinSize, MaxSize: c.MaxSize, Mean: c.ImageMean, Std: c.ImageStd, Resize: r, SquarePad: c.SquarePad}
}

// viTNet is the family vitdet backbone's configuration.
func (c *Config) viTNet() ViTNetConfig {
	w, _, _ := c.WindowSize.pair()
	p := c.PatchSize[0]
	return ViTNetConfig{Patch: p, Dim: c.HiddenDim, Depth: c.NumLayers, Heads: c.NumHeads[0], MLPDim: c.MLPDim,
		PretrainGrid: c.PretrainImageSize / p, PosCls: *c.PosEmbedClsToken, Window: w, WindowBlocks: c.WindowBlockIndexes,
		RelGrid: c.ImageSize / p, RelPos: *c.UseRelPos, Eps: vitEps}
}

// JSON returns the canonical JSON encoding (Extra keys included).
func (c *Config) JSON() []byte {
	b, _ := json.Marshal(c)
	if len(c.Extra) == 0 {
		return b
	}
	var m map[string]json.RawMessage
	_ = json.Unmarshal(b, &m)
	for k, v := range c.Extra {
		m[k] = v
	}
	b, _ = json.Marshal(m)
	return b
}
