package plots

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

func TestWritePNG(t *testing.T) {
	p := filepath.Join(t.TempDir(), "rd.png")
	pts := []Point{{"lg", 2, 10}, {"lg", 3, 1}, {"dp", 2, 9}, {"dp", 3, 0.9}}
	if err := RateDistortion(p, "test", "distortion", pts); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if b := img.Bounds(); b.Dx() < 100 || b.Dy() < 100 {
		t.Fatalf("image too small: %v", b)
	}
}

func TestWriteRejects(t *testing.T) {
	dir := t.TempDir()
	if err := RateDistortion(filepath.Join(dir, "rd.bmp"), "", "d", []Point{{"lg", 2, 1}}); err == nil {
		t.Error("unknown extension accepted")
	}
	if err := RateDistortion(filepath.Join(dir, "rd.png"), "", "d", []Point{{"lg", 2, 0}}); err == nil {
		t.Error("nothing to plot accepted")
	}
	if _, err := os.Stat(filepath.Join(dir, "rd.png")); err == nil {
		t.Error("file written despite the error")
	}
}
