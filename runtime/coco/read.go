package coco

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/flbq/flbq/runtime/atomicfile"
	"github.com/flbq/flbq/runtime/cocomask"
)

// ReadDataset reads and validates a COCO instances JSON file.
func ReadDataset(path string) (*Dataset, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	d, err := decodeDatasetBytes(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// WriteDataset writes d as JSON, atomically.
func WriteDataset(path string, d *Dataset) error {
	return atomicfile.Write(path, func(w io.Writer) error {
		return json.NewEncoder(w).Encode(d)
	})
}

// DecodeDataset reads a COCO instances JSON document and validates it
// (see Dataset.Validate). Unknown keys are skipped; key names are
// case-sensitive, as in pycocotools.
func DecodeDataset(r io.Reader) (*Dataset, error) {
	b, err := readAll(r)
	if err != nil {
		return nil, err
	}
	return decodeDatasetBytes(b)
}

// HasBBox reports whether the annotation has a "bbox".
func (a *Annotation) HasBBox() bool { return !math.IsNaN(a.BBox[0]) }

// Validate checks the references and values of d: unique image,
// category and annotation ids, positive image sizes, annotations that
// refer to a listed image and category, finite non-negative areas and
// boxes.
func (d *Dataset) Validate() error {
	imgs := make(map[int64]int, len(d.Images))
	for i, im := range d.Images {
		if j, dup := imgs[im.ID]; dup {
			return fmt.Errorf("images[%d] (id %d): duplicate id (also images[%d])", i, im.ID, j)
		}
		if im.Width <= 0 || im.Height <= 0 || uint64(im.Width)*uint64(im.Height) > cocomask.MaxPixels {
			return fmt.Errorf("images[%d] (id %d): bad size %dx%d", i, im.ID, im.Width, im.Height)
		}
		imgs[im.ID] = i
	}
	cats := make(map[int64]int, len(d.Categories))
	for i, c := range d.Categories {
		if j, dup := cats[c.ID]; dup {
			return fmt.Errorf("categories[%d] (id %d): duplicate id (also categories[%d])", i, c.ID, j)
		}
		cats[c.ID] = i
	}
	anns := make(map[int64]int, len(d.Annotations))
	for i := range d.Annotations {
		a := &d.Annotations[i]
		fail := func(format string, args ...any) error {
			return fmt.Errorf("annotations[%d] (id %d): %s", i, a.ID, fmt.Sprintf(format, args...))
		}
		if j, dup := anns[a.ID]; dup {
			return fail("duplicate id (also annotations[%d])", j)
		}
		anns[a.ID] = i
		if _, ok := imgs[a.ImageID]; !ok {
			return fail("image_id %d is not in images", a.ImageID)
		}
		if _, ok := cats[a.CategoryID]; !ok {
			return fail("category_id %d is not in categories", a.CategoryID)
		}
		if !(a.Area >= 0) {
			return fail("area %g is negative", a.Area)
		}
		if a.HasBBox() && (a.BBox[2] < 0 || a.BBox[3] < 0) {
			return fail("bbox %v has a negative size", a.BBox)
		}
	}
	return nil
}
