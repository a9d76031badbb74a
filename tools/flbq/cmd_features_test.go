package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/flbq/flbq/runtime/safetensors"
)

const modelTestdata = "../../runtime/model/testdata"

func TestInspectClassifyFeatures(t *testing.T) {
	out, err := runCLI(t, "inspect", "--model", filepath.Join(modelTestdata, "swin_tiny.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"family: swin", "quantizable linear layers: 35", "backbone.body.1.0.attn.qkv", "48×16"} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}
	img := filepath.Join(modelTestdata, "images", "proc_a.png")
	out, err = runCLI(t, "classify", "--model", filepath.Join(modelTestdata, "vitcls_tiny.safetensors"), img)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "\n") != 6 || !strings.Contains(out, " 1. ") {
		t.Errorf("classify output:\n%s", out)
	}
	dst := filepath.Join(t.TempDir(), "f.safetensors")
	if _, err := runCLI(t, "features", "--model", filepath.Join(modelTestdata, "swin_tiny.safetensors"), "--out", dst, img); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(f.Names(), " "); got != "backbone.0 backbone.1 backbone.2 backbone.3 fpn.0 fpn.1 fpn.2 fpn.3 fpn.pool input" {
		t.Errorf("features wrote %s", got)
	}
	// The written features equal the torchvision goldens for this image.
	g, err := safetensors.Open(filepath.Join(modelTestdata, "golden_swin_tiny.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range f.Names() {
		a, _, _ := f.Float32(n)
		b, _, err := g.Float32("proc_a/" + n)
		if err != nil || len(a) != len(b) {
			t.Fatalf("%s: %v (%d vs %d values)", n, err, len(a), len(b))
		}
		var mx, d float32
		for i := range a {
			mx = max(mx, abs32(b[i]))
			d = max(d, abs32(a[i]-b[i]))
		}
		if d > 1e-4*mx {
			t.Errorf("%s: max|Δ| %g > 1e-4·%g", n, d, mx)
		}
	}
}

func abs32(x float32) float32 {
	if x < 0 {
		return -x
	}
	return x
}

func TestFeaturesErrors(t *testing.T) {
	img := filepath.Join(modelTestdata, "images", "proc_a.png")
	if _, err := runCLI(t, "classify", "--model", filepath.Join(modelTestdata, "swin_tiny.safetensors"), img); err == nil || !strings.Contains(err.Error(), "not a classifier") {
		t.Errorf("classify with a detector: %v", err)
	}
	if _, err := runCLI(t, "features", "--model", filepath.Join(modelTestdata, "vitcls_tiny.safetensors"), "--out", filepath.Join(t.TempDir(), "x"), img); err == nil {
		t.Error("features with a classifier succeeded")
	}
	if _, err := runCLI(t, "features", "--model", filepath.Join(modelTestdata, "swin_tiny.safetensors"), "--out", filepath.Join(t.TempDir(), "no", "dir", "x"), img); err == nil {
		t.Error("features into a missing directory succeeded")
	}
}
