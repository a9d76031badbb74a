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
		"--train", "10", "--val", "2", "--calib-size", "4")
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
