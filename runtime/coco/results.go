package coco

import (
	"fmt"
	"io"
	"math"
	"os"
	"strconv"

	"github.com/flbq/flbq/runtime/atomicfile"
	"github.com/flbq/flbq/runtime/cocomask"
)

// Result is one detection of a COCO results file.
type Result struct {
	ImageID    int64
	CategoryID int64
	Score      float64
	// BBox is [x, y, width, height]; valid when HasBBox.
	BBox    cocomask.Box
	HasBBox bool
	// Segmentation has Kind SegNone when the detection has no mask.
	Segmentation Segmentation
}

// MarshalJSON writes the detection in the COCO results layout, leaving
// out a missing box or mask. Scores are written exactly (shortest form
// that reads back to the same float64).
func (r Result) MarshalJSON() ([]byte, error) {
	return r.appendJSON(nil)
}

func (r Result) appendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"image_id":`...)
	b = strconv.AppendInt(b, r.ImageID, 10)
	b = append(b, `,"category_id":`...)
	b = strconv.AppendInt(b, r.CategoryID, 10)
	if r.HasBBox {
		b = append(b, `,"bbox":[`...)
		for i, v := range r.BBox {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendFloat(b, v)
		}
		b = append(b, ']')
	}
	if math.IsNaN(r.Score) || math.IsInf(r.Score, 0) {
		return nil, fmt.Errorf("score %g is not finite", r.Score)
	}
	b = append(b, `,"score":`...)
	b = strconv.AppendFloat(b, r.Score, 'g', -1, 64)
	if r.Segmentation.Kind != SegNone {
		s, err := r.Segmentation.MarshalJSON()
		if err != nil {
			return nil, err
		}
		b = append(b, `,"segmentation":`...)
		b = append(b, s...)
	}
	return append(b, '}'), nil
}

// WriteResults writes detections as a COCO results JSON list (one
// detection per line), atomically.
func WriteResults(path string, rs []Result) error {
	return atomicfile.Write(path, func(w io.Writer) error { return EncodeResults(w, rs) })
}

// EncodeResults writes detections as a COCO results JSON list.
func EncodeResults(w io.Writer, rs []Result) error {
	var b []byte
	if _, err := io.WriteString(w, "["); err != nil {
		return err
	}
	for i, r := range rs {
		b = b[:0]
		if i > 0 {
			b = append(b, ",\n"...)
		}
		var err error
		if b, err = r.appendJSON(b); err != nil {
			return fmt.Errorf("results[%d]: %w", i, err)
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	_, err := io.WriteString(w, "]\n")
	return err
}

// ReadResults reads a COCO results JSON file.
func ReadResults(path string) ([]Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	rs, err := decodeResultsBytes(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return rs, nil
}

// DecodeResults reads a COCO results JSON list: each detection needs
// "image_id", "category_id", "score" and a "bbox" or a "segmentation"
// (or both).
func DecodeResults(r io.Reader) ([]Result, error) {
	b, err := readAll(r)
	if err != nil {
		return nil, err
	}
	return decodeResultsBytes(b)
}
