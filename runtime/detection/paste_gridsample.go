package detection

import (
	"fmt"
	"math"
)

// MaskPaste selects how a Mask R-CNN pastes its M×M mask probabilities
// into the image and binarises them.
type MaskPaste int

const (
	// PasteTorchvision is torchvision's paste_masks_in_image: the mask is
	// padded by one pixel, the box expanded to match and rounded to
	// integers, the mask resized bilinearly onto it; pixels > threshold
	// are foreground.
	PasteTorchvision MaskPaste = iota
	// PasteGridSample is mmdetection's FCNMaskHead._do_paste_mask: each
	// image pixel centre is mapped into the exact (unrounded) box and the
	// mask sampled there with F.grid_sample (bilinear, zero outside,
	// align_corners=False); pixels >= threshold are foreground.
	PasteGridSample
)

// String names the mode as flbq.config's mask_paste does.
func (p MaskPaste) String() string {
	switch p {
	case PasteTorchvision:
		return "torchvision"
	case PasteGridSample:
		return "grid_sample"
	}
	return fmt.Sprintf("MaskPaste(%d)", int(p))
}

// ParseMaskPaste reads a mask_paste value.
func ParseMaskPaste(s string) (MaskPaste, error) {
	for _, p := range []MaskPaste{PasteTorchvision, PasteGridSample} {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("mask_paste %q: want \"torchvision\" or \"grid_sample\"", s)
}

// foreground is the binarisation rule of the paste mode.
func (p MaskPaste) foreground(v, thresh float32) bool {
	if p == PasteGridSample {
		return v >= thresh
	}
	return v > thresh
}

// PasteMaskGridSample pastes one M×M probability mask at box (image
// coordinates) into an imH×imW image as mmdetection 2.x's _do_paste_mask
// does on the CPU (skip_empty: only the pixels from floor(x0)-1 to
// ceil(x1)+1, clamped to the image, are computed); buf is reused when
// large enough. The arithmetic is float32 in torch's order.
func PasteMaskGridSample(buf []float32, imH, imW int, mask []float32, m int, box []float32) (MaskRegion, error) {
	if imH < 0 || imW < 0 {
		return MaskRegion{}, fmt.Errorf("detection: paste mask: image size %dx%d", imH, imW)
	}
	if m <= 0 || len(mask) != m*m || len(box) != 4 {
		return MaskRegion{}, fmt.Errorf("detection: paste mask: mask of %d values for M=%d, box of %d values", len(mask), m, len(box))
	}
	bx0, by0, bx1, by1 := box[0], box[1], box[2], box[3]
	for _, v := range box {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return MaskRegion{}, nil
		}
	}
	// x0_int, y0_int = clamp(boxes.min(0).floor()[:2] - 1, min=0);
	// x1_int = clamp(boxes[:, 2].max().ceil() + 1, max=img_w).
	x0 := max(int(math.Floor(float64(bx0)))-1, 0)
	y0 := max(int(math.Floor(float64(by0)))-1, 0)
	x1 := min(int(math.Ceil(float64(bx1)))+1, imW)
	y1 := min(int(math.Ceil(float64(by1)))+1, imH)
	if x1 <= x0 || y1 <= y0 {
		return MaskRegion{}, nil
	}
	rw := x1 - x0
	if cap(buf) < rw*(y1-y0) {
		buf = make([]float32, rw*(y1-y0))
	}
	out := buf[:rw*(y1-y0)]
	gx := gridCoords(x0, x1, bx0, bx1, m)
	gy := gridCoords(y0, y1, by0, by1, m)
	at := func(y, x int) float32 {
		if y < 0 || y >= m || x < 0 || x >= m {
			return 0
		}
		return mask[y*m+x]
	}
	for j, iy := range gy {
		row := out[j*rw : (j+1)*rw]
		for i, ix := range gx {
			row[i] = bilinearZeros(at, iy, ix)
		}
	}
	return MaskRegion{X0: x0, Y0: y0, X1: x1, Y1: y1, Probs: out}, nil
}

// gridCoords maps pixel centres [lo, hi) into the box [b0, b1] and on to
// grid_sample's source coordinate in an m-sample axis:
// g = (p + 0.5 - b0) / (b1 - b0) * 2 - 1 (an infinite g becomes 0, as
// _do_paste_mask does), then x = (g + 1) · (m/2) - 0.5 (align_corners=False).
func gridCoords(lo, hi int, b0, b1 float32, m int) []float32 {
	out := make([]float32, hi-lo)
	d := b1 - b0
	half := float32(m) / 2
	for p := lo; p < hi; p++ {
		g := float32(float32(float32(float32(float32(p)+0.5)-b0)/d)*2) - 1
		if math.IsInf(float64(g), 0) {
			g = 0
		}
		out[p-lo] = float32(float32(g+1)*half) - 0.5
	}
	return out
}

// bilinearZeros is grid_sample's bilinear tap with zero padding:
// nw·s·e + ne·s·w + sw·n·e + se·n·w, out-of-range taps reading 0, summed
// in that order.
func bilinearZeros(at func(y, x int) float32, y, x float32) float32 {
	if x != x || y != y {
		return 0
	}
	xw := float32(math.Floor(float64(x)))
	yn := float32(math.Floor(float64(y)))
	w := x - xw
	e := 1 - w
	n := y - yn
	s := 1 - n
	ix, iy := int(xw), int(yn)
	v := float32(at(iy, ix)*float32(s*e)) + float32(at(iy, ix+1)*float32(s*w))
	v = v + float32(at(iy+1, ix)*float32(n*e))
	return v + float32(at(iy+1, ix+1)*float32(n*w))
}
