package coco

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/flbq/flbq/runtime/atomicfile"
	"github.com/flbq/flbq/runtime/cocomask"
)

// ReadDataset reads and validates a COCO instances JSON file.
func ReadDataset(path string) (*Dataset, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	d, err := DecodeDataset(bufio.NewReaderSize(f, 1<<20))
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
// (see Dataset.Validate). Unknown top-level keys are skipped.
func DecodeDataset(r io.Reader) (*Dataset, error) {
	dec := json.NewDecoder(r)
	if err := expectDelim(dec, '{', "instances file"); err != nil {
		return nil, err
	}
	d := &Dataset{}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, syntaxErr(err)
		}
		key, _ := tok.(string)
		switch key {
		case "images":
			err = decodeArray(dec, key, func(i int, raw []byte) error {
				var im Image
				if err := json.Unmarshal(raw, &im); err != nil {
					return entryErr(key, i, raw, jsonErr(err))
				}
				d.Images = append(d.Images, im)
				return nil
			})
		case "categories":
			err = decodeArray(dec, key, func(i int, raw []byte) error {
				var c Category
				if err := json.Unmarshal(raw, &c); err != nil {
					return entryErr(key, i, raw, jsonErr(err))
				}
				d.Categories = append(d.Categories, c)
				return nil
			})
		case "annotations":
			err = decodeArray(dec, key, func(i int, raw []byte) error {
				a, err := decodeAnnotation(raw)
				if err != nil {
					return entryErr(key, i, raw, err)
				}
				d.Annotations = append(d.Annotations, a)
				return nil
			})
		case "info":
			err = dec.Decode(&d.Info)
		case "licenses":
			err = dec.Decode(&d.Licenses)
		default:
			var skip json.RawMessage
			err = dec.Decode(&skip)
		}
		if err != nil {
			return nil, syntaxErr(err)
		}
		seen[key] = true
	}
	if _, err := dec.Token(); err != nil {
		return nil, syntaxErr(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("instances file: unexpected data after the top-level object")
	}
	for _, k := range []string{"images", "annotations", "categories"} {
		if !seen[k] {
			return nil, fmt.Errorf("instances file: missing %q", k)
		}
	}
	if err := d.Validate(); err != nil {
		return nil, err
	}
	return d, nil
}

func decodeAnnotation(raw []byte) (Annotation, error) {
	var w annotationJSON
	if err := json.Unmarshal(raw, &w); err != nil {
		return Annotation{}, segErr(err)
	}
	switch {
	case w.ID == nil:
		return Annotation{}, errors.New(`missing "id"`)
	case w.ImageID == nil:
		return Annotation{}, errors.New(`missing "image_id"`)
	case w.CategoryID == nil:
		return Annotation{}, errors.New(`missing "category_id"`)
	case w.Area == nil:
		return Annotation{}, errors.New(`missing "area"`)
	}
	a := Annotation{ID: *w.ID, ImageID: *w.ImageID, CategoryID: *w.CategoryID,
		Segmentation: w.Segmentation, Area: *w.Area}
	if w.BBox != nil {
		a.BBox = *w.BBox
	} else {
		a.BBox = cocomask.Box{math.NaN(), math.NaN(), math.NaN(), math.NaN()}
	}
	crowd, err := parseCrowd(w.IsCrowd)
	if err != nil {
		return Annotation{}, err
	}
	a.IsCrowd = crowd
	return a, nil
}

// HasBBox reports whether the annotation has a "bbox".
func (a *Annotation) HasBBox() bool { return !math.IsNaN(a.BBox[0]) }

// parseCrowd reads "iscrowd": absent or null is 0; numbers and booleans
// count as crowd when non-zero / true (pycocotools tests truthiness).
func parseCrowd(raw json.RawMessage) (bool, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" || string(raw) == "false" {
		return false, nil
	}
	if string(raw) == "true" {
		return true, nil
	}
	var f float64
	if err := json.Unmarshal(raw, &f); err != nil {
		return false, fmt.Errorf("iscrowd: want 0, 1 or a boolean, got %.40s", raw)
	}
	return f != 0, nil
}

// segErr prefixes errors coming from Segmentation.UnmarshalJSON.
func segErr(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	if errors.As(err, &te) || errors.As(err, &se) {
		return jsonErr(err)
	}
	return fmt.Errorf("segmentation: %w", err)
}

// entryErr names entry i of list key, with its id when it can be read.
func entryErr(key string, i int, raw []byte, err error) error {
	var idOnly struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(raw, &idOnly) == nil && len(idOnly.ID) > 0 && len(idOnly.ID) < 40 {
		return fmt.Errorf("%s[%d] (id %s): %w", key, i, idOnly.ID, err)
	}
	return fmt.Errorf("%s[%d]: %w", key, i, err)
}

func expectDelim(dec *json.Decoder, want json.Delim, what string) error {
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			return fmt.Errorf("%s: empty input", what)
		}
		return syntaxErr(err)
	}
	if d, ok := tok.(json.Delim); !ok || d != want {
		return fmt.Errorf("%s: want a JSON %s, got %v", what, delimName(want), tok)
	}
	return nil
}

func delimName(d json.Delim) string {
	if d == '[' {
		return "list"
	}
	return "object"
}

// decodeArray reads a JSON list value and calls fn for each element's
// raw bytes.
func decodeArray(dec *json.Decoder, key string, fn func(i int, raw []byte) error) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		return nil // null list
	}
	if d, ok := tok.(json.Delim); !ok || d != '[' {
		return fmt.Errorf("%q: want a list, got %v", key, tok)
	}
	var raw json.RawMessage
	for i := 0; dec.More(); i++ {
		raw = raw[:0]
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("%s[%d]: %w", key, i, syntaxErr(err))
		}
		if err := fn(i, raw); err != nil {
			return err
		}
	}
	_, err = dec.Token()
	return err
}

func syntaxErr(err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at byte %d: %v", se.Offset, se)
	}
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return errors.New("invalid JSON: unexpected end of input")
	}
	return err
}

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
