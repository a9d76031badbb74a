// Package shapes generates a deterministic procedural COCO instance
// dataset: RGB images of circles, rectangles and triangles (1–5 per image,
// random colours, sizes and rotations, occluding each other) on textured,
// noisy backgrounds, with exact instance masks.
//
// The output depends only on the options: every image draws from its own
// PCG stream (seed, image index), so images can be rendered in parallel
// and two runs with the same seed are byte-identical.
package shapes

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/coco"
	"github.com/flbq/flbq/runtime/cocomask"
)

// Categories of the dataset, ids 1..3.
var Categories = []coco.Category{
	{ID: 1, Name: "circle", Supercategory: "shape"},
	{ID: 2, Name: "rectangle", Supercategory: "shape"},
	{ID: 3, Name: "triangle", Supercategory: "shape"},
}

// MaskFormat selects how instance masks are written.
type MaskFormat string

const (
	// MaskRLE writes every mask as compressed RLE.
	MaskRLE MaskFormat = "rle"
	// MaskPolygon writes masks as polygons along pixel edges (exact under
	// COCO's rasteriser); a mask with holes, which COCO polygons cannot
	// express, is written as compressed RLE.
	MaskPolygon MaskFormat = "polygon"
)

// Options configure Generate.
type Options struct {
	N    int    // number of images (> 0)
	Seed uint64 // PCG seed
	Size int    // image width and height in pixels (>= 32)
	Out  string // output directory (created)
	// Masks is the mask format (default MaskRLE).
	Masks MaskFormat
	// ValFraction in [0, 1): that share of the images (chosen by the seed)
	// also goes to val.json, the rest to train.json. 0 writes neither.
	ValFraction float64
	// Progress, if set, is called serially with images done and N.
	Progress func(done, total int)
}

// Files written into Options.Out.
const (
	ImagesDir     = "images"
	InstancesFile = "instances.json"
	TrainFile     = "train.json"
	ValFile       = "val.json"
)

func (o *Options) check() error {
	switch {
	case o.N <= 0:
		return fmt.Errorf("--n %d: need at least one image", o.N)
	case o.N > 10_000_000:
		return fmt.Errorf("--n %d: too many images", o.N)
	case o.Size < 32 || o.Size > 4096:
		return fmt.Errorf("--size %d: want 32..4096 pixels", o.Size)
	case !(o.ValFraction >= 0 && o.ValFraction < 1):
		return fmt.Errorf("val fraction %v: want 0 <= f < 1", o.ValFraction)
	case o.Out == "":
		return errors.New("no output directory")
	}
	switch o.Masks {
	case "":
		o.Masks = MaskRLE
	case MaskRLE, MaskPolygon:
	default:
		return fmt.Errorf("mask format %q: want rle or polygon", o.Masks)
	}
	if o.ValFraction > 0 && int(math.Round(o.ValFraction*float64(o.N))) == 0 {
		return fmt.Errorf("val fraction %v of %d images selects no image", o.ValFraction, o.N)
	}
	return nil
}

// Generate renders the dataset into o.Out: images/NNNNNN.png,
// instances.json (all images) and, with a ValFraction, train.json and
// val.json. File names in the JSON are relative to images/.
func Generate(o Options) (*coco.Dataset, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	// Images go to a temporary directory that replaces images/ only when
	// all of them are written and synced (one filesystem sync instead of
	// one fsync per image), so an interrupted run never leaves a partial
	// image or a partial image set.
	tmpDir, err := os.MkdirTemp(o.Out, ".images.tmp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmpDir)   // no-op once renamed
	workers := backend.Threads() // images render in parallel
	anns := make([][]coco.Annotation, o.N)
	images := make([]coco.Image, o.N)
	var next, done atomic.Int64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf, scratch bytes.Buffer
			for {
				i := int(next.Add(1)) - 1
				if i >= o.N {
					return
				}
				img, objs := Render(o.Seed, i, o.Size)
				name := fmt.Sprintf("%06d.png", i+1)
				buf.Reset()
				err := encodePNG(&buf, img, &scratch)
				if err == nil {
					err = os.WriteFile(filepath.Join(tmpDir, name), buf.Bytes(), 0o644)
				}
				images[i] = coco.Image{ID: int64(i + 1), FileName: name, Width: o.Size, Height: o.Size}
				anns[i] = annotate(objs, int64(i+1), o.Size, o.Masks)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				d := done.Add(1)
				if o.Progress != nil {
					o.Progress(int(d), o.N)
				}
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := syncDir(tmpDir); err != nil {
		return nil, err
	}
	if err := os.Chmod(tmpDir, 0o755); err != nil {
		return nil, err
	}
	imgDir := filepath.Join(o.Out, ImagesDir)
	if _, err := os.Stat(imgDir); err == nil {
		old, err := os.MkdirTemp(o.Out, ".images.old-")
		if err != nil {
			return nil, err
		}
		if err := os.Rename(imgDir, filepath.Join(old, ImagesDir)); err != nil {
			return nil, err
		}
		defer os.RemoveAll(old)
	}
	if err := os.Rename(tmpDir, imgDir); err != nil {
		return nil, err
	}
	info, _ := json.Marshal(struct {
		Description string  `json:"description"`
		Version     string  `json:"version"`
		Seed        uint64  `json:"seed"`
		Images      int     `json:"images"`
		Size        int     `json:"size"`
		Masks       string  `json:"masks"`
		ValFraction float64 `json:"val_fraction"`
	}{"flbq shapes: procedural circles, rectangles and triangles", "1", o.Seed, o.N, o.Size, string(o.Masks), o.ValFraction})
	all := &coco.Dataset{Info: info, Images: images, Categories: Categories}
	nextID := int64(1)
	for i := range anns {
		for j := range anns[i] {
			anns[i][j].ID = nextID
			nextID++
			all.Annotations = append(all.Annotations, anns[i][j])
		}
	}
	if err := coco.WriteDataset(filepath.Join(o.Out, InstancesFile), all); err != nil {
		return nil, err
	}
	if o.ValFraction > 0 {
		nVal := int(math.Round(o.ValFraction * float64(o.N)))
		perm := rand.New(rand.NewPCG(o.Seed, math.MaxUint64)).Perm(o.N)
		isVal := make([]bool, o.N)
		for _, i := range perm[:nVal] {
			isVal[i] = true
		}
		for _, part := range []struct {
			file string
			val  bool
		}{{TrainFile, false}, {ValFile, true}} {
			d := &coco.Dataset{Info: info, Categories: Categories, Images: []coco.Image{}, Annotations: []coco.Annotation{}}
			for i := range images {
				if isVal[i] == part.val {
					d.Images = append(d.Images, images[i])
				}
			}
			for _, a := range all.Annotations {
				if isVal[a.ImageID-1] == part.val {
					d.Annotations = append(d.Annotations, a)
				}
			}
			if err := coco.WriteDataset(filepath.Join(o.Out, part.file), d); err != nil {
				return nil, err
			}
		}
	}
	return all, nil
}

// Object is one rendered instance: its class and visible mask
// (row-major, size×size).
type Object struct {
	CategoryID int64
	Mask       []byte
}

type shape struct {
	cat    int64
	cx, cy float64
	r      float64 // circle radius
	hw, hh float64 // rectangle half sizes
	cos    float64 // rectangle rotation
	sin    float64 //
	tri    [3][2]float64
	x0, y0 int // pixel bounding box [x0, x1) × [y0, y1), clipped
	x1, y1 int
}

func (s *shape) contains(px, py float64) bool {
	switch s.cat {
	case 1:
		dx, dy := px-s.cx, py-s.cy
		return dx*dx+dy*dy <= s.r*s.r
	case 2:
		dx, dy := px-s.cx, py-s.cy
		u := dx*s.cos + dy*s.sin
		v := -dx*s.sin + dy*s.cos
		return math.Abs(u) <= s.hw && math.Abs(v) <= s.hh
	}
	var neg, pos bool
	for i := 0; i < 3; i++ {
		a, b := s.tri[i], s.tri[(i+1)%3]
		c := (b[0]-a[0])*(py-a[1]) - (b[1]-a[1])*(px-a[0])
		neg = neg || c < 0
		pos = pos || c > 0
	}
	return !(neg && pos)
}

func randomShape(rng *rand.Rand, size int) shape {
	S := float64(size)
	s := shape{cat: int64(rng.IntN(3) + 1)}
	s.cx = S * (0.08 + 0.84*rng.Float64())
	s.cy = S * (0.08 + 0.84*rng.Float64())
	ext := S * (0.05 + 0.22*rng.Float64()) // rough radius
	var rx, ry float64
	switch s.cat {
	case 1:
		s.r = ext
		rx, ry = ext, ext
	case 2:
		aspect := math.Exp((rng.Float64()*2 - 1) * 0.9)
		s.hw, s.hh = ext*math.Sqrt(aspect), ext/math.Sqrt(aspect)
		th := rng.Float64() * math.Pi
		s.cos, s.sin = math.Cos(th), math.Sin(th)
		rx = math.Abs(s.hw*s.cos) + math.Abs(s.hh*s.sin)
		ry = math.Abs(s.hw*s.sin) + math.Abs(s.hh*s.cos)
	case 3:
		th := rng.Float64() * 2 * math.Pi
		for i := range s.tri {
			a := th + float64(i)*2*math.Pi/3 + (rng.Float64()-0.5)*0.8
			rr := ext * (0.8 + 0.4*rng.Float64())
			s.tri[i] = [2]float64{s.cx + rr*math.Cos(a), s.cy + rr*math.Sin(a)}
			rx = max(rx, math.Abs(rr*math.Cos(a)))
			ry = max(ry, math.Abs(rr*math.Sin(a)))
		}
	}
	s.x0 = max(0, int(math.Floor(s.cx-rx-1)))
	s.x1 = min(size, int(math.Ceil(s.cx+rx+1)))
	s.y0 = max(0, int(math.Floor(s.cy-ry-1)))
	s.y1 = min(size, int(math.Ceil(s.cy+ry+1)))
	return s
}

type rgb [3]float64

func randColor(rng *rand.Rand) rgb {
	return rgb{rng.Float64() * 255, rng.Float64() * 255, rng.Float64() * 255}
}

func dist(a, b rgb) float64 {
	return math.Sqrt((a[0]-b[0])*(a[0]-b[0]) + (a[1]-b[1])*(a[1]-b[1]) + (a[2]-b[2])*(a[2]-b[2]))
}

// Render draws image i of the dataset with seed and returns it with its
// objects (visible masks, in drawing order, every one non-empty).
func Render(seed uint64, i, size int) (*image.RGBA, []Object) {
	rng := rand.New(rand.NewPCG(seed, uint64(i)))
	n := size * size
	S := float64(size)

	// Textured background: two colours mixed by low-frequency value
	// noise and stripes, plus pixel noise.
	c0, c1 := randColor(rng), randColor(rng)
	const g = 6
	var grid [g + 1][g + 1]float64
	for y := range grid {
		for x := range grid[y] {
			grid[y][x] = rng.Float64()
		}
	}
	freq := (2 + 10*rng.Float64()) * 2 * math.Pi / S
	ang := rng.Float64() * math.Pi
	fx, fy := freq*math.Cos(ang), freq*math.Sin(ang)
	stripe := 0.15 + 0.3*rng.Float64()
	bgMean := rgb{}
	pix := make([]float64, 3*n)
	// sin(fx·x + fy·y) from per-column and per-row tables.
	sx, cx := make([]float64, size), make([]float64, size)
	sy, cy := make([]float64, size), make([]float64, size)
	for k := 0; k < size; k++ {
		sx[k], cx[k] = math.Sincos(fx * float64(k))
		sy[k], cy[k] = math.Sincos(fy * float64(k))
	}
	for y := 0; y < size; y++ {
		gy := float64(y) / S * g
		iy := min(int(gy), g-1)
		ty := gy - float64(iy)
		for x := 0; x < size; x++ {
			gx := float64(x) / S * g
			ix := min(int(gx), g-1)
			tx := gx - float64(ix)
			v := (grid[iy][ix]*(1-tx)+grid[iy][ix+1]*tx)*(1-ty) + (grid[iy+1][ix]*(1-tx)+grid[iy+1][ix+1]*tx)*ty
			v = (1-stripe)*v + stripe*0.5*(1+sx[x]*cy[y]+cx[x]*sy[y])
			for c := 0; c < 3; c++ {
				pix[3*(y*size+x)+c] = c0[c]*(1-v) + c1[c]*v
				bgMean[c] += pix[3*(y*size+x)+c] / float64(n)
			}
		}
	}

	// Objects, drawn in order; a new one may not hide more than 65% of an
	// earlier one (nor leave it under 30 pixels).
	label := make([]int8, n)
	for k := range label {
		label[k] = -1
	}
	var shapes []shape
	var areas []int // visible pixels per shape
	want := 1 + rng.IntN(5)
	for len(shapes) < want {
		placed := false
		for try := 0; try < 30 && !placed; try++ {
			s := randomShape(rng, size)
			covered := make([]int, len(shapes))
			own := 0
			for y := s.y0; y < s.y1; y++ {
				for x := s.x0; x < s.x1; x++ {
					if s.contains(float64(x)+.5, float64(y)+.5) {
						own++
						if l := label[y*size+x]; l >= 0 {
							covered[l]++
						}
					}
				}
			}
			ok := own >= 40
			for j := range shapes {
				left := areas[j] - covered[j]
				if left < 30 || float64(left) < 0.35*float64(areas[j]) {
					ok = false
				}
			}
			if !ok {
				continue
			}
			id := int8(len(shapes))
			for y := s.y0; y < s.y1; y++ {
				for x := s.x0; x < s.x1; x++ {
					if s.contains(float64(x)+.5, float64(y)+.5) {
						label[y*size+x] = id
					}
				}
			}
			for j := range shapes {
				areas[j] -= covered[j]
			}
			shapes = append(shapes, s)
			areas = append(areas, own)
			placed = true
		}
		if !placed {
			break
		}
	}
	if len(shapes) == 0 {
		// Practically impossible (the first shape always fits); keep
		// "1–5 objects" true anyway with a centred circle.
		s := shape{cat: 1, cx: S / 2, cy: S / 2, r: S / 5, x0: 0, y0: 0, x1: size, y1: size}
		for y := 0; y < size; y++ {
			for x := 0; x < size; x++ {
				if s.contains(float64(x)+.5, float64(y)+.5) {
					label[y*size+x] = 0
				}
			}
		}
		shapes = append(shapes, s)
	}

	// Paint objects: a colour away from the background, a linear shading
	// across the object and the same pixel noise as the background.
	type paint struct {
		c      rgb
		gx, gy float64
	}
	paints := make([]paint, len(shapes))
	for j := range shapes {
		c := randColor(rng)
		for try := 0; try < 20 && dist(c, bgMean) < 90; try++ {
			c = randColor(rng)
		}
		sh := 40 * rng.Float64()
		a := rng.Float64() * 2 * math.Pi
		paints[j] = paint{c, sh * math.Cos(a) / S, sh * math.Sin(a) / S}
	}
	img := image.NewRGBA(image.Rect(0, 0, size, size))
	noise := 4 + 10*rng.Float64()
	for y := 0; y < size; y++ {
		for x := 0; x < size; x++ {
			k := y*size + x
			var c rgb
			if l := label[k]; l >= 0 {
				p := paints[l]
				s := p.gx*(float64(x)-shapes[l].cx) + p.gy*(float64(y)-shapes[l].cy)
				c = rgb{p.c[0] + s, p.c[1] + s, p.c[2] + s}
			} else {
				c = rgb{pix[3*k], pix[3*k+1], pix[3*k+2]}
			}
			o := img.PixOffset(x, y)
			u := rng.Uint64()
			for ch := 0; ch < 3; ch++ {
				r := float64(u>>(16*ch)&0xffff)*(2.0/0xffff) - 1
				v := c[ch] + r*noise + .5
				img.Pix[o+ch] = uint8(min(255, max(0, v)))
			}
			img.Pix[o+3] = 255
		}
	}
	objs := make([]Object, len(shapes))
	for j := range shapes {
		m := make([]byte, n)
		for k, l := range label {
			if int(l) == j {
				m[k] = 1
			}
		}
		objs[j] = Object{CategoryID: shapes[j].cat, Mask: m}
	}
	return img, objs
}

// annotate turns objects into annotations (ids filled in later).
func annotate(objs []Object, imageID int64, size int, format MaskFormat) []coco.Annotation {
	out := make([]coco.Annotation, 0, len(objs))
	for _, o := range objs {
		r := cocomask.Encode(o.Mask, size, size)
		a := coco.Annotation{ImageID: imageID, CategoryID: o.CategoryID, Area: float64(r.Area()), BBox: r.ToBbox()}
		a.Segmentation = coco.RLESegmentation(r)
		if format == MaskPolygon {
			if polys := Polygons(o.Mask, size, size); polys != nil {
				a.Segmentation = coco.Segmentation{Kind: coco.SegPolygons, Polygons: polys}
			}
		}
		out = append(out, a)
	}
	return out
}

// Polygons traces the boundary of a row-major h×w mask along pixel
// edges and returns polygons that COCO's rasteriser (rleFrPoly, then
// union) turns back into exactly this mask, or nil when that is not
// possible (a mask with holes) or the mask is empty.
func Polygons(mask []byte, h, w int) [][]float64 {
	in := func(x, y int) bool { return x >= 0 && y >= 0 && x < w && y < h && mask[y*w+x] != 0 }
	// Directed boundary edges, clockwise around each foreground pixel (in
	// image coordinates, y down); out[v] holds up to two successors of
	// corner vertex v = Y*(w+1)+X.
	W := w + 1
	type vtx = int32
	out := map[vtx][]vtx{}
	var starts []vtx
	add := func(x0, y0, x1, y1 int) {
		a, b := vtx(y0*W+x0), vtx(y1*W+x1)
		if len(out[a]) == 0 {
			starts = append(starts, a)
		}
		out[a] = append(out[a], b)
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if !in(x, y) {
				continue
			}
			if !in(x, y-1) {
				add(x, y, x+1, y)
			}
			if !in(x+1, y) {
				add(x+1, y, x+1, y+1)
			}
			if !in(x, y+1) {
				add(x+1, y+1, x, y+1)
			}
			if !in(x-1, y) {
				add(x, y+1, x, y)
			}
		}
	}
	if len(starts) == 0 {
		return nil
	}
	var polys [][]float64
	for _, s := range starts {
		for len(out[s]) > 0 {
			var loop []vtx
			v := s
			var prev vtx = -1
			for {
				loop = append(loop, v)
				succ := out[v]
				k := 0
				if len(succ) == 2 && prev >= 0 {
					// At a corner shared by two diagonal pixels take the right
					// turn, which keeps the pixels' loops apart.
					dx, dy := int(v%vtx(W)-prev%vtx(W)), int(v/vtx(W)-prev/vtx(W))
					rx, ry := -dy, dx // right turn of (dx, dy) with y down
					for i, n := range succ {
						if int(n%vtx(W)-v%vtx(W)) == rx && int(n/vtx(W)-v/vtx(W)) == ry {
							k = i
						}
					}
				}
				n := succ[k]
				out[v] = append(succ[:k:k], succ[k+1:]...)
				prev, v = v, n
				if v == s {
					break
				}
			}
			// Drop collinear vertices; the signed area tells outer loops
			// (clockwise with y down: positive) from holes.
			var poly []float64
			area := 0
			L := len(loop)
			for i := range loop {
				a, b, c := loop[(i+L-1)%L], loop[i], loop[(i+1)%L]
				ax, ay, bx, by, cx, cy := int(a%vtx(W)), int(a/vtx(W)), int(b%vtx(W)), int(b/vtx(W)), int(c%vtx(W)), int(c/vtx(W))
				area += bx*cy - cx*by
				if (bx-ax)*(cy-by)-(by-ay)*(cx-bx) != 0 {
					poly = append(poly, float64(bx), float64(by))
				}
			}
			if area < 0 {
				return nil // a hole
			}
			polys = append(polys, poly)
		}
	}
	// Check: COCO's rasteriser must give back the mask exactly.
	rs := make([]cocomask.RLE, 0, len(polys))
	for _, p := range polys {
		if len(p) < 6 {
			return nil
		}
		r, err := cocomask.FrPoly(p, h, w)
		if err != nil {
			return nil
		}
		rs = append(rs, r)
	}
	got := cocomask.Merge(rs, false)
	if !slices.Equal(got.Counts, cocomask.Encode(mask, h, w).Counts) {
		return nil
	}
	return polys
}
