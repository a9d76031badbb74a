// Package coco reads and writes COCO instance datasets and detection
// results, and evaluates detections (box and mask AP) exactly as
// pycocotools' COCOeval does.
//
// Readers name the offending entry in every error, e.g.
//
//	annotations[17] (id 123): segmentation: counts: ...
//
// and never panic on malformed input. Masks follow cocoapi's maskApi.c
// (see package cocomask).
//
// Evaluate reproduces pycocotools (cocodataset/cocoapi, COCOeval with
// default parameters) to the last bit on the shared golden cases,
// including its quirks: thresholds computed as numpy.linspace does, the
// "area" field of ground truth used as written, stable score order with
// ties in image-id then file order, maxDets per (image, category), the
// later of equally good ground truths winning a match, crowd IoU over the
// detection's area, and a ground truth with annotation id 0 never counting
// as a true positive (pycocotools stores the matched id and tests it for
// truth). One documented choice differs from pycocotools' loadRes: for
// segm a detection's area is its mask's pixel count even when it also has
// a "bbox" (detectron2 drops "bbox" before loadRes for the same effect).
package coco

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/flbq/flbq/runtime/cocomask"
)

// Dataset is a COCO instances file.
type Dataset struct {
	Info        json.RawMessage `json:"info,omitempty"`
	Licenses    json.RawMessage `json:"licenses,omitempty"`
	Images      []Image         `json:"images"`
	Annotations []Annotation    `json:"annotations"`
	Categories  []Category      `json:"categories"`
}

// Image is one entry of "images".
type Image struct {
	ID       int64  `json:"id"`
	FileName string `json:"file_name"`
	Width    int    `json:"width"`
	Height   int    `json:"height"`
}

// Category is one entry of "categories".
type Category struct {
	ID            int64  `json:"id"`
	Name          string `json:"name"`
	Supercategory string `json:"supercategory,omitempty"`
}

// Annotation is one ground-truth object.
type Annotation struct {
	ID           int64        `json:"id"`
	ImageID      int64        `json:"image_id"`
	CategoryID   int64        `json:"category_id"`
	Segmentation Segmentation `json:"segmentation"`
	// Area is the annotation's "area" field; evaluation uses it as
	// written (never recomputed from the mask), as pycocotools does.
	Area float64 `json:"area"`
	// BBox is [x, y, width, height].
	BBox    cocomask.Box `json:"bbox"`
	IsCrowd bool         `json:"-"`
}

// MarshalJSON writes the annotation with "iscrowd" as 0 or 1.
func (a Annotation) MarshalJSON() ([]byte, error) {
	crowd := 0
	if a.IsCrowd {
		crowd = 1
	}
	return json.Marshal(struct {
		ID           int64        `json:"id"`
		ImageID      int64        `json:"image_id"`
		CategoryID   int64        `json:"category_id"`
		Segmentation Segmentation `json:"segmentation"`
		Area         float64      `json:"area"`
		BBox         cocomask.Box `json:"bbox"`
		IsCrowd      int          `json:"iscrowd"`
	}{a.ID, a.ImageID, a.CategoryID, a.Segmentation, a.Area, a.BBox, crowd})
}

// SegKind tells which form a Segmentation has.
type SegKind uint8

const (
	SegNone       SegKind = iota // absent or null
	SegPolygons                  // list of polygons [[x0 y0 x1 y1 ...] ...]
	SegRLE                       // {"size": [h, w], "counts": [runs ...]}
	SegCompressed                // {"size": [h, w], "counts": "string"}
)

// Segmentation is a COCO segmentation in any of its forms.
type Segmentation struct {
	Kind     SegKind
	Polygons [][]float64
	// Size is [height, width] of an RLE form.
	Size [2]int
	// Counts holds the runs of the uncompressed RLE form.
	Counts []uint32
	// String holds the compressed counts.
	String string
}

// RLESegmentation is the compressed-RLE segmentation of r.
func RLESegmentation(r cocomask.RLE) Segmentation {
	return Segmentation{Kind: SegCompressed, Size: [2]int{r.H, r.W}, String: r.String()}
}

// MarshalJSON writes the segmentation in its form (null for SegNone).
func (s Segmentation) MarshalJSON() ([]byte, error) {
	switch s.Kind {
	case SegPolygons:
		var b []byte
		b = append(b, '[')
		for i, p := range s.Polygons {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, '[')
			for j, v := range p {
				if j > 0 {
					b = append(b, ',')
				}
				b = appendFloat(b, v)
			}
			b = append(b, ']')
		}
		return append(b, ']'), nil
	case SegRLE:
		b := fmt.Appendf(nil, `{"size":[%d,%d],"counts":[`, s.Size[0], s.Size[1])
		for i, c := range s.Counts {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, uint64(c), 10)
		}
		return append(b, "]}"...), nil
	case SegCompressed:
		b := fmt.Appendf(nil, `{"size":[%d,%d],"counts":`, s.Size[0], s.Size[1])
		q, err := json.Marshal(s.String)
		if err != nil {
			return nil, err
		}
		return append(append(b, q...), '}'), nil
	}
	return []byte("null"), nil
}

func appendFloat(b []byte, v float64) []byte {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.AppendFloat(b, v, 'f', 1, 64)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// UnmarshalJSON accepts polygons, uncompressed and compressed RLE, and
// null. It checks the structure; mask-level checks (run lengths adding up
// to the size, decoding the string) happen in ToRLE.
func (s *Segmentation) UnmarshalJSON(b []byte) error {
	*s = Segmentation{}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || bytes.Equal(b, []byte("null")) {
		return nil
	}
	switch b[0] {
	case '[':
		var polys [][]float64
		if err := json.Unmarshal(b, &polys); err != nil {
			return fmt.Errorf("polygons: %w", jsonErr(err))
		}
		s.Kind = SegPolygons
		s.Polygons = polys
		for i, p := range polys {
			for j, v := range p {
				if math.IsInf(v, 0) || math.Abs(v) > 1e8 {
					return fmt.Errorf("polygon %d: coordinate %d is %g, out of range", i, j, v)
				}
			}
		}
		return nil
	case '{':
		var r struct {
			Size   *[]int64        `json:"size"`
			Counts json.RawMessage `json:"counts"`
		}
		if err := json.Unmarshal(b, &r); err != nil {
			return fmt.Errorf("rle: %w", jsonErr(err))
		}
		if r.Size == nil {
			return errors.New(`rle: missing "size"`)
		}
		if len(*r.Size) != 2 {
			return fmt.Errorf(`rle: "size" has %d entries, want [height, width]`, len(*r.Size))
		}
		h, w := (*r.Size)[0], (*r.Size)[1]
		if h < 0 || w < 0 || uint64(h)*uint64(w) > cocomask.MaxPixels {
			return fmt.Errorf(`rle: bad "size" [%d, %d]`, h, w)
		}
		s.Size = [2]int{int(h), int(w)}
		c := bytes.TrimSpace(r.Counts)
		switch {
		case len(c) == 0:
			return errors.New(`rle: missing "counts"`)
		case c[0] == '"':
			if err := json.Unmarshal(c, &s.String); err != nil {
				return fmt.Errorf("rle: counts: %w", jsonErr(err))
			}
			s.Kind = SegCompressed
		case c[0] == '[':
			if err := json.Unmarshal(c, &s.Counts); err != nil {
				return fmt.Errorf("rle: counts: %w", jsonErr(err))
			}
			s.Kind = SegRLE
		default:
			return errors.New(`rle: "counts" must be a string or a list of run lengths`)
		}
		return nil
	}
	return errors.New("must be a list of polygons, an RLE object or null")
}

// ToRLE converts the segmentation to a mask as pycocotools' annToRLE
// does, for an image of h×w pixels:
//   - polygons are rasterised with rleFrPoly and merged (union). As in
//     pycocotools' frPyObjects, a list whose first polygon has exactly 4
//     numbers is read as a list of [x y w h] boxes; an empty list or a
//     first polygon with fewer than 4 numbers is an error;
//   - RLE forms keep their own "size" (as in pycocotools) and must have
//     runs that add up to it.
func (s *Segmentation) ToRLE(h, w int) (cocomask.RLE, error) {
	switch s.Kind {
	case SegPolygons:
		if len(s.Polygons) == 0 {
			return cocomask.RLE{}, errors.New("empty polygon list")
		}
		n0 := len(s.Polygons[0])
		rs := make([]cocomask.RLE, len(s.Polygons))
		for i, p := range s.Polygons {
			var err error
			switch {
			case n0 == 4:
				if len(p) != 4 {
					return cocomask.RLE{}, fmt.Errorf("polygon %d: has %d numbers; the first has 4, which pycocotools reads as a box list", i, len(p))
				}
				rs[i], err = cocomask.FrBbox(cocomask.Box(p), h, w)
			case n0 > 4:
				rs[i], err = cocomask.FrPoly(p, h, w)
			default:
				return cocomask.RLE{}, fmt.Errorf("polygon 0 has %d numbers, want at least 6", n0)
			}
			if err != nil {
				return cocomask.RLE{}, fmt.Errorf("polygon %d: %w", i, err)
			}
		}
		return cocomask.Merge(rs, false), nil
	case SegRLE:
		r := cocomask.RLE{H: s.Size[0], W: s.Size[1], Counts: s.Counts}
		if err := r.Validate(); err != nil {
			return cocomask.RLE{}, fmt.Errorf("rle: %w", err)
		}
		return r, nil
	case SegCompressed:
		r, err := cocomask.FromString(s.String, s.Size[0], s.Size[1])
		if err != nil {
			return cocomask.RLE{}, fmt.Errorf("rle: %w", err)
		}
		return r, nil
	}
	return cocomask.RLE{}, errors.New("no segmentation")
}

// jsonErr makes encoding/json errors short and readable.
func jsonErr(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		if te.Field != "" {
			return fmt.Errorf("%s: cannot use JSON %s as %s", te.Field, te.Value, te.Type)
		}
		return fmt.Errorf("cannot use JSON %s as %s", te.Value, te.Type)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Errorf("invalid JSON at byte %d: %v", se.Offset, se)
	}
	return err
}
