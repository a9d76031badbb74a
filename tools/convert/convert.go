// Package convert turns a PyTorch checkpoint into an flbq model file
// (safetensors with "flbq.config"): it maps the source's tensor names onto
// flbq's (torchvision's state_dict names), records the configuration and
// where the weights came from, and builds the whole model from the result
// before anything is written, so that a missing, extra or mis-shaped
// tensor fails the conversion naming it.
//
// Sources: "torchvision" (a state dict of a torchvision MaskRCNN with
// flbq's Swin or ViT backbone, as tools/refgen/flbq_models.py builds it;
// names pass unchanged). mmdetection's and the official Swin repository's
// layouts need their own key maps and inference settings (issue
// [checkpoints]); they are not accepted yet.
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

// Torchvision: torchvision's MaskRCNN state-dict names (flbq's own).
const Torchvision Source = "torchvision"

// Sources lists the accepted sources.
var Sources = []Source{Torchvision}

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
	// Config is the flbq.config JSON of the architecture and its settings
	// (a torchvision state dict carries none).
	Config []byte
	// Origin is recorded in the config's "source" field (e.g. the file).
	Origin string
}

// Convert maps ck's tensors and returns the model file's bytes, after
// building the model (and, for detectors, the whole Mask R-CNN) from them.
// Floating-point tensors are written as F32, int64 ones as I64.
func Convert(ck *torchckpt.Checkpoint, o Options) ([]byte, error) {
	if o.From != Torchvision {
		return nil, fmt.Errorf("convert: source %q is not supported", o.From)
	}
	cfgJSON, err := withSource(o.Config, o.From, o.Origin)
	if err != nil {
		return nil, err
	}
	if _, err := model.ParseConfig(cfgJSON); err != nil {
		return nil, err
	}
	var ts []safetensors.Tensor
	for _, t := range ck.Tensors {
		out := safetensors.Tensor{Name: t.Name, Shape: t.Shape}
		switch {
		case t.DType.IsFloat():
			out.F32 = t.Float32() // F32: exact for every source dtype but F64
		case t.DType == safetensors.I64:
			out.DType, out.Raw = safetensors.I64, t.Raw
		default:
			return nil, fmt.Errorf("convert: tensor %q: dtype %s has no place in a model file", t.Name, t.DType)
		}
		ts = append(ts, out)
	}
	var buf bytes.Buffer
	if err := safetensors.Encode(&buf, ts, map[string]string{safetensors.ConfigKey: string(cfgJSON)}); err != nil {
		return nil, err
	}
	if err := Validate(buf.Bytes()); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
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
