package imageio

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/runtime/tensor"
)

var (
	mean = []float64{0.485, 0.456, 0.406}
	std  = []float64{0.229, 0.224, 0.225}
)

// Goldens written by tools/refgen/backbone_goldens.py (torchvision 0.14).
const goldenDir = "../model/testdata"

// imagePath is the input a golden case was computed on: a procedural PNG or
// JPEG beside the goldens.
func imagePath(t *testing.T, c string) string {
	for _, ext := range []string{".png", ".jpg"} {
		p := filepath.Join(goldenDir, "images", c+ext)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("%s: no image in %s/images", c, goldenDir)
	return ""
}

func openGolden(t *testing.T, name string) *safetensors.File {
	f, err := safetensors.Open(filepath.Join(goldenDir, "golden_"+name+".safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func get(t *testing.T, f *safetensors.File, name string) *tensor.Tensor {
	d, s, err := f.Float32(name)
	if err != nil {
		t.Fatal(err)
	}
	return tensor.From(d, s...)
}

// compare checks shapes and returns max|Δ| and mean|Δ|.
func compare(t *testing.T, what string, got, want *tensor.Tensor) (float32, float64) {
	t.Helper()
	if !tensor.SameShape(got.Shape, want.Shape) {
		t.Fatalf("%s: shape %v, want %v", what, got.Shape, want.Shape)
	}
	var sum float64
	for i := range got.Data {
		d := float64(got.Data[i] - want.Data[i])
		if d < 0 {
			d = -d
		}
		sum += d
	}
	return tensor.MaxAbsDiff(got.Data, want.Data), sum / float64(len(got.Data))
}

// Lossless inputs (PNG) must match torchvision to 1e-4·max; JPEG decoders
// differ in the IDCT (Go's vs libjpeg's), so JPEG photos are held to a
// few 8-bit levels at most and a small fraction of one on average.
func checkInput(t *testing.T, c, path string, got, want *tensor.Tensor) {
	maxd, meand := compare(t, c, got, want)
	tol := 1e-4 * tensor.MaxAbs(want.Data)
	if strings.HasSuffix(path, ".jpg") {
		// one 8-bit level is 1/(255·0.224) ≈ 0.0175 after normalisation
		if meand > 0.003 || maxd > 0.07 {
			t.Errorf("%s (JPEG): mean|Δ| = %.4f (> 0.003, 1/6 level), max|Δ| = %.3g (> 0.07, 4 levels)", c, meand, maxd)
		}
		t.Logf("%s (JPEG decoder difference): max|Δ| = %.3g, mean|Δ| = %.4f", c, maxd, meand)
		return
	}
	if !(maxd <= tol) {
		t.Errorf("%s: max|Δ| = %.3g > %.3g", c, maxd, tol)
	}
}

func TestDetectionPreprocessing(t *testing.T) {
	f := openGolden(t, "swin_tiny")
	for _, n := range f.Names() {
		if !strings.HasSuffix(n, "/image_size") {
			continue
		}
		c := strings.TrimSuffix(n, "/image_size")
		t.Run(c, func(t *testing.T) {
			path := imagePath(t, c)
			img, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			in := Detection(img, 96, 160, mean, std)
			sz, _, _ := f.Int64(n)
			if in.Height != int(sz[0]) || in.Width != int(sz[1]) {
				t.Fatalf("resized to %dx%d, torchvision %dx%d", in.Height, in.Width, sz[0], sz[1])
			}
			checkInput(t, c, path, in.Batch, get(t, f, c+"/input"))
		})
	}
}

func TestClassificationPreprocessing(t *testing.T) {
	f := openGolden(t, "vitcls_tiny")
	for _, n := range f.Names() {
		if !strings.HasSuffix(n, "/input") {
			continue
		}
		c := strings.TrimSuffix(n, "/input")
		t.Run(c, func(t *testing.T) {
			path := imagePath(t, c)
			img, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			x, err := Classification(img, 36, 32, mean, std)
			if err != nil {
				t.Fatal(err)
			}
			want := get(t, f, n)
			if strings.HasSuffix(path, ".jpg") {
				checkInput(t, c, path, x, want)
				return
			}
			// torch rounds the resized image back to uint8; values within
			// float rounding of a .5 tie may land one level apart. Allow
			// that for at most 0.5% of the values; all others within 1e-4.
			tol := 1e-4 * tensor.MaxAbs(want.Data)
			level := float32(1/(255*0.225)) + tol
			off := 0
			for i := range x.Data {
				d := x.Data[i] - want.Data[i]
				if d < 0 {
					d = -d
				}
				if d > tol {
					off++
					if d > level {
						t.Fatalf("%s: value %d differs by %.4g (> one 8-bit level)", c, i, d)
					}
				}
			}
			if off*200 > len(x.Data) {
				t.Errorf("%s: %d of %d values one level off (> 0.5%%)", c, off, len(x.Data))
			}
			t.Logf("%s: %d of %d values one 8-bit level off (rounding ties)", c, off, len(x.Data))
		})
	}
}

// Scale factors whose float32 product lands just below an integer: the
// size must follow torch's float32 reciprocal-times-size arithmetic.
func TestDetectionSize(t *testing.T) {
	for _, c := range []struct{ h, w, min, max, oh, ow int }{
		{480, 640, 800, 1333, 800, 1066},
		{427, 640, 800, 1333, 799, 1199},
		{360, 640, 800, 1333, 749, 1333},
		{480, 640, 96, 160, 96, 128},
		{100, 100, 800, 1333, 800, 800},
	} {
		oh, ow := DetectionSize(c.h, c.w, c.min, c.max)
		if oh != c.oh || ow != c.ow {
			t.Errorf("%dx%d → %dx%d, want %dx%d", c.h, c.w, oh, ow, c.oh, c.ow)
		}
	}
}

func TestDecodeBadInput(t *testing.T) {
	if _, err := Decode(bytes.NewReader([]byte("not an image"))); err == nil {
		t.Error("garbage decoded")
	}
	// Gray and 16-bit PNGs convert to RGB.
	g := image.NewGray16(image.Rect(0, 0, 3, 2))
	g.Set(1, 1, color.Gray16{Y: 0xabcd})
	var buf bytes.Buffer
	if err := png.Encode(&buf, g); err != nil {
		t.Fatal(err)
	}
	img, err := Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if img.W != 3 || img.H != 2 || img.Pix[4] != 0xab || img.Pix[6+4] != 0xab || img.Pix[12+4] != 0xab {
		t.Errorf("gray16 conversion: %+v", img)
	}
}
