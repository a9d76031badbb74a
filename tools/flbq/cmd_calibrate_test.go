package main

import (
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flbq/flbq/solver"
)

// tinyCOCO writes n 64×80 PNGs and an instances.json naming them.
func tinyCOCO(t *testing.T, n int) (string, string) {
	dir := t.TempDir()
	imgDir := filepath.Join(dir, "images")
	os.MkdirAll(imgDir, 0o755)
	var imgs []map[string]any
	for i := 0; i < n; i++ {
		img := image.NewRGBA(image.Rect(0, 0, 80, 64))
		for y := 0; y < 64; y++ {
			for x := 0; x < 80; x++ {
				img.Set(x, y, color.RGBA{uint8(x*3 + i*40), uint8(y * 4), uint8((x + y + 17*i) % 256), 255})
			}
		}
		name := fmt.Sprintf("%d.png", i)
		f, err := os.Create(filepath.Join(imgDir, name))
		if err != nil {
			t.Fatal(err)
		}
		png.Encode(f, img)
		f.Close()
		imgs = append(imgs, map[string]any{"id": i + 1, "file_name": name, "width": 80, "height": 64})
	}
	js, _ := json.Marshal(map[string]any{"images": imgs, "annotations": []any{}, "categories": []any{map[string]any{"id": 1, "name": "x"}}})
	p := filepath.Join(dir, "instances.json")
	os.WriteFile(p, js, 0o644)
	return p, imgDir
}

func TestCalibrateCLI(t *testing.T) {
	data, imgs := tinyCOCO(t, 4)
	model := filepath.Join("..", "..", "runtime", "model", "testdata", "vitdet_tiny.safetensors")
	dir := t.TempDir()
	base := []string{"calibrate", "--model", model, "--data", data, "--images", imgs, "--calib-size", "3", "--quiet", "--rule", "minmax"}
	full := filepath.Join(dir, "full.json")
	out, err := runCLI(t, append(base, "--out", full)...)
	if err != nil || !strings.Contains(out, "wrote") {
		t.Fatalf("calibrate: %v\n%s", err, out)
	}
	c, err := solver.ReadCurvesFile(full)
	if err != nil {
		t.Fatal(err)
	}
	var shards []string
	for i := 0; i < 2; i++ {
		s := filepath.Join(dir, fmt.Sprintf("s%d.json", i))
		if _, err := runCLI(t, append(base, "--shard", fmt.Sprintf("%d/2", i), "--out", s)...); err != nil {
			t.Fatal(err)
		}
		shards = append(shards, s)
	}
	merged := filepath.Join(dir, "merged.json")
	if out, err := runCLI(t, append([]string{"curves", "merge", "--out", merged}, shards...)...); err != nil {
		t.Fatalf("merge: %v\n%s", err, out)
	}
	m, err := solver.ReadCurvesFile(merged)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Units) != len(c.Units) {
		t.Fatalf("merged %d units, full run %d", len(m.Units), len(c.Units))
	}
	for i := range m.Units {
		if m.Units[i].UnitID != c.Units[i].UnitID || fmt.Sprint(m.Units[i].Distortion) != fmt.Sprint(c.Units[i].Distortion) {
			t.Fatalf("unit %d differs after merge", i)
		}
	}
	if _, err := runCLI(t, "curves", "merge", "--out", merged, shards[0]); err == nil {
		t.Error("merge with a missing shard succeeded")
	}
	out, err = runCLI(t, append(base, "--check-additivity", "--curves", full, "--random", "4", "--budgets", "3,5")...)
	if err != nil || !strings.Contains(out, "Pearson") {
		t.Fatalf("additivity: %v\n%s", err, out)
	}
	if _, err := runCLI(t, append(base, "--out", full, "--group-size", "20")...); err == nil || !strings.Contains(err.Error(), "multiple of 16") {
		t.Errorf("--group-size 20: %v", err)
	}
	fast := filepath.Join(dir, "fast.json")
	if out, err := runCLI(t, append(base, "--out", fast, "--calib-mode", "fast", "--batch", "1", "--anchor-images", "2")...); err != nil {
		t.Fatalf("fast mode: %v\n%s", err, out)
	}
	if f, err := solver.ReadCurvesFile(fast); err != nil {
		t.Error(err)
	} else if f.Meta["anchor_images"] != 2.0 {
		t.Errorf("fast mode, --anchor-images 2: meta anchor_images %v, want 2", f.Meta["anchor_images"])
	}
	if _, err := runCLI(t, append(base, "--out", fast, "--mode", "fast", "--anchor-images", "-1")...); err == nil || !strings.Contains(err.Error(), "--anchor-images") {
		t.Errorf("--anchor-images -1: %v", err)
	}
}
