package shapes

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/coco"
	"github.com/flbq/flbq/runtime/cocomask"
)

func readTree(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		files[rel] = b
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func TestDeterministic(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	defer backend.SetThreads(backend.SetThreads(3)) // a on 3 goroutines, b on 1
	if _, err := Generate(Options{N: 12, Seed: 7, Size: 64, Out: a, ValFraction: 0.25}); err != nil {
		t.Fatal(err)
	}
	backend.SetThreads(1)
	if _, err := Generate(Options{N: 12, Seed: 7, Size: 64, Out: b, ValFraction: 0.25}); err != nil {
		t.Fatal(err)
	}
	fa, fb := readTree(t, a), readTree(t, b)
	if len(fa) != 12+3 {
		t.Fatalf("%d files, want 15", len(fa))
	}
	for name, x := range fa {
		if !bytes.Equal(x, fb[name]) {
			t.Errorf("%s differs between two runs with the same seed", name)
		}
	}
	c := t.TempDir()
	if _, err := Generate(Options{N: 12, Seed: 8, Size: 64, Out: c}); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(readTree(t, c)["images/000001.png"], fa["images/000001.png"]) {
		t.Error("a different seed gave the same image")
	}
}

func TestDatasetConsistent(t *testing.T) {
	for _, format := range []MaskFormat{MaskRLE, MaskPolygon} {
		dir := t.TempDir()
		d, err := Generate(Options{N: 40, Seed: 1, Size: 96, Out: dir, Masks: format, ValFraction: 0.2})
		if err != nil {
			t.Fatal(err)
		}
		back, err := coco.ReadDataset(filepath.Join(dir, InstancesFile))
		if err != nil {
			t.Fatal(err)
		}
		if len(back.Images) != 40 || len(back.Annotations) != len(d.Annotations) {
			t.Fatalf("%d images, %d annotations", len(back.Images), len(back.Annotations))
		}
		perImage := map[int64]int{}
		cats := map[int64]int{}
		polys := 0
		for _, a := range back.Annotations {
			perImage[a.ImageID]++
			cats[a.CategoryID]++
			r, err := a.Segmentation.ToRLE(96, 96)
			if err != nil {
				t.Fatalf("annotation %d: %v", a.ID, err)
			}
			if a.Segmentation.Kind == coco.SegPolygons {
				polys++
			}
			if float64(r.Area()) != a.Area || r.Area() < 30 {
				t.Errorf("annotation %d: mask area %d, area field %v", a.ID, r.Area(), a.Area)
			}
			if r.ToBbox() != a.BBox {
				t.Errorf("annotation %d: mask box %v, bbox %v", a.ID, r.ToBbox(), a.BBox)
			}
		}
		for _, im := range back.Images {
			if n := perImage[im.ID]; n < 1 || n > 5 {
				t.Errorf("image %d has %d objects", im.ID, n)
			}
		}
		if len(cats) != 3 {
			t.Errorf("categories used: %v", cats)
		}
		if format == MaskPolygon && polys < len(back.Annotations)*3/4 {
			t.Errorf("only %d of %d masks are polygons", polys, len(back.Annotations))
		}
		// Masks are disjoint within an image (occlusion) and the images
		// decode as RGB of the right size.
		f, err := os.Open(filepath.Join(dir, ImagesDir, back.Images[0].FileName))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil || img.Bounds().Dx() != 96 || img.Bounds().Dy() != 96 {
			t.Fatalf("image: %v %v", img.Bounds(), err)
		}
		var masks []cocomask.RLE
		for _, a := range back.Annotations {
			if a.ImageID == back.Images[0].ID {
				r, _ := a.Segmentation.ToRLE(96, 96)
				masks = append(masks, r)
			}
		}
		for i := range masks {
			for j := i + 1; j < len(masks); j++ {
				if inter := cocomask.Merge([]cocomask.RLE{masks[i], masks[j]}, true); inter.Area() != 0 {
					t.Errorf("masks %d and %d overlap", i, j)
				}
			}
		}
		// train + val partition the images.
		tr, err := coco.ReadDataset(filepath.Join(dir, TrainFile))
		if err != nil {
			t.Fatal(err)
		}
		va, err := coco.ReadDataset(filepath.Join(dir, ValFile))
		if err != nil {
			t.Fatal(err)
		}
		if len(va.Images) != 8 || len(tr.Images) != 32 || len(tr.Annotations)+len(va.Annotations) != len(back.Annotations) {
			t.Errorf("split: %d/%d images, %d+%d annotations", len(tr.Images), len(va.Images), len(tr.Annotations), len(va.Annotations))
		}
		// The ground truth evaluates to AP 1 against itself.
		var dets []coco.Result
		for _, a := range va.Annotations {
			dets = append(dets, coco.Result{ImageID: a.ImageID, CategoryID: a.CategoryID, Score: 1, BBox: a.BBox, HasBBox: true, Segmentation: a.Segmentation})
		}
		e, err := coco.Evaluate(va, dets, coco.Segm, coco.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if e.Stats[0] < 1-1e-12 {
			t.Errorf("self-evaluation AP %v", e.Stats[0])
		}
	}
}

func TestPolygonsExact(t *testing.T) {
	h, w := 7, 9
	cases := map[string][]string{
		"diagonal": {"X........", ".X.......", "..XX.....", "..XX..X..", ".......X.", "........X", "XXXXXXXXX"},
		"ring":     {".........", ".XXXXX...", ".X...X...", ".XXXXX...", ".........", ".........", "........."},
		"empty":    {".........", ".........", ".........", ".........", ".........", ".........", "........."},
	}
	for name, rows := range cases {
		m := make([]byte, h*w)
		for y, r := range rows {
			for x, c := range r {
				if c == 'X' {
					m[y*w+x] = 1
				}
			}
		}
		p := Polygons(m, h, w)
		switch name {
		case "ring", "empty":
			if p != nil {
				t.Errorf("%s: got polygons %v, want nil", name, p)
			}
			continue
		}
		var rs []cocomask.RLE
		for _, q := range p {
			r, err := cocomask.FrPoly(q, h, w)
			if err != nil {
				t.Fatal(err)
			}
			rs = append(rs, r)
		}
		if got := cocomask.Merge(rs, false).Decode(); !slices.Equal(got, m) {
			t.Errorf("%s: polygons %v do not rasterise to the mask", name, p)
		}
		if len(p) != 6 {
			t.Errorf("%s: %d polygons, want 6 (diagonal pixels stay apart)", name, len(p))
		}
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []Options{
		{N: 0, Size: 64, Out: "x"},
		{N: 1, Size: 8, Out: "x"},
		{N: 1, Size: 64},
		{N: 1, Size: 64, Out: "x", Masks: "png"},
		{N: 10, Size: 64, Out: "x", ValFraction: 1},
		{N: 2, Size: 64, Out: "x", ValFraction: 0.1},
	} {
		if _, err := Generate(o); err == nil {
			t.Errorf("%+v accepted", o)
		}
	}
}
