// Package convert turns a PyTorch checkpoint into an flbq model file
// (safetensors with "flbq.config"): it maps the source's tensor names onto
// flbq's (torchvision's state_dict names), permutes what is laid out
// differently, records the configuration, the inference settings of the
// source framework and where the weights came from, and builds the whole
// model from the result before anything is written, so that a missing,
// extra or mis-shaped tensor fails the conversion naming it.
//
// Sources:
//   - "torchvision": a state dict of a torchvision MaskRCNN with flbq's
//     Swin or ViT backbone (tools/refgen/flbq_models.py); names pass
//     unchanged and the configuration comes from the user.
//   - "mmdet": mmdetection 2.x's Swin Mask R-CNN (configs/swin).
//   - "swin-official": the official Swin-Transformer-Object-Detection
//     repository's Mask R-CNN (an mmdetection 2.11 fork).
//   - "detectron2": detectron2's ViTDet Mask R-CNN (model_final_*.pkl or
//     .pth).
//
// For the mmdetection sources the architecture is read from the tensors'
// shapes and the settings are those of the published configs (docs/CHECKPOINTS.md).
package convert

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/tools/torchckpt"
)

// Source names where a checkpoint's layout comes from.
type Source string

// The sources Convert reads.
const (
	Torchvision  Source = "torchvision"   // torchvision's MaskRCNN state-dict names (flbq's own)
	MMDet        Source = "mmdet"         // mmdetection 2.x
	SwinOfficial Source = "swin-official" // Swin-Transformer-Object-Detection
	Detectron2   Source = "detectron2"    // detectron2's ViTDet (projects/ViTDet)
)

// Sources lists the accepted sources.
var Sources = []Source{Torchvision, MMDet, SwinOfficial, Detectron2}

// ParseSource returns the source named s.
func ParseSource(s string) (Source, error) {
	for _, src := range Sources {
		if string(src) == s {
			return src, nil
		}
	}
	names := make([]string, len(Sources))
	for i, src := range Sources {
		names[i] = string(src)
	}
	return "", fmt.Errorf("unknown source %q (accepted: %s)", s, strings.Join(names, ", "))
}

// Options configure Convert.
type Options struct {
	From Source
	// Config is JSON: for torchvision, the whole flbq.config (a torchvision
	// state dict carries none); for the mmdetection sources, keys that
	// replace what the converter infers or assumes (e.g. min_size, or
	// category_ids of a custom dataset). May be empty for those.
	Config []byte
	// Origin is recorded in the config's "source" field (e.g. the file).
	Origin string
	// Warn receives each warning (a setting defaulted, class ids assumed);
	// nil discards them.
	Warn func(string)
}

// Convert maps ck's tensors and returns the model file's bytes, after
// building the model (and, for detectors, the whole Mask R-CNN) from them.
// Floating-point tensors are written as F32, int64 ones as I64.
func Convert(ck *torchckpt.Checkpoint, o Options) ([]byte, error) {
	warn := o.Warn
	if warn == nil {
		warn = func(string) {}
	}
	var ts []safetensors.Tensor
	var cfgJSON []byte
	srcOf := map[string]string{}
	switch o.From {
	case Torchvision:
		if len(o.Config) == 0 {
			return nil, fmt.Errorf("convert: a torchvision state dict needs its configuration (--config)")
		}
		for _, t := range ck.Tensors {
			st, err := fromCheckpoint(t)
			if err != nil {
				return nil, fmt.Errorf("convert: %w", err)
			}
			ts = append(ts, *st)
		}
		var err error
		if cfgJSON, err = withSource(o.Config, o.From, o.Origin); err != nil {
			return nil, err
		}
		for _, d := range maskrcnn.DefaultsUsed(cfgJSON) {
			warn("flbq.config has no " + d)
		}
	case MMDet, SwinOfficial:
		l := mmdetLayout
		if o.From == SwinOfficial {
			l = officialLayout
		}
		var cfg map[string]any
		var err error
		if ts, cfg, srcOf, err = convertSwin(l, ck, o.Config, warn); err != nil {
			return nil, fmt.Errorf("convert: %w", err)
		}
		cfg["source"] = map[string]string{"from": string(o.From), "file": o.Origin}
		if cfgJSON, err = json.Marshal(cfg); err != nil {
			return nil, err
		}
	case Detectron2:
		var cfg map[string]any
		var err error
		if ts, cfg, srcOf, err = convertViTDet(ck, o.Config, warn); err != nil {
			return nil, fmt.Errorf("convert: %w", err)
		}
		cfg["source"] = map[string]string{"from": string(o.From), "file": o.Origin}
		if cfgJSON, err = json.Marshal(cfg); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("convert: source %q is not supported", o.From)
	}
	if _, err := model.ParseConfig(cfgJSON); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := safetensors.Encode(&buf, ts, map[string]string{safetensors.ConfigKey: string(cfgJSON)}); err != nil {
		return nil, err
	}
	if err := Validate(buf.Bytes()); err != nil {
		return nil, withSourceKeys(err, srcOf)
	}
	return buf.Bytes(), nil
}

// withSourceKeys adds the source key to an error naming flbq tensors.
func withSourceKeys(err error, srcOf map[string]string) error {
	msg := err.Error()
	for dst, src := range srcOf {
		if strings.Contains(msg, `"`+dst+`"`) {
			return fmt.Errorf("%w (checkpoint key %q)", err, src)
		}
	}
	return err
}

// Validate builds the model in blob: every tensor the architecture needs
// must be there with its shape, and none may be left over.
func Validate(blob []byte) error {
	f, err := safetensors.Parse(blob)
	if err != nil {
		return err
	}
	m, err := model.FromFile(f)
	if err != nil {
		return err
	}
	if m.Config.Task == "detection" {
		_, err = maskrcnn.New(m)
		return err
	}
	return m.Weights.CheckUnused("")
}

// withSource adds "source": {"from": ..., "file": ...} to the config.
func withSource(cfg []byte, from Source, origin string) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(cfg, &obj); err != nil {
		return nil, fmt.Errorf("flbq.config: %w", err)
	}
	src, _ := json.Marshal(map[string]string{"from": string(from), "file": origin})
	obj["source"] = src
	return json.Marshal(obj)
}
