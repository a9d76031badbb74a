// Package model holds flbq's fp32 backbones in parity with torchvision 0.14:
// the Swin Transformer (torchvision swin_t family) and plain-ViT
// (torchvision EncoderBlock) detection backbones with their feature
// pyramids (torchvision FeaturePyramidNetwork + LastLevelMaxPool; ViTDet's
// simple feature pyramid), and torchvision's VisionTransformer classifier.
// Weights come from safetensors files with torchvision state_dict names and
// a JSON Config under the metadata key "flbq.config".
//
// # Loading and running
//
//	m, err := model.Load("swin_t_maskrcnn.safetensors")
//	x, _ := imageio.DetectionInput(img, m.Config)   // [1,3,H,W], padded to 32
//	feats, pyr := m.Features(x.Batch, nil)          // backbone.*, fpn.0..3 + pool
//	logits := m.Classifier.Forward(x, nil)          // classification models
//
// A Model is safe for concurrent use from many goroutines: forward passes
// hold no shared mutable state (scratch comes from a pool per call), and
// each op splits its work across backend.Threads() goroutines.
//
// # Quantizable layers
//
// Every linear layer F-LBQ quantizes is an *nn.Linear held by pointer and
// named by its state_dict prefix: Swin "backbone.body.{s}.{j}.attn.qkv",
// ".attn.proj", ".mlp.0" (fc1), ".mlp.3" (fc2) and the patch-merging
// "backbone.body.{2,4,6}.reduction"; ViT "….self_attention.in_proj" (the
// in_proj_weight/in_proj_bias tensors), "….self_attention.out_proj",
// "….mlp.0", "….mlp.3" under "backbone.blocks.{i}" (detector) or
// "encoder.layers.encoder_layer_{i}" (classifier). Model.QuantLayers lists
// them in forward order with their shapes. To change how a layer computes:
//
//   - for good: m.SetLinearImpl(name, op) sets (*nn.Linear).Impl, an
//     nn.LinearOp (Forward(dst, x []float32, M int)), e.g. a generated
//     quantized kernel; set it before sharing the model between goroutines.
//   - for one call: pass nn.Overrides{name: op} to Forward/ForwardFrom;
//     concurrent calls may use different overrides (calibration fake-quant).
//
// # Block-level forward
//
// Backbone.Blocks lists the forward units in order (block 0 is the patch
// embedding; then every transformer block and patch-merging layer, each
// with the quantizable Linears it holds). Calibration runs ForwardFrom(0,
// img, nil, nil, inputs) once to cache every block's input, then
// ForwardFrom(i, inputs[i], prior, overrides, nil) to re-run only from the
// block holding the quantized layer; outputs tapped before block i are
// reused from prior.
package model

import (
	"fmt"
	"strings"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/runtime/tensor"
)

// Model is a loaded flbq model: a detection backbone with its feature
// pyramid (Config.Task "detection"), or a ViT classifier.
type Model struct {
	Config     *Config
	Backbone   Backbone       // detection models
	Pyramid    Pyramid        // detection models
	Classifier *ViTClassifier // classification models
	// Weights gives the Mask R-CNN loader the remaining rpn.*/roi_heads.* tensors.
	Weights *Weights
	linears map[string]*nn.Linear
}

// Load reads a model from a safetensors file with "flbq.config" metadata.
// A bad FLBQ_CPU or FLBQ_THREADS is an error here, not a silent default.
func Load(path string) (*Model, error) {
	if err := backend.EnvError(); err != nil {
		return nil, err
	}
	f, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	m, err := FromFile(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// HeadPrefixes are the tensor-name prefixes of detection heads, which the
// backbone loader leaves to the Mask R-CNN loader.
var HeadPrefixes = []string{"rpn.", "roi_heads."}

// FromFile builds a model from a parsed file. Every tensor is checked for
// presence, dtype and shape; tensors the model does not use are rejected
// (except detection heads, see HeadPrefixes).
func FromFile(f *safetensors.File) (*Model, error) {
	js, ok := f.Metadata[safetensors.ConfigKey]
	if !ok {
		return nil, fmt.Errorf("no %q metadata (model configuration); convert the checkpoint with tools/refgen/export_torchvision.py", safetensors.ConfigKey)
	}
	cfg, err := ParseConfig([]byte(js))
	if err != nil {
		return nil, err
	}
	return Build(cfg, NewWeights(f))
}

// Build constructs the model described by cfg from w.
func Build(cfg *Config, w *Weights) (*Model, error) {
	m := &Model{Config: cfg, Weights: w}
	var err error
	switch {
	case cfg.Family == "swin":
		var s *Swin
		s, err = LoadSwin(w, cfg, "backbone.body", "backbone.out_norms")
		if err == nil {
			m.Backbone = s
			m.Pyramid, err = LoadFPN(w, "backbone.fpn", s.Channels, cfg.OutChannels)
		}
	case cfg.Family == "vit" && cfg.Task == "detection":
		var v *ViTDet
		v, err = LoadViTDet(w, cfg, "backbone")
		if err == nil {
			m.Backbone = v
			m.Pyramid, err = LoadSimpleFP(w, "backbone", cfg.HiddenDim, cfg.OutChannels)
		}
	case cfg.Family == "vit" && cfg.Task == "classification":
		m.Classifier, err = LoadViTClassifier(w, cfg)
	case cfg.Family == "vitdet":
		var v *ViTNet
		v, err = LoadViTNet(w, cfg.viTNet(), "backbone.net")
		if err == nil {
			m.Backbone = v
			m.Pyramid, err = LoadSimpleFPDetectron2(w, "backbone", cfg.HiddenDim, cfg.OutChannels)
		}
	}
	if err != nil {
		return nil, err
	}
	for _, u := range w.Unused("") {
		head := false
		if cfg.Task == "detection" {
			for _, p := range HeadPrefixes {
				head = head || strings.HasPrefix(u, p)
			}
		}
		if !head {
			return nil, fmt.Errorf("tensor %q: unexpected", u)
		}
	}
	m.linears = map[string]*nn.Linear{}
	for _, r := range m.QuantLayers() {
		m.linears[r.Name] = r.Layer
	}
	return m, nil
}

// QuantLayers lists the quantizable linear layers in forward order.
func (m *Model) QuantLayers() []LayerRef {
	if m.Classifier != nil {
		return m.Classifier.QuantLayers()
	}
	return m.Backbone.QuantLayers()
}

// Linear returns the quantizable layer with the given name, or nil.
func (m *Model) Linear(name string) *nn.Linear { return m.linears[name] }

// SetLinearImpl replaces the implementation of one quantizable layer (nil
// restores fp32). Not safe while forward passes run.
func (m *Model) SetLinearImpl(name string, op nn.LinearOp) error {
	l := m.linears[name]
	if l == nil {
		return fmt.Errorf("no quantizable linear layer %q", name)
	}
	l.Impl = op
	return nil
}

// Features runs a detection model's backbone and pyramid on an NCHW batch.
func (m *Model) Features(img *tensor.Tensor, ov nn.Overrides) (backbone, pyramid []*tensor.Tensor) {
	if m.Backbone == nil {
		panic("model: Features on a classification model")
	}
	backbone = m.Backbone.Forward(img, ov)
	pyramid = m.Pyramid.Forward(backbone)
	return
}

// PyramidNames are the names of the pyramid levels Features returns.
var PyramidNames = []string{"fpn.0", "fpn.1", "fpn.2", "fpn.3", "fpn.pool"}

// NumParams counts the parameters (float tensors) of the file.
func (m *Model) NumParams() int64 {
	var n int64
	if m.Weights.File == nil {
		return 0
	}
	for _, name := range m.Weights.File.Names() {
		info, _ := m.Weights.File.Info(name)
		if info.DType.IsFloat() {
			n += int64(info.Numel())
		}
	}
	return n
}
