package main

import (
	"encoding/json"
	"image"
	imgdraw "image/draw"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flbq/flbq/runtime/coco"
)

const (
	detModel = "../../runtime/maskrcnn/testdata/vit_maskrcnn.safetensors"
	detImgs  = "../../runtime/maskrcnn/testdata/images/"
)

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDetectCLI(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "000000000042.png"), filepath.Join(dir, "000000000007.png")
	copyFile(t, detImgs+"shapes.png", a)
	copyFile(t, detImgs+"gray.png", b)
	out := filepath.Join(dir, "dets.json")
	draw := filepath.Join(dir, "draw")
	if _, err := runCLI(t, "detect", "--model", detModel, "--score-thresh", "0.6", "--out", out, "--draw", draw, a, b); err != nil {
		t.Fatal(err)
	}
	rs, err := coco.ReadResults(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) == 0 {
		t.Fatal("no detections")
	}
	perImage := map[int64]int{}
	for _, r := range rs {
		perImage[r.ImageID]++
		if r.Score <= 0.6 || !r.HasBBox || r.Segmentation.Kind != coco.SegCompressed || r.CategoryID < 1 || r.CategoryID > 4 {
			t.Fatalf("bad result %+v", r)
		}
		h := 150
		if r.ImageID == 7 {
			h = 121
		}
		if r.Segmentation.Size[0] != h {
			t.Fatalf("image %d: mask size %v", r.ImageID, r.Segmentation.Size)
		}
	}
	if len(perImage) != 2 || perImage[42] == 0 || perImage[7] == 0 {
		t.Errorf("image ids from numeric stems: %v", perImage)
	}
	for _, n := range []string{"000000000042.png", "000000000007.png"} {
		f, err := os.Open(filepath.Join(draw, n))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := png.DecodeConfig(f)
		f.Close()
		if err != nil || cfg.Width == 0 {
			t.Errorf("%s: %v", n, err)
		}
	}
	// eval-results accepts the file: a ground truth made of the detections
	// of image 42 gives AP 1 there.
	gt := coco.Dataset{Images: []coco.Image{{ID: 42, FileName: "000000000042.png", Width: 230, Height: 150}, {ID: 7, FileName: "000000000007.png", Width: 97, Height: 121}}}
	for i := 1; i <= 4; i++ {
		gt.Categories = append(gt.Categories, coco.Category{ID: int64(i), Name: CATS[i]})
	}
	for i, r := range rs {
		if r.ImageID == 42 {
			gt.Annotations = append(gt.Annotations, coco.Annotation{ID: int64(i + 1), ImageID: 42, CategoryID: r.CategoryID, Segmentation: r.Segmentation, Area: r.BBox[2] * r.BBox[3], BBox: r.BBox})
		}
	}
	gb, _ := json.Marshal(gt)
	gtPath := filepath.Join(dir, "gt.json")
	os.WriteFile(gtPath, gb, 0o644)
	stdout, err := runCLI(t, "eval-results", "--gt", gtPath, "--dets", out, "--iou-type", "segm")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout, "Average Precision") {
		t.Errorf("eval-results printed %q", stdout)
	}
	// --images-json maps file names to ids; a single --draw is a file.
	one := filepath.Join(dir, "one.png")
	stdout, err = runCLI(t, "detect", "--model", detModel, "--images-json", gtPath, "--draw", one, "--no-masks", a)
	if err != nil {
		t.Fatal(err)
	}
	rs, err = coco.DecodeResults(strings.NewReader(stdout))
	if err != nil || len(rs) == 0 || rs[0].ImageID != 42 || rs[0].Segmentation.Kind != coco.SegNone {
		t.Errorf("stdout results %v, %v", rs, err)
	}
	if _, err := os.Stat(one); err != nil {
		t.Error(err)
	}
	// A 16-bit RGBA PNG is converted to 8 bits and detects like the original.
	src, err := os.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	im, err := png.Decode(src)
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	deep := image.NewRGBA64(im.Bounds())
	imgdraw.Draw(deep, deep.Bounds(), im, image.Point{}, imgdraw.Src)
	p16 := filepath.Join(dir, "42.png")
	f16, _ := os.Create(p16)
	png.Encode(f16, deep)
	f16.Close()
	s16, err := runCLI(t, "detect", "--model", detModel, "--no-masks", p16)
	if err != nil {
		t.Fatal(err)
	}
	s8, _ := runCLI(t, "detect", "--model", detModel, "--no-masks", filepath.Join(dir, "000000000042.png"))
	if s16 != s8 || len(s16) < 10 {
		t.Errorf("16-bit PNG results differ from 8-bit: %.200q vs %.200q", s16, s8)
	}
	// Non-numeric stems: 1-based positions.
	c := filepath.Join(dir, "cat.png")
	copyFile(t, detImgs+"shapes.png", c)
	stdout, err = runCLI(t, "detect", "--model", detModel, b, c)
	if err != nil {
		t.Fatal(err)
	}
	rs, _ = coco.DecodeResults(strings.NewReader(stdout))
	ids := map[int64]bool{}
	for _, r := range rs {
		ids[r.ImageID] = true
	}
	if len(ids) != 2 || !ids[1] || !ids[2] {
		t.Errorf("positional ids: %v", ids)
	}
}

var CATS = []string{"__background__", "circle", "square", "triangle", "blob"}

func TestDetectCLIEmptyAndErrors(t *testing.T) {
	dir := t.TempDir()
	img := detImgs + "shapes.png"
	out := filepath.Join(dir, "dets.json")
	// No detection above the threshold: a valid empty list.
	if _, err := runCLI(t, "detect", "--model", detModel, "--score-thresh", "0.9999999", "--out", out, img); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); strings.TrimSpace(string(b)) != "[]" {
		t.Errorf("empty results: %q", b)
	}
	bad := filepath.Join(dir, "bad.png")
	os.WriteFile(bad, []byte("not an image"), 0o644)
	empty := filepath.Join(dir, "empty.png")
	os.WriteFile(empty, nil, 0o644)
	out2 := filepath.Join(dir, "out2.json")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--out", out2, img, bad}, "bad.png: not a decodable"},
		{[]string{"--out", out2, empty}, "empty.png"},
		{[]string{"--out", out2, filepath.Join(dir, "missing.png")}, "missing.png"},
		{[]string{"--out", filepath.Join(dir, "no", "such", "dir.json"), img}, "--out"},
		{[]string{"--draw", filepath.Join(dir, "no", "such", "x.png"), img}, "--draw"},
		{[]string{"--draw", filepath.Join(dir, "d"), img, filepath.Join(dir, "..", filepath.Base(dir), "bad.png")}, ""},
		{[]string{"--max-pixels", "100", "--out", out2, img}, "100-pixel limit"},
		{[]string{"--score-thresh", "1.5", img}, "--score-thresh"},
		{[]string{"--images-json", filepath.Join(dir, "none.json"), img}, "none.json"},
		{[]string{}, "no images"},
	}
	for _, c := range cases {
		_, err := runCLI(t, append([]string{"detect", "--model", detModel}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err = %v, want %q", c.args, err, c.want)
		}
		if _, serr := os.Stat(out2); serr == nil {
			t.Fatalf("%v: wrote %s despite the error", c.args, out2)
		}
	}
	// Duplicate stems in a draw directory.
	sub := filepath.Join(dir, "sub")
	os.MkdirAll(sub, 0o755)
	copyFile(t, img, filepath.Join(sub, "shapes.png"))
	if _, err := runCLI(t, "detect", "--model", detModel, "--draw", filepath.Join(dir, "dd"), img, filepath.Join(sub, "shapes.png")); err == nil || !strings.Contains(err.Error(), "both be drawn") {
		t.Errorf("duplicate stems: %v", err)
	}
	if _, err := runCLI(t, "detect", "--model", filepath.Join(dir, "nomodel.safetensors"), img); err == nil {
		t.Error("missing model: no error")
	}
	// Nothing left behind by the failures (no temp files).
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left %s", e.Name())
		}
	}
}
