package nn

import "math"

// Interpolation as torch.nn.functional.interpolate on NCHW planes (nc
// planes of h×w), with the output size given (or recomputed from a scale
// factor, as recompute_scale_factor=True does) and align_corners=False.
// Source coordinates and weights are computed in float32 as torch's CPU
// kernels do.

func areaScale(in, out int) float32 { return float32(in) / float32(out) }

// ResizeBilinear is interpolate(mode="bilinear", align_corners=False).
func ResizeBilinear(x []float32, nc, h, w, oh, ow int) []float32 {
	y0, y1, wy0, wy1 := LinearIndices(h, oh)
	x0, x1, wx0, wx1 := LinearIndices(w, ow)
	out := make([]float32, nc*oh*ow)
	ParallelFor(nc*oh, 8, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			p, oy := r/oh, r%oh
			src := x[p*h*w : (p+1)*h*w]
			ra := src[y0[oy]*w : y0[oy]*w+w]
			rb := src[y1[oy]*w : y1[oy]*w+w]
			dst := out[r*ow : r*ow+ow]
			a, b := wy0[oy], wy1[oy]
			for ox := range dst {
				i0, i1 := x0[ox], x1[ox]
				t := ra[i0]*wx0[ox] + ra[i1]*wx1[ox]
				u := rb[i0]*wx0[ox] + rb[i1]*wx1[ox]
				dst[ox] = t*a + u*b
			}
		}
	})
	return out
}

// LinearIndices returns, for a linear interpolation from in to out samples
// (align_corners=False), each output's two source indices and weights as
// torch's area_pixel_compute_source_index computes them.
func LinearIndices(in, out int) (i0, i1 []int, l0, l1 []float32) {
	i0, i1 = make([]int, out), make([]int, out)
	l0, l1 = make([]float32, out), make([]float32, out)
	scale := areaScale(in, out)
	for o := 0; o < out; o++ {
		if in == out {
			i0[o], i1[o], l0[o], l1[o] = o, o, 1, 0
			continue
		}
		// The float32 scale times (o + 0.5) is evaluated in float64, as
		// torch's area_pixel_compute_source_index promotes it (verified
		// against torch 1.13 to the last bit on the goldens).
		real := float64(scale)*(float64(o)+0.5) - 0.5
		if real < 0 {
			real = 0
		}
		idx := int(real)
		off := 0
		if idx < in-1 {
			off = 1
		}
		lam := float32(real - float64(idx))
		if lam < 0 {
			lam = 0
		} else if lam > 1 {
			lam = 1
		}
		i0[o], i1[o], l1[o], l0[o] = idx, idx+off, lam, 1-lam
	}
	return
}

// ScaledSize is the output size interpolate computes from a scale factor
// with recompute_scale_factor=True: floor(in·scale) in float64.
func ScaledSize(in int, scale float64) int { return int(math.Floor(float64(in) * scale)) }

// ResizeNearest is interpolate(mode="nearest") with an output size.
func ResizeNearest(x []float32, nc, h, w, oh, ow int) []float32 {
	iy := nearestIndices(h, oh)
	ix := nearestIndices(w, ow)
	out := make([]float32, nc*oh*ow)
	ParallelFor(nc, 1, func(lo, hi int) {
		for p := lo; p < hi; p++ {
			src := x[p*h*w : (p+1)*h*w]
			dst := out[p*oh*ow : (p+1)*oh*ow]
			for oy := 0; oy < oh; oy++ {
				row := src[iy[oy]*w : iy[oy]*w+w]
				d := dst[oy*ow : oy*ow+ow]
				for ox := range d {
					d[ox] = row[ix[ox]]
				}
			}
		}
	})
	return out
}

func nearestIndices(in, out int) []int {
	idx := make([]int, out)
	scale := areaScale(in, out)
	for o := range idx {
		switch {
		case in == out:
			idx[o] = o
		case out == 2*in:
			idx[o] = o >> 1
		default:
			s := int(float32(math.Floor(float64(float32(o) * scale))))
			if s > in-1 {
				s = in - 1
			}
			idx[o] = s
		}
	}
	return idx
}

// ResizeBicubic is interpolate(mode="bicubic", align_corners=False)
// (Keys kernel, A = -0.75, border-clamped taps).
func ResizeBicubic(x []float32, nc, h, w, oh, ow int) []float32 {
	yi, yw := cubicIndices(h, oh)
	xi, xw := cubicIndices(w, ow)
	out := make([]float32, nc*oh*ow)
	ParallelFor(nc*oh, 4, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			p, oy := r/oh, r%oh
			src := x[p*h*w : (p+1)*h*w]
			dst := out[r*ow : r*ow+ow]
			for ox := range dst {
				var acc float32
				for a := 0; a < 4; a++ {
					row := src[yi[oy][a]*w:]
					t := row[xi[ox][0]] * xw[ox][0]
					for b := 1; b < 4; b++ {
						t += row[xi[ox][b]] * xw[ox][b]
					}
					if a == 0 {
						acc = t * yw[oy][0]
					} else {
						acc += t * yw[oy][a]
					}
				}
				dst[ox] = acc
			}
		}
	})
	return out
}

func cubicIndices(in, out int) ([][4]int, [][4]float32) {
	idx := make([][4]int, out)
	wts := make([][4]float32, out)
	scale := areaScale(in, out)
	const A = -0.75
	c1 := func(x float32) float32 { return ((A+2)*x-(A+3))*x*x + 1 }
	c2 := func(x float32) float32 { return ((A*x-5*A)*x+8*A)*x - 4*A }
	for o := 0; o < out; o++ {
		var real float32
		if in == out {
			real = float32(o)
		} else {
			real = scale*(float32(o)+0.5) - 0.5
		}
		fl := float32(math.Floor(float64(real)))
		i := int(fl)
		t := real - fl
		wts[o] = [4]float32{c2(t + 1), c1(t), c1(1 - t), c2(1 - t + 1)}
		for j := 0; j < 4; j++ {
			v := i - 1 + j
			if v > in-1 {
				v = in - 1
			}
			if v < 0 {
				v = 0
			}
			idx[o][j] = v
		}
	}
	return idx, wts
}
