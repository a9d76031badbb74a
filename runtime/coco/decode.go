package coco

import (
	"errors"
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/cocomask"
)

// parseSegmentation reads any COCO segmentation form (or null).
func parseSegmentation(p *parser, s *Segmentation) error {
	*s = Segmentation{}
	switch p.peek() {
	case 'n':
		return p.literal("null")
	case '[':
		s.Kind = SegPolygons
		s.Polygons = [][]float64{}
		return p.array(func(i int) error {
			var poly []float64
			if !p.null() {
				poly = []float64{}
				err := p.array(func(j int) error {
					v, err := p.float()
					if err != nil {
						return err
					}
					if math.Abs(v) > 1e8 {
						return fmt.Errorf("coordinate %d is %g, out of range", j, v)
					}
					poly = append(poly, v)
					return nil
				})
				if err != nil {
					return field(fmt.Sprintf("polygons: polygon %d", i), err)
				}
			}
			s.Polygons = append(s.Polygons, poly)
			return nil
		})
	case '{':
		var size []int64
		var haveSize, haveCounts, badCounts bool
		err := p.object(func(k []byte) error {
			switch string(k) {
			case "size":
				haveSize = true
				size = size[:0]
				return field(`rle: "size"`, p.array(func(int) error {
					v, err := p.int()
					size = append(size, v)
					return err
				}))
			case "counts":
				haveCounts = true
				badCounts = false
				s.String, s.Counts = "", nil
				switch p.peek() {
				case '"':
					b, err := p.str()
					s.Kind = SegCompressed
					s.String = string(b)
					return err
				case '[':
					s.Kind = SegRLE
					s.Counts = []uint32{}
					return field("rle: counts", p.array(func(int) error {
						t := p.kind()
						v, err := p.int()
						if err != nil {
							return err
						}
						if v < 0 || v > math.MaxUint32 {
							return &typeErr{t + " " + fmt.Sprint(v), "uint32"}
						}
						s.Counts = append(s.Counts, uint32(v))
						return nil
					}))
				}
				badCounts = true
				return p.skip()
			}
			return p.skip()
		})
		if err != nil {
			return err
		}
		switch {
		case !haveSize:
			return errors.New(`rle: missing "size"`)
		case len(size) != 2:
			return fmt.Errorf(`rle: "size" has %d entries, want [height, width]`, len(size))
		case size[0] < 0 || size[1] < 0 || uint64(size[0])*uint64(size[1]) > cocomask.MaxPixels:
			return fmt.Errorf(`rle: bad "size" [%d, %d]`, size[0], size[1])
		case !haveCounts:
			return errors.New(`rle: missing "counts"`)
		case badCounts:
			return errors.New(`rle: "counts" must be a string or a list of run lengths`)
		}
		s.Size = [2]int{int(size[0]), int(size[1])}
		return nil
	}
	if p.peek() == 0 {
		return p.fail("unexpected end of input")
	}
	return errors.New("must be a list of polygons, an RLE object or null")
}

// parseBox reads "bbox": [] or null (no box) or 4 numbers.
func parseBox(p *parser) (cocomask.Box, bool, error) {
	var b cocomask.Box
	if p.null() {
		return b, false, nil
	}
	n := 0
	err := p.array(func(i int) error {
		v, err := p.float()
		if i < 4 {
			b[i] = v
		}
		n++
		return err
	})
	if err != nil {
		return b, false, field("bbox", err)
	}
	switch n {
	case 0:
		return b, false, nil
	case 4:
		if b[2] < 0 || b[3] < 0 {
			return b, false, fmt.Errorf("bbox %v has a negative size", b)
		}
		return b, true, nil
	}
	return b, false, fmt.Errorf("bbox has %d numbers, want [x, y, width, height]", n)
}

func parseCrowdValue(p *parser) (bool, error) {
	switch p.peek() {
	case 'n':
		return false, p.literal("null")
	case 't':
		return true, p.literal("true")
	case 'f':
		return false, p.literal("false")
	}
	t := p.kind()
	v, err := p.float()
	if err != nil {
		return false, fmt.Errorf("iscrowd: want 0, 1 or a boolean, got %s", t)
	}
	return v != 0, nil
}

func parseResult(p *parser) (Result, error) {
	var r Result
	var hasImg, hasCat, hasScore bool
	err := p.object(func(k []byte) error {
		var err error
		switch string(k) {
		case "image_id":
			if hasImg = !p.null(); hasImg {
				r.ImageID, err = p.int()
			}
			return field("image_id", err)
		case "category_id":
			if hasCat = !p.null(); hasCat {
				r.CategoryID, err = p.int()
			}
			return field("category_id", err)
		case "score":
			if hasScore = !p.null(); hasScore {
				r.Score, err = p.float()
			}
			return field("score", err)
		case "bbox":
			r.BBox, r.HasBBox, err = parseBox(p)
			return err
		case "segmentation":
			return field("segmentation", parseSegmentation(p, &r.Segmentation))
		}
		return p.skip()
	})
	switch {
	case err != nil:
		return r, err
	case !hasImg:
		return r, errors.New(`missing "image_id"`)
	case !hasCat:
		return r, errors.New(`missing "category_id"`)
	case !hasScore:
		return r, errors.New(`missing "score"`)
	case !r.HasBBox && r.Segmentation.Kind == SegNone:
		return r, errors.New(`needs a "bbox" or a "segmentation"`)
	}
	return r, nil
}

func parseAnnotation(p *parser) (Annotation, error) {
	var a Annotation
	var hasID, hasImg, hasCat, hasArea, hasBox bool
	err := p.object(func(k []byte) error {
		var err error
		switch string(k) {
		case "id":
			if hasID = !p.null(); hasID {
				a.ID, err = p.int()
			}
			return field("id", err)
		case "image_id":
			if hasImg = !p.null(); hasImg {
				a.ImageID, err = p.int()
			}
			return field("image_id", err)
		case "category_id":
			if hasCat = !p.null(); hasCat {
				a.CategoryID, err = p.int()
			}
			return field("category_id", err)
		case "area":
			if hasArea = !p.null(); hasArea {
				a.Area, err = p.float()
			}
			return field("area", err)
		case "bbox":
			a.BBox, hasBox, err = parseBox(p)
			return err
		case "iscrowd":
			a.IsCrowd, err = parseCrowdValue(p)
			return err
		case "segmentation":
			return field("segmentation", parseSegmentation(p, &a.Segmentation))
		}
		return p.skip()
	})
	switch {
	case err != nil:
		return a, err
	case !hasID:
		return a, errors.New(`missing "id"`)
	case !hasImg:
		return a, errors.New(`missing "image_id"`)
	case !hasCat:
		return a, errors.New(`missing "category_id"`)
	case !hasArea:
		return a, errors.New(`missing "area"`)
	}
	if !hasBox {
		a.BBox = cocomask.Box{math.NaN(), math.NaN(), math.NaN(), math.NaN()}
	}
	return a, nil
}

func parseImage(p *parser) (Image, error) {
	var im Image
	err := p.object(func(k []byte) error {
		var err error
		var v int64
		switch string(k) {
		case "id":
			im.ID, err = p.int()
			return field("id", err)
		case "width", "height":
			v, err = p.int()
			if err == nil && (v < math.MinInt32 || v > math.MaxInt32) {
				err = fmt.Errorf("%d out of range", v)
			}
			if k[0] == 'w' {
				im.Width = int(v)
			} else {
				im.Height = int(v)
			}
			return field(string(k), err)
		case "file_name":
			if p.null() {
				return nil
			}
			b, err := p.str()
			im.FileName = string(b)
			return field("file_name", withWant(err, "string"))
		}
		return p.skip()
	})
	return im, err
}

func parseCategory(p *parser) (Category, error) {
	var c Category
	err := p.object(func(k []byte) error {
		var err error
		var b []byte
		switch string(k) {
		case "id":
			c.ID, err = p.int()
			return field("id", err)
		case "name", "supercategory":
			if p.null() {
				return nil
			}
			b, err = p.str()
			if k[0] == 'n' {
				c.Name = string(b)
			} else {
				c.Supercategory = string(b)
			}
			return field(string(k), withWant(err, "string"))
		}
		return p.skip()
	})
	return c, err
}

// parseList decodes the list at p with parse, in parallel, naming the
// first failing element (in list order) as key[i] (id N).
func parseList[T any](p *parser, key string, parse func(*parser) (T, error)) ([]T, error) {
	if p.null() {
		return nil, nil
	}
	rng, err := p.elements()
	if err != nil {
		return nil, field(fmt.Sprintf("%q", key), err)
	}
	out := make([]T, len(rng))
	workers := backend.Threads()
	if len(rng) < 4096 {
		workers = 1
	}
	var next atomic.Int64
	var mu sync.Mutex
	firstIdx, firstErr := len(rng), error(nil)
	var wg sync.WaitGroup
	const chunk = 1024
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				lo := int(next.Add(chunk)) - chunk
				if lo >= len(rng) {
					return
				}
				for i := lo; i < min(lo+chunk, len(rng)); i++ {
					q := parser{b: p.b[:rng[i][1]], i: rng[i][0]}
					v, err := parse(&q)
					if err == nil && q.peek() != 0 {
						err = q.fail("want ',' or ']'")
					}
					if err != nil {
						mu.Lock()
						if i < firstIdx {
							firstIdx, firstErr = i, err
						}
						mu.Unlock()
						break
					}
					out[i] = v
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		if se, ok := firstErr.(*syntaxError); ok {
			return nil, fmt.Errorf("%s[%d]: %w", key, firstIdx, se)
		}
		if id := peekID(p.b[rng[firstIdx][0]:rng[firstIdx][1]]); id != "" {
			return nil, fmt.Errorf("%s[%d] (id %s): %w", key, firstIdx, id, firstErr)
		}
		return nil, fmt.Errorf("%s[%d]: %w", key, firstIdx, firstErr)
	}
	return out, nil
}

// peekID returns the text of an object's "id" number, if it has one.
func peekID(b []byte) string {
	q := parser{b: b}
	id := ""
	_ = q.object(func(k []byte) error {
		if string(k) == "id" && q.kind() == "number" {
			t, _, err := q.numText()
			if err == nil && len(t) < 40 {
				id = string(t)
			}
			return err
		}
		return q.skip()
	})
	return id
}

func readAll(r io.Reader) ([]byte, error) {
	if s, ok := r.(interface{ Size() int64 }); ok && s.Size() > 0 {
		b := make([]byte, 0, s.Size()+1)
		for {
			n, err := r.Read(b[len(b):cap(b)])
			b = b[:len(b)+n]
			if err == io.EOF {
				return b, nil
			}
			if err != nil {
				return nil, err
			}
			if len(b) == cap(b) {
				b = append(b, 0)[:len(b)]
			}
		}
	}
	return io.ReadAll(r)
}

func decodeResultsBytes(b []byte) ([]Result, error) {
	p := &parser{b: b}
	switch p.peek() {
	case 0:
		return nil, errors.New("results file: empty input")
	case '[':
	default:
		return nil, fmt.Errorf("results file: want a JSON list, got %s", p.kind())
	}
	rs, err := parseList(p, "results", parseResult)
	if err != nil {
		return nil, err
	}
	if p.peek() != 0 {
		return nil, errors.New("results file: unexpected data after the list")
	}
	return rs, nil
}

func decodeDatasetBytes(b []byte) (*Dataset, error) {
	p := &parser{b: b}
	switch p.peek() {
	case 0:
		return nil, errors.New("instances file: empty input")
	case '{':
	default:
		return nil, fmt.Errorf("instances file: want a JSON object, got %s", p.kind())
	}
	d := &Dataset{}
	seen := map[string]bool{}
	err := p.object(func(k []byte) error {
		var err error
		key := string(k)
		seen[key] = true
		switch key {
		case "images":
			d.Images, err = parseList(p, key, parseImage)
		case "annotations":
			d.Annotations, err = parseList(p, key, parseAnnotation)
		case "categories":
			d.Categories, err = parseList(p, key, parseCategory)
		case "info", "licenses":
			start := p.peek()
			lo := p.i
			if err = p.skip(); err == nil && start != 'n' {
				raw := append([]byte(nil), p.b[lo:p.i]...)
				if key == "info" {
					d.Info = raw
				} else {
					d.Licenses = raw
				}
			}
		default:
			err = p.skip()
		}
		return err
	})
	if err != nil {
		var te *typeErr
		if errors.As(err, &te) {
			return nil, fmt.Errorf("instances file: %w", err)
		}
		return nil, err
	}
	if p.peek() != 0 {
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
