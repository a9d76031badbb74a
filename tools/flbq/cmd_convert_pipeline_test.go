package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConvertedMMDetPipeline: a checkpoint converted from mmdetection's
// layout goes through the rest of the pipeline unchanged: inspect,
// features, detect, calibrate, allocate, eval with the allocation, generate,
// detect with the generated package's packed weights, and results.
func TestConvertedMMDetPipeline(t *testing.T) {
	convertedPipeline(t, "mmdet", `{"min_size": 128, "max_size": 192}`, "../convert/testdata/mmdet/mask_rcnn_swin_tiny_mmdet.pth", "../convert/testdata/mmdet/images/wide.png")
}

// TestConvertedViTDetPipeline: the same for detectron2's ViTDet.
func TestConvertedViTDetPipeline(t *testing.T) {
	convertedPipeline(t, "detectron2", `{"min_size": 128, "max_size": 128, "square_pad": 128}`, "../convert/testdata/vitdet/model_final_tiny.pkl", "../convert/testdata/vitdet/images/wide.png")
}

func convertedPipeline(t *testing.T, from, scale, ckpt, img string) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "scale.json")
	if err := os.WriteFile(cfg, []byte(scale), 0o644); err != nil {
		t.Fatal(err)
	}
	model := filepath.Join(dir, "model.safetensors")
	if out, err := runCLI(t, "convert", "--from", from, "--config", cfg, "--out", model, ckpt); err != nil {
		t.Fatalf("convert: %v\n%s", err, out)
	}
	steps := [][]string{
		{"inspect", "--model", model},
		{"features", "--model", model, "--out", filepath.Join(dir, "feats.safetensors"), img},
		{"detect", "--model", model, "--score-thresh", "0.05", "--out", filepath.Join(dir, "fp32.json"), img},
	}
	data, imgs := tinyCOCO(t, 3)
	curves := filepath.Join(dir, "curves.json")
	alloc := filepath.Join(dir, "alloc.json")
	pkg := filepath.Join(dir, "pkg")
	steps = append(steps,
		[]string{"calibrate", "--model", model, "--data", data, "--images", imgs, "--calib-size", "2", "--quiet", "--rule", "minmax", "--out", curves},
		[]string{"allocate", "--curves", curves, "--target-bits", "4", "--solver", "dp", "--out", alloc},
		[]string{"eval", "--model", model, "--alloc", alloc, "--val", data, "--images", imgs, "--out", filepath.Join(dir, "eval")},
		[]string{"generate", "--model", model, "--alloc", alloc, "--rule", "minmax", "--pkg", "swinq", "--out", pkg},
		[]string{"detect", "--model", filepath.Join(pkg, "weights.bin"), "--score-thresh", "0.05", "--out", filepath.Join(dir, "packed.json"), img},
		[]string{"results", "--model", model, "--budgets", "3", "--methods", "dp", "--granularities", "group", "--shapes-train", "4",
			"--shapes-val", "2", "--calib-size", "2", "--work", filepath.Join(dir, "study"), "--out", filepath.Join(dir, "RESULTS.md")},
	)
	for _, s := range steps {
		out, err := runCLI(t, s...)
		if err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(s, " "), err, out)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "RESULTS.md")); err != nil || !strings.Contains(string(b), "| 3 | F-LBQ-DP group |") {
		t.Errorf("results on the converted model: %v\n%s", err, b)
	}
	// A ViTDet's bits-per-layer figure shades its global-attention blocks.
	fig, err := os.ReadFile(filepath.Join(dir, "figures", "model-layer-bits.svg"))
	if err != nil || strings.Contains(string(fig), "global-attention blocks") != (from == "detectron2") {
		t.Errorf("layer-bits figure (%v): global blocks shaded %v, want %v", err, strings.Contains(string(fig), "global-attention blocks"), from == "detectron2")
	}
	for _, f := range []string{"fp32.json", "packed.json", "eval/results.json"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil || !strings.Contains(string(b), `"category_id"`) {
			t.Errorf("%s: no detections (%v)", f, err)
		}
	}
}
