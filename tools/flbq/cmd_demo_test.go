package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The demo pipeline end to end on the tiny fixture detector (random
// weights: the AP figures are meaningless, the plumbing is not).
func TestDemoPipeline(t *testing.T) {
	dir := t.TempDir()
	out, err := runCLI(t, "demo", "--model", "../../runtime/maskrcnn/testdata/swin_maskrcnn.safetensors",
		"--work", filepath.Join(dir, "work"), "--out", filepath.Join(dir, "out"),
		"--shapes-train", "10", "--shapes-val", "2", "--calib-size", "4")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"calibrate:", "allocate lg", "allocate dp", "generate: Go package shapesswin", "box AP", "fp32", "uniform"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	for _, f := range []string{"out/overlay.png", "work/curves.json", "work/dp.alloc.json", "work/shapesswin/model.go", "work/shapesswin/weights.bin"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if _, err := runCLI(t, "demo", "--model", filepath.Join(dir, "missing.safetensors")); err == nil || !strings.Contains(err.Error(), "--model") {
		t.Fatalf("missing model: %v", err)
	}
}

// --train and --val take any COCO dataset on disk, as calibrate and eval do.
func TestDemoOwnDatasets(t *testing.T) {
	dir := t.TempDir()
	for _, s := range []struct{ name, n, seed string }{{"tr", "8", "5"}, {"va", "2", "6"}} {
		if _, err := runCLI(t, "data", "shapes", "--n", s.n, "--seed", s.seed, "--size", "96", "--out", filepath.Join(dir, s.name)); err != nil {
			t.Fatal(err)
		}
	}
	base := []string{"demo", "--model", "../../runtime/maskrcnn/testdata/swin_maskrcnn.safetensors",
		"--work", filepath.Join(dir, "work"), "--out", filepath.Join(dir, "out"), "--calib-size", "4"}
	out, err := runCLI(t, append(base, "--train", filepath.Join(dir, "tr", "instances.json"), "--train-images", filepath.Join(dir, "tr", "images"),
		"--val", filepath.Join(dir, "va", "instances.json"), "--val-images", filepath.Join(dir, "va", "images"))...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "calibrating on "+filepath.Join(dir, "tr", "instances.json")) || !strings.Contains(out, "box AP") {
		t.Errorf("demo on own datasets:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "work", "train")); err == nil {
		t.Error("the shapes training set was generated although --train was given")
	}
	if _, err := runCLI(t, append(base, "--train", filepath.Join(dir, "tr", "instances.json"))...); err == nil || !strings.Contains(err.Error(), "--train-images") {
		t.Errorf("--train without --train-images: %v", err)
	}
}
