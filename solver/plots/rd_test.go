package plots

import (
	"bytes"
	"fmt"
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

// TestWriteOnePoint: a single point (or one distinct value) used to make
// gonum pad the log axis below zero and panic.
func TestWriteOnePoint(t *testing.T) {
	dir := t.TempDir()
	for i, pts := range [][]Point{{{"dp", 3, 0.01}}, {{"lg", 2, 0.5}, {"dp", 3, 0.5}}} {
		for _, ext := range []string{"png", "svg"} {
			if err := RateDistortion(filepath.Join(dir, fmt.Sprintf("rd%d.%s", i, ext)), "one", "d", pts); err != nil {
				t.Errorf("%v (%s): %v", pts, ext, err)
			}
		}
	}
}
