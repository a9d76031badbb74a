package main

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flbq/flbq/tools/data/shapes"
)

// On a held-out shapes image the example must print the model line and
// find most annotated objects: a printed box of the right class at IoU ≥ 0.5.
func TestDetectWithTheGeneratedPackage(t *testing.T) {
	dir := t.TempDir()
	ds, err := shapes.Generate(shapes.Options{N: 1, Seed: 2, Size: 192, Out: dir})
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(dir, shapes.ImagesDir, ds.Images[0].FileName)
	var out bytes.Buffer
	if err := run(&out, []string{img}); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	if !strings.HasPrefix(s, "model: dp at 4.00 average bits") {
		t.Fatalf("unexpected output:\n%s", s)
	}
	names := map[int64]string{}
	for _, c := range ds.Categories {
		names[c.ID] = c.Name
	}
	found := 0
	for _, a := range ds.Annotations {
		b := a.BBox
		for _, line := range strings.Split(s, "\n") {
			var name string
			var score, x1, y1, x2, y2 float64
			if _, err := fmt.Sscanf(line, " %s %f  box [%f %f %f %f]", &name, &score, &x1, &y1, &x2, &y2); err != nil {
				continue
			}
			if name == names[a.CategoryID] && iou([4]float64{x1, y1, x2, y2}, [4]float64{b[0], b[1], b[0] + b[2], b[1] + b[3]}) >= 0.5 {
				found++
				break
			}
		}
	}
	if len(ds.Annotations) == 0 || 2*found < len(ds.Annotations) {
		t.Fatalf("%d of %d annotated objects found in:\n%s", found, len(ds.Annotations), s)
	}
	t.Logf("%d of %d objects found:\n%s", found, len(ds.Annotations), s)
	if err := run(&out, []string{"no-such-image.png"}); err == nil {
		t.Fatal("missing image accepted")
	}
}

func iou(a, b [4]float64) float64 {
	ix := max(0, min(a[2], b[2])-max(a[0], b[0]))
	iy := max(0, min(a[3], b[3])-max(a[1], b[1]))
	inter := ix * iy
	return inter / ((a[2]-a[0])*(a[3]-a[1]) + (b[2]-b[0])*(b[3]-b[1]) - inter)
}
