// Package cocomask implements COCO's run-length encoded (RLE) binary masks
// with the exact semantics of the cocoapi C library (common/maskApi.c, as
// used by pycocotools): polygon rasterisation (rleFrPoly, upsampled ×5),
// box masks, merge, area, bounding box, IoU (including the iscrowd rule)
// and the compressed LEB128-like string form.
//
// An RLE stores an H×W mask in column-major order (x outer, y inner, as
// pycocotools' Fortran-ordered arrays) as alternating runs of 0s and 1s,
// starting with a (possibly empty) run of 0s.
//
// Every function is a port of the corresponding maskApi.c function and
// keeps its arithmetic (including its uint32 and rounding behaviour), so
// masks, areas, boxes and IoUs agree bit-for-bit with pycocotools. Inputs
// that would make the C code read out of bounds or allocate without limit
// are rejected with an error instead.
package cocomask

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// RLE is a run-length encoded H×W binary mask (column-major runs,
// starting with zeros).
type RLE struct {
	H, W   int
	Counts []uint32
}

// MaxPixels bounds H·W: counts are uint32 as in maskApi.c.
const MaxPixels = math.MaxUint32

// Validate checks that r's runs add up to exactly H·W pixels.
func (r RLE) Validate() error {
	if r.H < 0 || r.W < 0 {
		return fmt.Errorf("negative mask size %dx%d", r.H, r.W)
	}
	if uint64(r.H)*uint64(r.W) > MaxPixels {
		return fmt.Errorf("mask size %dx%d too large", r.H, r.W)
	}
	var s uint64
	for _, c := range r.Counts {
		s += uint64(c)
	}
	if want := uint64(r.H) * uint64(r.W); s != want {
		return fmt.Errorf("run lengths add up to %d pixels, want %d (size [%d, %d])", s, want, r.H, r.W)
	}
	return nil
}

// Area is the number of foreground pixels (rleArea).
func (r RLE) Area() uint32 {
	var a uint32
	for j := 1; j < len(r.Counts); j += 2 {
		a += r.Counts[j]
	}
	return a
}

// Box is a COCO box [x, y, width, height].
type Box [4]float64

// ToBbox is the bounding box of the foreground (rleToBbox), [0 0 0 0]
// for an empty mask.
func (r RLE) ToBbox() Box {
	h, w := uint32(r.H), uint32(r.W)
	m := len(r.Counts) / 2 * 2
	if m == 0 || h == 0 {
		return Box{}
	}
	xs, ys, xe, ye := w, h, uint32(0), uint32(0)
	var cc, xp uint32
	for j := 0; j < m; j++ {
		cc += r.Counts[j]
		t := cc - uint32(j%2)
		y := t % h
		x := (t - y) / h
		if j%2 == 0 {
			xp = x
		} else if xp < x {
			ys = 0
			ye = h - 1
		}
		xs = min(xs, x)
		xe = max(xe, x)
		ys = min(ys, y)
		ye = max(ye, y)
	}
	return Box{float64(xs), float64(ys), float64(xe - xs + 1), float64(ye - ys + 1)}
}

// Encode run-length encodes a row-major mask (mask[y*w+x] != 0 is
// foreground).
func Encode(mask []byte, h, w int) RLE {
	r := RLE{H: h, W: w}
	var p byte
	var c uint32
	for x := 0; x < w; x++ {
		for y := 0; y < h; y++ {
			v := byte(0)
			if mask[y*w+x] != 0 {
				v = 1
			}
			if v != p {
				r.Counts = append(r.Counts, c)
				c = 0
				p = v
			}
			c++
		}
	}
	r.Counts = append(r.Counts, c)
	return r
}

// Decode returns the row-major mask (1 = foreground). r must be valid.
func (r RLE) Decode() []byte {
	m := make([]byte, r.H*r.W)
	var v byte
	i := 0
	for _, c := range r.Counts {
		for k := uint32(0); k < c && i < len(m); k++ {
			if v != 0 {
				x, y := i/r.H, i%r.H
				m[y*r.W+x] = 1
			}
			i++
		}
		v ^= 1
	}
	return m
}

// Merge is the union (intersect=false) or intersection of masks of one
// size (rleMerge). Masks of different sizes give an empty 0×0 RLE, as in
// maskApi.c.
func Merge(rs []RLE, intersect bool) RLE {
	if len(rs) == 0 {
		return RLE{}
	}
	h, w := rs[0].H, rs[0].W
	if len(rs) == 1 {
		return RLE{H: h, W: w, Counts: slices.Clone(rs[0].Counts)}
	}
	cnts := slices.Clone(rs[0].Counts)
	out := make([]uint32, 0, len(cnts))
	for i := 1; i < len(rs); i++ {
		B := rs[i]
		if B.H != h || B.W != w {
			return RLE{}
		}
		A := cnts
		if len(A) == 0 || len(B.Counts) == 0 {
			// maskApi.c reads cnts[0] of both; an RLE without runs only
			// occurs for 0-pixel masks, whose merge is empty.
			cnts = cnts[:0]
			continue
		}
		ca, cb := A[0], B.Counts[0]
		var v, va, vb, vp bool
		a, b := 1, 1
		var cc uint32
		ct := uint32(1)
		out = out[:0]
		for ct > 0 {
			c := min(ca, cb)
			cc += c
			ct = 0
			ca -= c
			if ca == 0 && a < len(A) {
				ca = A[a]
				a++
				va = !va
			}
			ct += ca
			cb -= c
			if cb == 0 && b < len(B.Counts) {
				cb = B.Counts[b]
				b++
				vb = !vb
			}
			ct += cb
			vp = v
			if intersect {
				v = va && vb
			} else {
				v = va || vb
			}
			if v != vp || ct == 0 {
				out = append(out, cc)
				cc = 0
			}
		}
		cnts, out = out, cnts
	}
	return RLE{H: h, W: w, Counts: slices.Clone(cnts)}
}

// ErrPolygon reports a polygon that cannot be rasterised safely.
var ErrPolygon = errors.New("polygon")

// maxBoundary bounds the number of upsampled boundary points of one
// polygon (the C code would allocate them all).
const maxBoundary = 1 << 26

// FrPoly rasterises the polygon xy = [x0 y0 x1 y1 ...] into an h×w mask
// exactly as maskApi.c's rleFrPoly: vertices are upsampled ×5 and rounded
// with (int)(5x+0.5), the boundary is walked densely and downsampled to
// column crossings. An odd trailing coordinate is ignored, as in
// pycocotools. Coordinates must be finite; polygons whose upsampled
// boundary is absurdly long (far outside any image) are rejected.
func FrPoly(xy []float64, h, w int) (RLE, error) {
	if h < 0 || w < 0 || uint64(h)*uint64(w) > MaxPixels {
		return RLE{}, fmt.Errorf("%w: bad image size %dx%d", ErrPolygon, h, w)
	}
	k := len(xy) / 2
	const scale = 5.0
	x := make([]int, k+1)
	y := make([]int, k+1)
	for j := 0; j < k; j++ {
		fx, fy := xy[2*j], xy[2*j+1]
		if math.IsNaN(fx) || math.IsNaN(fy) || math.Abs(fx) > 1e8 || math.Abs(fy) > 1e8 {
			return RLE{}, fmt.Errorf("%w: coordinate (%g, %g) is not finite or far out of range", ErrPolygon, fx, fy)
		}
		x[j] = int(float64(scale*fx) + .5)
		y[j] = int(float64(scale*fy) + .5)
	}
	if k > 0 {
		x[k], y[k] = x[0], y[0]
	}
	m := 0
	for j := 0; j < k; j++ {
		m += max(absInt(x[j]-x[j+1]), absInt(y[j]-y[j+1])) + 1
		if m > maxBoundary {
			return RLE{}, fmt.Errorf("%w: boundary too long (coordinates far outside the %dx%d image)", ErrPolygon, h, w)
		}
	}
	// Walk the boundary point by point (the C code stores the points in
	// u, v; only consecutive pairs are needed) and keep y-boundary points.
	var bx, by []int
	first := true
	var pu, pv int
	emit := func(u, v int) {
		if first {
			first = false
			pu, pv = u, v
			return
		}
		if u != pu {
			var xd float64
			if u < pu {
				xd = float64(u)
			} else {
				xd = float64(u - 1)
			}
			xd = (xd+.5)/scale - .5
			if math.Floor(xd) == xd && xd >= 0 && xd <= float64(w-1) {
				var yd float64
				if v < pv {
					yd = float64(v)
				} else {
					yd = float64(pv)
				}
				yd = (yd+.5)/scale - .5
				if yd < 0 {
					yd = 0
				} else if yd > float64(h) {
					yd = float64(h)
				}
				yd = math.Ceil(yd)
				bx = append(bx, int(xd))
				by = append(by, int(yd))
			}
		}
		pu, pv = u, v
	}
	for j := 0; j < k; j++ {
		xs, xe, ys, ye := x[j], x[j+1], y[j], y[j+1]
		dx, dy := absInt(xe-xs), absInt(ys-ye)
		flip := (dx >= dy && xs > xe) || (dx < dy && ys > ye)
		if flip {
			xs, xe = xe, xs
			ys, ye = ye, ys
		}
		var s float64
		if dx >= dy {
			s = float64(ye-ys) / float64(dx)
		} else {
			s = float64(xe-xs) / float64(dy)
		}
		if dx >= dy {
			for d := 0; d <= dx; d++ {
				t := d
				if flip {
					t = dx - d
				}
				emit(t+xs, int(float64(ys)+float64(s*float64(t))+.5))
			}
		} else {
			for d := 0; d <= dy; d++ {
				t := d
				if flip {
					t = dy - d
				}
				emit(int(float64(xs)+float64(s*float64(t))+.5), t+ys)
			}
		}
	}
	// RLE from the y-boundary points.
	a := make([]uint32, 0, len(bx)+1)
	for j := range bx {
		a = append(a, uint32(bx[j]*h+by[j]))
	}
	a = append(a, uint32(h*w))
	slices.Sort(a)
	var p uint32
	for j := range a {
		t := a[j]
		a[j] -= p
		p = t
	}
	b := make([]uint32, 0, len(a))
	j := 0
	b = append(b, a[j])
	j++
	for j < len(a) {
		if a[j] > 0 {
			b = append(b, a[j])
			j++
		} else {
			j++
			if j < len(a) {
				b[len(b)-1] += a[j]
				j++
			}
		}
	}
	return RLE{H: h, W: w, Counts: b}, nil
}

// FrBbox is the mask of box bb = [x y w h] (rleFrBbox: the rectangle
// polygon rasterised by FrPoly).
func FrBbox(bb Box, h, w int) (RLE, error) {
	xs, xe := bb[0], bb[0]+bb[2]
	ys, ye := bb[1], bb[1]+bb[3]
	return FrPoly([]float64{xs, ys, xs, ye, xe, ye, xe, ys}, h, w)
}

func absInt(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
