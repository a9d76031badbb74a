package calib

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/solver"
)

func vitdetPath() string {
	return filepath.Join("..", "..", "runtime", "model", "testdata", "vitdet_tiny.safetensors")
}

func runConfig(t *testing.T, n, calib int) *RunConfig {
	js, dir := writeDataset(t, n, true)
	return &RunConfig{Model: vitdetPath(), Data: js, Images: dir, CalibSize: calib, Seed: 3, Mode: Exact, Rule: qformat.MinMax, Batch: 2,
		Checkpoint: filepath.Join(t.TempDir(), "c.ckpt")}
}

// roundTrip writes and reads curves, as the CLI and merge see them.
func roundTrip(t *testing.T, c *solver.Curves) *solver.Curves {
	p := filepath.Join(t.TempDir(), "c.json")
	if err := solver.WriteCurvesFile(p, c); err != nil {
		t.Fatal(err)
	}
	r, err := solver.ReadCurvesFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRunMetaAndSelection(t *testing.T) {
	rc := runConfig(t, 9, 5)
	res, err := Run(context.Background(), rc)
	if err != nil {
		t.Fatal(err)
	}
	c := roundTrip(t, res.Curves)
	for _, k := range []string{"model", "model_sha256", "image_ids", "seed", "granularity", "group_size", "mode", "distortion", "seconds", "rule", "layer_order"} {
		if _, ok := c.Meta[k]; !ok {
			t.Errorf("meta has no %q", k)
		}
	}
	if ids := c.Meta["image_ids"].([]any); len(ids) != 5 {
		t.Errorf("%d image ids, want 5", len(ids))
	}
	if _, err := os.Stat(rc.Checkpoint); !os.IsNotExist(err) {
		t.Error("checkpoint left after a successful run")
	}
	// Another seed draws other images.
	rc2 := *rc
	rc2.Seed = 4
	p, err := Prepare(&rc2)
	if err != nil {
		t.Fatal(err)
	}
	var ids []any
	for _, im := range p.Images {
		ids = append(ids, float64(im.ID))
	}
	if reflect.DeepEqual(ids, c.Meta["image_ids"]) {
		t.Error("seeds 3 and 4 drew the same images")
	}
}

// TestResume interrupts a run, checks the checkpoint, resumes, and
// compares with an uninterrupted run (exact; fast with the anchors on all
// images and on the first batch only); then corrupts and mismatches the
// checkpoint.
func TestResume(t *testing.T) {
	rc := runConfig(t, 6, 6)
	p, err := Prepare(rc)
	if err != nil {
		t.Fatal(err)
	}
	full, err := RunPrepared(context.Background(), rc, p)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode         string
		anchorImages int
	}{{Exact, 0}, {Fast, 0}, {Fast, 2}} {
		mode := tc.mode
		rc.Mode, rc.AnchorImages = tc.mode, tc.anchorImages
		if tc.anchorImages > 0 {
			mode = fmt.Sprintf("fast, %d anchor images", tc.anchorImages)
		}
		ref, err := RunPrepared(context.Background(), rc, p)
		if err != nil {
			t.Fatal(err)
		}
		if tc.anchorImages > 0 && ref.Curves.Meta["anchor_images"] != tc.anchorImages {
			t.Errorf("%s: meta anchor_images %v", mode, ref.Curves.Meta["anchor_images"])
		}
		if mode == Exact {
			if !reflect.DeepEqual(ref.Curves.Units, full.Curves.Units) {
				t.Fatal("two identical exact runs differ")
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		rci := *rc
		rci.Progress = func(done, total int) {
			if done > total/2 {
				cancel()
			}
		}
		_, err = RunPrepared(ctx, &rci, p)
		if !errors.Is(err, ErrInterrupted) || !strings.Contains(err.Error(), rc.Checkpoint) {
			t.Fatalf("%s: interrupted run returned %v", mode, err)
		}
		st, err := ReadCheckpoint(rc.Checkpoint, nil)
		if !errors.Is(err, ErrCheckpointMismatch) || st != nil {
			t.Fatalf("checkpoint read with another fingerprint: %v", err)
		}
		resumed := false
		rcr := *rc
		rcr.Resumed = func(done, _ int) { resumed = done > 0 }
		got, err := RunPrepared(context.Background(), &rcr, p)
		if err != nil {
			t.Fatal(err)
		}
		if !resumed {
			t.Errorf("%s: the rerun did not resume", mode)
		}
		if !reflect.DeepEqual(got.Curves.Units, ref.Curves.Units) {
			t.Errorf("%s: resumed curves differ from an uninterrupted run", mode)
		}
	}
	// Corrupted and mismatched checkpoints are refused.
	rc.Mode, rc.AnchorImages = Exact, 0
	ctx, cancel := context.WithCancel(context.Background())
	rci := *rc
	rci.Progress = func(done, total int) {
		if done > 0 {
			cancel()
		}
	}
	if _, err := RunPrepared(ctx, &rci, p); !errors.Is(err, ErrInterrupted) {
		t.Fatal(err)
	}
	data, err := os.ReadFile(rc.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	rcm := *rc
	rcm.GroupSize = 16
	if _, err := RunPrepared(context.Background(), &rcm, p); !errors.Is(err, ErrCheckpointMismatch) || !strings.Contains(err.Error(), "group_size") {
		t.Errorf("mismatched checkpoint: %v", err)
	}
	i := strings.Index(string(data), `"acc"`) + 12
	bad := append([]byte(nil), data...)
	bad[i] ^= 1
	for _, b := range [][]byte{bad, data[:len(data)/2], []byte("{}")} {
		if err := os.WriteFile(rc.Checkpoint, b, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := RunPrepared(context.Background(), rc, p)
		if !errors.Is(err, ErrCorruptCheckpoint) {
			t.Errorf("corrupted checkpoint: %v", err)
		}
	}
}

func TestShardsMerge(t *testing.T) {
	rc := runConfig(t, 4, 4)
	rc.Checkpoint = ""
	p, err := Prepare(rc)
	if err != nil {
		t.Fatal(err)
	}
	merged := func(rc *RunConfig) ([]*solver.Curves, []string) {
		full, err := RunPrepared(context.Background(), rc, p)
		if err != nil {
			t.Fatal(err)
		}
		var shards []*solver.Curves
		var names []string
		for _, s := range []string{"1/3", "0/3", "2/3"} {
			r := *rc
			r.Shard = s
			res, err := RunPrepared(context.Background(), &r, p)
			if err != nil {
				t.Fatal(err)
			}
			shards = append(shards, roundTrip(t, res.Curves))
			names = append(names, s)
		}
		m, err := Merge(shards, names, false)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(m.Units, roundTrip(t, full.Curves).Units) {
			t.Errorf("%s mode: merged shards differ from the full run", rc.Mode)
		}
		return shards, names
	}
	// Fast mode with the anchors on the first of two batches.
	rf := *rc
	rf.Mode, rf.AnchorImages = Fast, 2
	merged(&rf)
	shards, names := merged(rc)
	if _, err := Merge(shards[:2], names[:2], false); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("merge with a shard missing: %v", err)
	}
	if _, err := Merge([]*solver.Curves{shards[0], shards[0]}, []string{"a", "b"}, true); err == nil || !strings.Contains(err.Error(), "also in") {
		t.Errorf("merge of duplicates: %v", err)
	}
	other := *shards[1]
	other.Meta = map[string]any{}
	for k, v := range shards[1].Meta {
		other.Meta[k] = v
	}
	other.Meta["seed"] = 99.0
	if _, err := Merge([]*solver.Curves{shards[0], &other, shards[2]}, names, false); err == nil || !strings.Contains(err.Error(), "seed") {
		t.Errorf("merge across calibrations: %v", err)
	}
	// --layers A:B.
	r := *rc
	r.Layers = "2:4"
	res, err := RunPrepared(context.Background(), &r, p)
	if err != nil {
		t.Fatal(err)
	}
	layers := p.Model.Backbone.QuantLayers()
	for _, u := range res.Curves.Units {
		if u.Layer != layers[2].Name && u.Layer != layers[3].Name {
			t.Errorf("--layers 2:4 measured %s", u.Layer)
		}
	}
}

func TestBadInput(t *testing.T) {
	// Fewer images than --calib-size: all are used, with a warning.
	rc := runConfig(t, 3, 64)
	var warned string
	rc.Warn = func(m string) { warned = m }
	p, err := Prepare(rc)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Images) != 3 || !strings.Contains(warned, "fewer") {
		t.Errorf("%d images, warning %q", len(p.Images), warned)
	}
	// Missing images are named.
	for _, f := range []string{"000002.png", "000003.png"} {
		if err := os.Remove(filepath.Join(rc.Images, f)); err != nil {
			t.Fatal(err)
		}
	}
	_, err = Prepare(rc)
	if err == nil || !strings.Contains(err.Error(), "000002.png") || !strings.Contains(err.Error(), "000003.png") || !strings.Contains(err.Error(), "2 calibration image") {
		t.Errorf("missing images: %v", err)
	}
	// Bad arguments.
	rc = runConfig(t, 2, 2)
	for _, mod := range []func(r *RunConfig){
		func(r *RunConfig) { r.GroupSize = 24 },
		func(r *RunConfig) { r.Granularity = "tile" },
		func(r *RunConfig) { r.Mode = "slow" },
		func(r *RunConfig) { r.Shard = "3/3" },
		func(r *RunConfig) { r.Layers = "5:2" },
	} {
		r := *rc
		mod(&r)
		if _, err := Run(context.Background(), &r); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
	// A model without quantizable layers: ViTDet with no encoder blocks.
	f, err := safetensors.Open(vitdetPath())
	if err != nil {
		t.Fatal(err)
	}
	var ts []safetensors.Tensor
	for _, n := range f.Names() {
		if strings.HasPrefix(n, "backbone.blocks.") {
			continue
		}
		d, shape, _ := f.Float32(n)
		ts = append(ts, safetensors.Tensor{Name: n, DType: safetensors.F32, Shape: shape, F32: d})
	}
	cfg, _ := model.ParseConfig([]byte(f.Metadata[safetensors.ConfigKey]))
	cfg.NumLayers = 0
	empty := filepath.Join(t.TempDir(), "empty.safetensors")
	if err := safetensors.Write(empty, ts, map[string]string{safetensors.ConfigKey: string(cfg.JSON())}); err != nil {
		t.Fatal(err)
	}
	r := *rc
	r.Model = empty
	if _, err := Run(context.Background(), &r); err == nil || !strings.Contains(err.Error(), "no quantizable") {
		t.Errorf("model without quantizable layers: %v", err)
	}
}

// TestGroupsNotDividing: Swin-tiny's qkv has 48 outputs: groups of 32 give
// [0, 32) and [32, 48).
func TestGroupsNotDividing(t *testing.T) {
	m := fixture(t, "swin_tiny")
	in := calibInputs(t, m, 1, false)
	res, err := Measure(context.Background(), m.Backbone, MakeBatches(in, 1), Options{Mode: Exact, GroupSize: 32, Rule: qformat.MinMax, Layers: []int{0}, Bits: []int{4}}, NewState())
	if err != nil {
		t.Fatal(err)
	}
	l := m.Backbone.QuantLayers()[0]
	want := [][2]int{{0, 32}, {32, 48}}
	if l.Out != 48 || len(res.Curves.Units) != 2 {
		t.Fatalf("%s: %d outputs, %d units", l.Name, l.Out, len(res.Curves.Units))
	}
	for i, u := range res.Curves.Units {
		if u.Channels != want[i] || u.Weights != int64(want[i][1]-want[i][0])*int64(l.In) {
			t.Errorf("unit %d: channels %v weights %d", i, u.Channels, u.Weights)
		}
	}
}

// TestAdditivity asserts the additivity of vitdet_tiny's curves;
// FLBQ_CALIB_LONG=1 also reports swin_tiny's.
func TestAdditivity(t *testing.T) {
	additivity(t, "vitdet_tiny")
	if os.Getenv("FLBQ_CALIB_LONG") != "" {
		additivity(t, "swin_tiny")
	}
}

func additivity(t *testing.T, name string) {
	m := fixture(t, name)
	in := calibInputs(t, m, 4, false)
	b := MakeBatches(in, 4)
	res, err := Measure(context.Background(), m.Backbone, b, Options{Mode: Exact, GroupSize: 32, Rule: qformat.MSE}, NewState())
	if err != nil {
		t.Fatal(err)
	}
	rep, err := CheckAdditivity(context.Background(), m.Backbone, b, res.Curves, NewQuantizer(qformat.MSE), AdditivityOptions{Random: 12, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s, %d allocations: Pearson %.4f, Spearman %.4f, Pearson(log) %.4f, ratio median %.3f (%.3f..%.3f)",
		name, len(rep.Points), rep.Pearson, rep.Spearman, rep.PearsonLog, rep.RatioMedian, rep.RatioMin, rep.RatioMax)
	if rep.Pearson < 0.9 || rep.Spearman < 0.9 {
		t.Errorf("additivity: Pearson %.3f, Spearman %.3f < 0.9", rep.Pearson, rep.Spearman)
	}
	// Curves of part of the backbone are refused.
	part := *res.Curves
	part.Units = part.Units[:3]
	if _, err := CheckAdditivity(context.Background(), m.Backbone, b, &part, NewQuantizer(qformat.MSE), AdditivityOptions{}); err == nil {
		t.Error("partial curves accepted")
	}
}
