package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flbq/flbq/runtime/coco"
)

func TestDataShapesCLI(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, dir := range []string{a, b} {
		out, err := runCLI(t, "data", "shapes", "--n", "6", "--seed", "3", "--size", "48", "--out", dir, "--split", "val=0.5", "--masks", "polygon")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "wrote 6 images") {
			t.Fatalf("output %q", out)
		}
	}
	for _, f := range []string{"instances.json", "train.json", "val.json", "images/000006.png"} {
		x, err := os.ReadFile(filepath.Join(a, f))
		if err != nil {
			t.Fatal(err)
		}
		y, _ := os.ReadFile(filepath.Join(b, f))
		if !bytes.Equal(x, y) {
			t.Errorf("%s differs between runs", f)
		}
	}
}

func TestDataShapesCLIErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--n", "0", "--out", dir}, "--n 0"},
		{[]string{"--n", "2", "--size", "10", "--out", dir}, "--size 10"},
		{[]string{"--n", "2", "--out", dir, "--masks", "bitmap"}, `mask format "bitmap"`},
		{[]string{"--n", "2", "--out", dir, "--split", "train=0.8"}, "want val=F"},
		{[]string{"--n", "2", "--out", dir, "--split", "val=1.5"}, "(0, 1)"},
		{[]string{"--n", "two", "--out", dir}, "invalid value"},
		{[]string{"--n", "2"}, `"out"`},
	} {
		_, err := runCLI(t, append([]string{"data", "shapes"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err %v, want %q", c.args, err, c.want)
		}
	}
}

// data synth-coco writes a ground truth and results that eval-results
// scores; --n counts the images.
func TestDataSynthCOCO(t *testing.T) {
	dir := t.TempDir()
	if _, err := runCLI(t, "data", "synth-coco", "--n", "6", "--dets", "5", "--seed", "3", "--out", dir); err != nil {
		t.Fatal(err)
	}
	gt, err := coco.ReadDataset(filepath.Join(dir, "gt.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(gt.Images) != 6 {
		t.Errorf("%d images, want 6", len(gt.Images))
	}
	out, err := runCLI(t, "eval-results", "--gt", filepath.Join(dir, "gt.json"), "--dets", filepath.Join(dir, "results.json"))
	if err != nil || !strings.Contains(out, "Average Precision") {
		t.Fatalf("eval-results: %v\n%s", err, out)
	}
}
