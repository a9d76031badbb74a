package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flbq/flbq/tools/data/shapes"
)

// flbq eval on the bundled model, sharded and merged, equals one run; the
// library's own tests (tools/pipeline) cover resume and refusals.
func TestEvalDatasetCLI(t *testing.T) {
	dir := t.TempDir()
	if _, err := shapes.Generate(shapes.Options{N: 4, Seed: 2, Size: 192, Out: filepath.Join(dir, "data")}); err != nil {
		t.Fatal(err)
	}
	args := func(out string, extra ...string) []string {
		return append([]string{"eval", "--model", "../models/shapes-swin-t32.safetensors",
			"--val", filepath.Join(dir, "data", shapes.InstancesFile), "--images", filepath.Join(dir, "data", shapes.ImagesDir),
			"--out", filepath.Join(dir, out), "--threads", "2"}, extra...)
	}
	out, err := runCLI(t, args("one")...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "# iouType=bbox") || !strings.Contains(out, "# iouType=segm") || !strings.Contains(out, "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]") {
		t.Fatalf("no summary:\n%s", out)
	}
	for i, s := range []string{"0/2", "1/2"} {
		if out, err := runCLI(t, args("s"+string(rune('0'+i)), "--shard", s)...); err != nil || !strings.Contains(out, "shard "+s+" done") {
			t.Fatalf("shard %s: %v\n%s", s, err, out)
		}
	}
	merged, err := runCLI(t, "eval", "merge", "--val", filepath.Join(dir, "data", shapes.InstancesFile), "--out", filepath.Join(dir, "m"),
		filepath.Join(dir, "s1"), filepath.Join(dir, "s0"))
	if err != nil {
		t.Fatal(err)
	}
	if merged != out {
		t.Errorf("merged summary differs:\n%s\nvs\n%s", merged, out)
	}
	for _, f := range []string{"results.json", "eval.json"} {
		a, _ := os.ReadFile(filepath.Join(dir, "one", f))
		b, _ := os.ReadFile(filepath.Join(dir, "m", f))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s: merged differs from the single run", f)
		}
	}
	if _, err := runCLI(t, "eval", "--val", "x.json"); err == nil || !strings.Contains(err.Error(), "--model") {
		t.Errorf("missing --model: %v", err)
	}
	if _, err := runCLI(t, args("bad", "--shard", "2/2")...); err == nil || !strings.Contains(err.Error(), "--shard") {
		t.Errorf("bad shard: %v", err)
	}
}
