package calib

import (
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/flbq/flbq/runtime/coco"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/tensor"
)

// fixture returns a testdata model of runtime/model.
func fixture(t testing.TB, name string) *model.Model {
	t.Helper()
	m, err := model.Load(filepath.Join("..", "..", "runtime", "model", "testdata", name+".safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// writeDataset writes n PNGs of smooth random patterns (sizes vary when
// mixed is set) and a COCO instances.json naming them; it returns the json
// path and the images directory.
func writeDataset(t testing.TB, n int, mixed bool) (string, string) {
	t.Helper()
	dir := t.TempDir()
	imgDir := filepath.Join(dir, "images")
	if err := os.MkdirAll(imgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	ds := coco.Dataset{Categories: []coco.Category{{ID: 1, Name: "thing"}}, Annotations: []coco.Annotation{}}
	for i := 0; i < n; i++ {
		w, h := 80, 64
		if mixed && i%3 == 1 {
			w, h = 64, 96
		}
		rng := rand.New(rand.NewPCG(uint64(i), 7))
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		var f [3][4]float64
		for c := range f {
			for k := range f[c] {
				f[c][k] = rng.Float64()
			}
		}
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				var px [3]uint8
				for c := 0; c < 3; c++ {
					v := 0.5 + 0.25*math.Sin(f[c][0]*0.3*float64(x)+f[c][1]*6) + 0.25*math.Cos(f[c][2]*0.3*float64(y)+f[c][3]*6) + 0.1*rng.NormFloat64()
					px[c] = uint8(min(max(v*255, 0), 255))
				}
				img.Set(x, y, color.RGBA{px[0], px[1], px[2], 255})
			}
		}
		name := fmt.Sprintf("%06d.png", i+1)
		fh, err := os.Create(filepath.Join(imgDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := png.Encode(fh, img); err != nil {
			t.Fatal(err)
		}
		fh.Close()
		ds.Images = append(ds.Images, coco.Image{ID: int64(100 + i), FileName: name, Width: w, Height: h})
	}
	js, err := json.Marshal(ds)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "instances.json")
	if err := os.WriteFile(p, js, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, imgDir
}

// calibInputs loads n images of a fresh dataset preprocessed for m.
func calibInputs(t testing.TB, m *model.Model, n int, mixed bool) []*tensor.Tensor {
	t.Helper()
	js, dir := writeDataset(t, n, mixed)
	ds, err := coco.ReadDataset(js)
	if err != nil {
		t.Fatal(err)
	}
	sel, _ := SelectImages(ds, n, 0)
	in, err := LoadInputs(m.Config, dir, sel)
	if err != nil {
		t.Fatal(err)
	}
	return in
}

// tensorOnes returns a [1,3,s,s] input of a smooth pattern.
func tensorOnes(s int) *tensor.Tensor {
	x := tensor.New(1, 3, s, s)
	for i := range x.Data {
		x.Data[i] = float32(math.Sin(float64(i%s)*0.05) + math.Cos(float64(i/s)*0.03))
	}
	return x
}
