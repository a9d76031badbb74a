package calib

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/flbq/flbq/runtime/coco"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/solver"
)

// RunConfig is a complete calibration run, as flbq calibrate takes it.
type RunConfig struct {
	Model     string // .safetensors path
	Data      string // COCO instances JSON
	Images    string // image directory (file_name is relative to it)
	CalibSize int    // images to draw (default 64)
	Seed      uint64
	// Granularity is "group" (default) or "layer".
	Granularity string
	GroupSize   int // default 32
	Mode        string
	Rule        qformat.Rule
	Bits        []int
	Anchors     []int
	// AnchorImages: fast mode's anchor images (0: DefaultAnchorImages,
	// negative: all images).
	AnchorImages int
	Batch        int    // images per forward batch (default 8)
	Layers       string // "A:B" or ""
	Shard        string // "i/n" or ""
	// Checkpoint is the checkpoint path ("" disables checkpoints).
	Checkpoint string
	SaveEvery  time.Duration
	Progress   func(done, total int)
	Warn       func(msg string)
	// Resumed, if set, is called when a checkpoint is resumed.
	Resumed func(done, total int)
}

// Prepared is a loaded model and calibration set.
type Prepared struct {
	Model   *model.Model
	Images  []coco.Image
	Batches []Batch
	SHA256  string // of the model file
}

// Prepare loads the model and the calibration images.
func Prepare(rc *RunConfig) (*Prepared, error) {
	if rc.CalibSize == 0 {
		rc.CalibSize = 64
	}
	if rc.CalibSize < 0 {
		return nil, fmt.Errorf("--calib-size %d: want a positive number of images", rc.CalibSize)
	}
	if rc.Batch <= 0 {
		rc.Batch = 8
	}
	m, err := model.Load(rc.Model)
	if err != nil {
		return nil, err
	}
	if m.Backbone == nil {
		return nil, fmt.Errorf("%s: a %s model has no detection backbone to calibrate", rc.Model, m.Config.Task)
	}
	if len(m.Backbone.QuantLayers()) == 0 {
		return nil, fmt.Errorf("%s: the backbone has no quantizable linear layers: nothing to calibrate", rc.Model)
	}
	sum, err := fileSHA256(rc.Model)
	if err != nil {
		return nil, err
	}
	ds, err := coco.ReadDataset(rc.Data)
	if err != nil {
		return nil, err
	}
	if len(ds.Images) == 0 {
		return nil, fmt.Errorf("%s: no images", rc.Data)
	}
	imgs, warn := SelectImages(ds, rc.CalibSize, rc.Seed)
	if warn != "" && rc.Warn != nil {
		rc.Warn(fmt.Sprintf("%s: %s", rc.Data, warn))
	}
	in, err := LoadInputs(m.Config, rc.Images, imgs)
	if err != nil {
		return nil, err
	}
	return &Prepared{Model: m, Images: imgs, Batches: MakeBatches(in, rc.Batch), SHA256: sum}, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Options turns the config into Measure options for p's model.
func (rc *RunConfig) Options(p *Prepared) (Options, map[string]any, error) {
	o := Options{Mode: rc.Mode, Rule: rc.Rule, Bits: rc.Bits, Anchors: rc.Anchors, Progress: rc.Progress, SaveEvery: rc.SaveEvery}
	if o.Mode == "" {
		o.Mode = Exact
	}
	if o.Mode != Exact && o.Mode != Fast {
		return o, nil, fmt.Errorf("--mode %q: want exact or fast", o.Mode)
	}
	if len(o.Bits) == 0 {
		o.Bits = DefaultBits
	}
	if o.Mode == Fast && len(o.Anchors) == 0 {
		o.Anchors = DefaultAnchors
	}
	if o.Mode == Exact {
		o.Anchors = nil
	}
	if o.Mode == Fast {
		switch {
		case rc.AnchorImages == 0:
			o.AnchorImages = DefaultAnchorImages
		case rc.AnchorImages > 0:
			o.AnchorImages = rc.AnchorImages
		}
	}
	switch rc.Granularity {
	case "", "group":
		rc.Granularity = "group"
		if rc.GroupSize == 0 {
			rc.GroupSize = 32
		}
		if err := CheckGroupSize(rc.GroupSize); err != nil {
			return o, nil, fmt.Errorf("--group-size: %w", err)
		}
		o.GroupSize = rc.GroupSize
	case "layer":
		o.GroupSize = 0
	default:
		return o, nil, fmt.Errorf("--granularity %q: want group or layer", rc.Granularity)
	}
	layers := p.Model.Backbone.QuantLayers()
	var sel []int
	for i := range layers {
		sel = append(sel, i)
	}
	meta := map[string]any{}
	if rc.Layers != "" {
		var err error
		if sel, err = ParseLayerRange(rc.Layers, len(layers)); err != nil {
			return o, nil, err
		}
		meta["layers"] = rc.Layers
	}
	if rc.Shard != "" {
		var err error
		if sel, _, _, err = ParseShard(rc.Shard, sel); err != nil {
			return o, nil, err
		}
		meta["shard"] = rc.Shard
	}
	if len(sel) < len(layers) {
		o.Layers = sel
	}
	ids := make([]any, len(p.Images))
	for i, im := range p.Images {
		ids[i] = im.ID
	}
	order := make([]any, len(layers))
	for i, l := range layers {
		order[i] = l.Name
	}
	meta["model"] = filepath.Base(rc.Model)
	meta["model_sha256"] = p.SHA256
	meta["data"] = filepath.Base(rc.Data)
	meta["image_ids"] = ids
	meta["calib_size"] = rc.CalibSize
	meta["seed"] = rc.Seed
	meta["granularity"] = rc.Granularity
	meta["group_size"] = o.GroupSize
	meta["mode"] = o.Mode
	meta["rule"] = o.Rule.String()
	meta["batch"] = rc.Batch
	if o.Mode == Fast {
		meta["anchors"] = o.Anchors
		_, meta["anchor_images"] = AnchorBatches(p.Batches, o.AnchorImages)
		meta["fast_estimator"] = FastEstimator
	}
	meta["distortion"] = Definition
	meta["layer_order"] = order
	return o, meta, nil
}

// fingerprint lists every argument that changes a run's result.
func fingerprint(o Options, meta map[string]any) map[string]string {
	fp := map[string]string{}
	for _, k := range []string{"model_sha256", "image_ids", "seed", "granularity", "group_size", "mode", "rule", "batch", "anchors", "anchor_images", "fast_estimator", "layers", "shard"} {
		if v, ok := meta[k]; ok {
			fp[k] = fmt.Sprint(v)
		}
	}
	fp["bits"] = fmt.Sprint(o.Bits)
	sel := make([]string, len(o.Layers))
	for i, l := range o.Layers {
		sel[i] = strconv.Itoa(l)
	}
	fp["selected_layers"] = strings.Join(sel, ",")
	return fp
}

// Fingerprint is what identifies the run rc describes on p: curves whose
// Meta["fingerprint"] equals it are this run's result (Reusable).
func (rc *RunConfig) Fingerprint(p *Prepared) (map[string]string, error) {
	o, meta, err := rc.Options(p)
	if err != nil {
		return nil, err
	}
	return fingerprint(o, meta), nil
}

// Reusable reports whether c records the run of fingerprint fp.
func Reusable(c *solver.Curves, fp map[string]string) bool {
	m := map[string]string{}
	switch v := c.Meta["fingerprint"].(type) {
	case map[string]string: // as computed
		m = v
	case map[string]any: // as read from a curves file
		for k, x := range v {
			s, ok := x.(string)
			if !ok {
				return false
			}
			m[k] = s
		}
	default:
		return false
	}
	return maps.Equal(m, fp)
}

// Run calibrates as rc says, resuming from rc.Checkpoint when it holds the
// progress of the same run, and removes the checkpoint on success. On
// cancellation of ctx the progress is saved there and the error wraps
// ErrInterrupted.
func Run(ctx context.Context, rc *RunConfig) (*Result, error) {
	p, err := Prepare(rc)
	if err != nil {
		return nil, err
	}
	return RunPrepared(ctx, rc, p)
}

// RunPrepared is Run on an already prepared model and image set.
func RunPrepared(ctx context.Context, rc *RunConfig, p *Prepared) (*Result, error) {
	o, meta, err := rc.Options(p)
	if err != nil {
		return nil, err
	}
	fp := fingerprint(o, meta)
	st := NewState()
	if rc.Checkpoint != "" {
		old, err := ReadCheckpoint(rc.Checkpoint, fp)
		if err != nil {
			return nil, err
		}
		if old != nil {
			st = old
			if rc.Resumed != nil {
				rc.Resumed(len(st.Done), 0)
			}
		}
		o.Save = func(s *State) error { return WriteCheckpoint(rc.Checkpoint, fp, s) }
		if o.SaveEvery == 0 {
			o.SaveEvery = 30 * time.Second
		}
	}
	res, err := Measure(ctx, p.Model.Backbone, p.Batches, o, st)
	if err != nil {
		if errors.Is(err, ErrInterrupted) && rc.Checkpoint != "" {
			return nil, fmt.Errorf("%w: progress saved to %s; rerun the same command to resume", err, rc.Checkpoint)
		}
		return nil, err
	}
	for k, v := range meta {
		res.Curves.Meta[k] = v
	}
	res.Curves.Meta["fingerprint"] = fp
	res.Curves.Meta["seconds"] = res.Seconds
	res.Curves.Meta["images"] = len(p.Images)
	if rc.Checkpoint != "" {
		if err := os.Remove(rc.Checkpoint); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
	}
	return res, nil
}
