package imageio

import (
	"fmt"
	"math"

	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/tensor"
)

// Resize names a detector's resizing convention (flbq.config resize).
type Resize int

const (
	// ResizeTorchvision is GeneralizedRCNNTransform: normalise, then
	// bilinear (align_corners=False) on float32 to floor(size·scale).
	ResizeTorchvision Resize = iota
	// ResizeMMCV is mmdetection's test pipeline: mmcv.imrescale's size
	// int(size·scale + 0.5) (scale in float64), cv2.resize INTER_LINEAR on
	// the 8-bit image with its 11-bit fixed-point weights and 8-bit
	// result, then normalise.
	ResizeMMCV
	// ResizePIL is detectron2's test pipeline: ResizeShortestEdge's size
	// (the short side scaled, then capped, each in float64, rounded with
	// int(x + 0.5)), Pillow's BILINEAR resample of the 8-bit image (its
	// antialiasing support, 22-bit fixed-point weights, horizontal then
	// vertical pass, each rounded to 8 bits), then normalise.
	ResizePIL
)

// String names the convention as flbq.config does.
func (r Resize) String() string {
	switch r {
	case ResizeTorchvision:
		return "torchvision"
	case ResizeMMCV:
		return "mmcv"
	case ResizePIL:
		return "pil"
	}
	return fmt.Sprintf("Resize(%d)", int(r))
}

// ParseResize reads a resize value ("" is torchvision).
func ParseResize(s string) (Resize, error) {
	switch s {
	case "", "torchvision":
		return ResizeTorchvision, nil
	case "mmcv":
		return ResizeMMCV, nil
	case "pil":
		return ResizePIL, nil
	}
	return 0, fmt.Errorf("resize %q: want \"torchvision\", \"mmcv\" or \"pil\"", s)
}

// DetectionTransform is a detector's preprocessing: resize so the short
// side is MinSize unless the long side would exceed MaxSize, normalise
// with Mean/Std (0..1 units), zero-pad to a multiple of SizeDivisible.
type DetectionTransform struct {
	MinSize, MaxSize int
	Mean, Std        []float64
	Resize           Resize
	// SquarePad, when set, pads to SquarePad×SquarePad (ViTDet) instead.
	SquarePad int
}

// Size returns the resized height and width of an h×w image.
func (t DetectionTransform) Size(h, w int) (int, int) {
	if t.Resize == ResizeMMCV {
		// mmcv.rescale_size: scale = min(max_long/long, max_short/short);
		// _scale_size: int(x·scale + 0.5).
		long, short := float64(max(t.MinSize, t.MaxSize)), float64(min(t.MinSize, t.MaxSize))
		s := math.Min(long/float64(max(h, w)), short/float64(min(h, w)))
		return int(float64(h)*s + 0.5), int(float64(w)*s + 0.5)
	}
	if t.Resize == ResizePIL {
		// detectron2 ResizeShortestEdge.get_output_shape.
		size := float64(t.MinSize)
		scale := size / float64(min(h, w))
		nh, nw := scale*float64(h), size
		if h < w {
			nh, nw = size, scale*float64(w)
		}
		if m := math.Max(nh, nw); m > float64(t.MaxSize) {
			s := float64(t.MaxSize) / m
			nh, nw = nh*s, nw*s
		}
		return int(nh + 0.5), int(nw + 0.5)
	}
	return DetectionSize(h, w, t.MinSize, t.MaxSize)
}

// Apply preprocesses one image.
func (t DetectionTransform) Apply(img *RGB) *DetectionInput {
	oh, ow := t.Size(img.H, img.W)
	var r []float32
	switch t.Resize {
	case ResizeMMCV:
		r = normalize255(ResizeLinear8(img, oh, ow), t.Mean, t.Std)
	case ResizePIL:
		r = normalize255(ResizeBilinearPIL(img, oh, ow), t.Mean, t.Std)
	default:
		r = nn.ResizeBilinear(Normalize(img, t.Mean, t.Std), 3, img.H, img.W, oh, ow)
	}
	hp := (oh + SizeDivisible - 1) / SizeDivisible * SizeDivisible
	wp := (ow + SizeDivisible - 1) / SizeDivisible * SizeDivisible
	if t.SquarePad >= max(oh, ow) {
		hp, wp = t.SquarePad, t.SquarePad
	}
	batch := tensor.New(1, 3, hp, wp)
	for c := 0; c < 3; c++ {
		for y := 0; y < oh; y++ {
			copy(batch.Data[(c*hp+y)*wp:(c*hp+y)*wp+ow], r[(c*oh+y)*ow:(c*oh+y+1)*ow])
		}
	}
	return &DetectionInput{Batch: batch, Height: oh, Width: ow, OrigHeight: img.H, OrigWidth: img.W}
}

// normalize255 is mmcv.imnormalize on 0..255 values: (v - 255·mean) · 1/(255·std).
func normalize255(img *RGB, mean, std []float64) []float32 {
	hw := img.W * img.H
	out := make([]float32, 3*hw)
	for c := 0; c < 3; c++ {
		m, inv := 255*mean[c], 1/(255*std[c])
		for i, v := range img.Pix[c*hw : (c+1)*hw] {
			out[c*hw+i] = float32((float64(v) - m) * inv)
		}
	}
	return out
}

// Fixed point of OpenCV's 8-bit INTER_LINEAR (INTER_RESIZE_COEF_BITS).
const (
	coefBits  = 11
	coefScale = 1 << coefBits
)

// linearTaps is one output coordinate of cv2's INTER_LINEAR: source index
// and the two fixed-point weights.
type linearTaps struct {
	i0, i1 int
	a0, a1 int32
}

// cvTaps computes cv2.resize's source positions along one axis (in → out
// samples): f = float32((d + 0.5)·(in/out) - 0.5), i = floor(f), weights
// round((1-frac)·2048) and round(frac·2048). Along x, positions before the
// first or past the last sample take that sample with full weight; along
// y (clampWeights false) the weights stay and the rows are clamped, which
// rounds differently in the vertical pass.
func cvTaps(in, out int, clampWeights bool) []linearTaps {
	scale := 1 / (float64(out) / float64(in))
	taps := make([]linearTaps, out)
	for d := range taps {
		f := float32((float64(d)+0.5)*scale - 0.5)
		i := int(math.Floor(float64(f)))
		f -= float32(i)
		if clampWeights && i < 0 {
			i, f = 0, 0
		}
		if clampWeights && i >= in-1 {
			i, f = in-1, 0
		}
		taps[d] = linearTaps{i0: min(max(i, 0), in-1), i1: min(max(i+1, 0), in-1),
			a0: int32(math.RoundToEven(float64((1 - f) * coefScale))),
			a1: int32(math.RoundToEven(float64(f * coefScale)))}
	}
	return taps
}

// ResizeLinear8 resizes an 8-bit image to oh×ow as OpenCV's cv2.resize
// with INTER_LINEAR does for 8-bit images (mmcv.imresize's default): a
// horizontal pass in integers, a vertical pass rounded back to 8 bits the
// way OpenCV 4.6's SIMD code does (two truncating steps), and INTER_AREA's
// 2×2 mean for an exact halving. Bit-exact with cv2 on the test images (tools/refgen/mmdet_ops_goldens.py);
// other OpenCV builds (AVX-512 dispatch, ARM) may differ by one level.
func ResizeLinear8(img *RGB, oh, ow int) *RGB {
	out := &RGB{W: ow, H: oh, Pix: make([]uint8, 3*oh*ow)}
	hw, ohw := img.W*img.H, oh*ow
	if img.H == 2*oh && img.W == 2*ow {
		for c := 0; c < 3; c++ {
			src, dst := img.Pix[c*hw:(c+1)*hw], out.Pix[c*ohw:(c+1)*ohw]
			for y := 0; y < oh; y++ {
				r0, r1 := src[2*y*img.W:], src[(2*y+1)*img.W:]
				for x := 0; x < ow; x++ {
					s := int(r0[2*x]) + int(r0[2*x+1]) + int(r1[2*x]) + int(r1[2*x+1])
					dst[y*ow+x] = uint8((s + 2) >> 2)
				}
			}
		}
		return out
	}
	xs, ys := cvTaps(img.W, ow, true), cvTaps(img.H, oh, false)
	nn.ParallelFor(3*oh, 8, func(lo, hi int) {
		row0, row1 := make([]int32, ow), make([]int32, ow)
		for r := lo; r < hi; r++ {
			c, y := r/oh, r%oh
			src := img.Pix[c*hw : (c+1)*hw]
			t := ys[y]
			hpass(row0, src[t.i0*img.W:(t.i0+1)*img.W], xs)
			hpass(row1, src[t.i1*img.W:(t.i1+1)*img.W], xs)
			dst := out.Pix[c*ohw+y*ow : c*ohw+(y+1)*ow]
			for x := range dst {
				// VResizeLinearVec_32s8u: ((S0>>4)·b0 >> 16) + ((S1>>4)·b1 >> 16), + 2, >> 2.
				v := (((row0[x]>>4)*t.a0)>>16 + ((row1[x]>>4)*t.a1)>>16 + 2) >> 2
				dst[x] = uint8(min(max(v, 0), 255))
			}
		}
	})
	return out
}

func hpass(dst []int32, src []uint8, xs []linearTaps) {
	for x, t := range xs {
		dst[x] = int32(src[t.i0])*t.a0 + int32(src[t.i1])*t.a1
	}
}

// Pillow's fixed point for 8-bit resampling (libImaging/Resample.c).
const pilPrecisionBits = 32 - 8 - 2

// pilTaps is precompute_coeffs + normalize_coeffs_8bpc for the bilinear
// filter (support 1, widened by the downscaling factor): per output
// sample, the first input index and the fixed-point weights.
func pilTaps(in, out int) ([]int, [][]int32) {
	scale := float64(in) / float64(out)
	filterscale := math.Max(scale, 1)
	support := 1 * filterscale
	first := make([]int, out)
	ks := make([][]int32, out)
	for xx := 0; xx < out; xx++ {
		center := (float64(xx) + 0.5) * scale
		ss := 1 / filterscale
		xmin := max(int(center-support+0.5), 0)
		xmax := min(int(center+support+0.5), in) - xmin
		w := make([]float64, max(xmax, 0))
		ww := 0.0
		for x := range w {
			v := math.Abs((float64(x+xmin) - center + 0.5) * ss)
			if v < 1 {
				w[x] = 1 - v
			}
			ww += w[x]
		}
		k := make([]int32, len(w))
		for x := range w {
			if ww != 0 {
				w[x] /= ww
			}
			if w[x] < 0 {
				k[x] = int32(-0.5 + w[x]*(1<<pilPrecisionBits))
			} else {
				k[x] = int32(0.5 + w[x]*(1<<pilPrecisionBits))
			}
		}
		first[xx], ks[xx] = xmin, k
	}
	return first, ks
}

func pilClip8(v int64) uint8 {
	if v >= 1<<pilPrecisionBits<<8 {
		return 255
	}
	if v <= 0 {
		return 0
	}
	return uint8(v >> pilPrecisionBits)
}

// ResizeBilinearPIL resizes an 8-bit image to oh×ow as Pillow's
// Image.resize(BILINEAR) does (as detectron2's ResizeTransform calls it):
// a horizontal pass rounded to 8 bits, then a vertical one; an image of
// the same size is copied.
func ResizeBilinearPIL(img *RGB, oh, ow int) *RGB {
	out := &RGB{W: ow, H: oh, Pix: make([]uint8, 3*oh*ow)}
	if oh == img.H && ow == img.W {
		copy(out.Pix, img.Pix)
		return out
	}
	hw := img.W * img.H
	xf, xk := pilTaps(img.W, ow)
	yf, yk := pilTaps(img.H, oh)
	for c := 0; c < 3; c++ {
		src := img.Pix[c*hw : (c+1)*hw]
		// Horizontal pass (every input row; Pillow skips rows the vertical
		// pass never reads, which changes nothing).
		tmp := src
		tw := img.W
		if ow != img.W {
			tw = ow
			tmp = make([]uint8, img.H*ow)
			for y := 0; y < img.H; y++ {
				row := src[y*img.W : (y+1)*img.W]
				for x := 0; x < ow; x++ {
					acc := int64(1) << (pilPrecisionBits - 1)
					for i, k := range xk[x] {
						acc += int64(row[xf[x]+i]) * int64(k)
					}
					tmp[y*ow+x] = pilClip8(acc)
				}
			}
		}
		dst := out.Pix[c*oh*ow : (c+1)*oh*ow]
		if oh == img.H {
			copy(dst, tmp)
			continue
		}
		for y := 0; y < oh; y++ {
			for x := 0; x < tw; x++ {
				acc := int64(1) << (pilPrecisionBits - 1)
				for i, k := range yk[y] {
					acc += int64(tmp[(yf[y]+i)*tw+x]) * int64(k)
				}
				dst[y*ow+x] = pilClip8(acc)
			}
		}
	}
	return out
}
