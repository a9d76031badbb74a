package detection

import (
	"fmt"
	"math"
)

// MaskProbs is maskrcnn_inference for one image: maskLogits is n×K×M×M;
// it returns sigmoid(maskLogits[i, labels[i]]) as n×M×M.
func MaskProbs(maskLogits []float32, labels []int, numClasses, m int) ([]float32, error) {
	n := len(labels)
	if numClasses <= 0 || m <= 0 || len(maskLogits) != n*numClasses*m*m {
		return nil, fmt.Errorf("detection: mask probs: %d values for %d masks × %d classes × %d×%d", len(maskLogits), n, numClasses, m, m)
	}
	out := make([]float32, n*m*m)
	for i, l := range labels {
		if l < 0 || l >= numClasses {
			return nil, fmt.Errorf("detection: mask probs: label %d out of range [0,%d)", l, numClasses)
		}
		src := maskLogits[(i*numClasses+l)*m*m : (i*numClasses+l+1)*m*m]
		dst := out[i*m*m : (i+1)*m*m]
		for j, v := range src {
			dst[j] = sigmoid32(v)
		}
	}
	return out, nil
}

// ResizeBoxes is transform.resize_boxes: scales boxes (n×4, in place) from
// an image of fromH×fromW to toH×toW with float32 ratios to/from.
func ResizeBoxes(boxes []float32, fromH, fromW, toH, toW int) error {
	if _, err := checkBoxes("boxes", boxes); err != nil {
		return err
	}
	if fromH <= 0 || fromW <= 0 {
		return fmt.Errorf("detection: resize boxes from %dx%d", fromH, fromW)
	}
	rh := float32(toH) / float32(fromH)
	rw := float32(toW) / float32(fromW)
	for i := 0; i < len(boxes); i += 4 {
		boxes[i] = float32(boxes[i] * rw)
		boxes[i+1] = float32(boxes[i+1] * rh)
		boxes[i+2] = float32(boxes[i+2] * rw)
		boxes[i+3] = float32(boxes[i+3] * rh)
	}
	return nil
}

// maxPasteCoord bounds box coordinates accepted by mask pasting.
const maxPasteCoord = 1 << 30

// ExpandBox is roi_heads.expand_boxes for one box followed by the cast to
// int64 (truncation toward zero) done in paste_masks_in_image.
func ExpandBox(box []float32, scale float32) ([4]int, error) {
	for _, v := range box[:4] {
		if v != v || v > maxPasteCoord || v < -maxPasteCoord {
			return [4]int{}, fmt.Errorf("detection: paste mask: box %v is not finite or out of range", box[:4])
		}
	}
	half := float32(0.5)
	wHalf := float32((box[2] - box[0]) * half)
	hHalf := float32((box[3] - box[1]) * half)
	xc := float32((box[2] + box[0]) * half)
	yc := float32((box[3] + box[1]) * half)
	wHalf = float32(wHalf * scale)
	hHalf = float32(hHalf * scale)
	return [4]int{int(xc - wHalf), int(yc - hHalf), int(xc + wHalf), int(yc + hHalf)}, nil
}

// PasteMaskInImage pastes one M×M probability mask into dst (imH×imW,
// zeroed by the caller where the box does not cover it) exactly as
// paste_masks_in_image with padding: the mask is padded with zeros, the box
// expanded by (M+2p)/M and truncated to integers, the padded mask resized
// to the box (bilinear, align_corners=False) and the part inside the
// image copied.
func PasteMaskInImage(dst []float32, imH, imW int, mask []float32, m int, box []float32, padding int) error {
	if imH < 0 || imW < 0 || len(dst) != imH*imW {
		return fmt.Errorf("detection: paste mask: destination has %d values for %dx%d", len(dst), imH, imW)
	}
	r, err := PasteMaskRegion(nil, imH, imW, mask, m, box, padding)
	if err != nil || r.Empty() {
		return err
	}
	w := r.X1 - r.X0
	for y := r.Y0; y < r.Y1; y++ {
		copy(dst[y*imW+r.X0:y*imW+r.X1], r.Probs[(y-r.Y0)*w:(y-r.Y0+1)*w])
	}
	return nil
}

// MaskRegion is the part of an imH×imW image a pasted mask can cover:
// pixels [X0, X1) × [Y0, Y1) with their probabilities (row-major,
// (Y1-Y0)×(X1-X0)); paste_masks_in_image leaves every other pixel 0.
type MaskRegion struct {
	X0, Y0, X1, Y1 int
	Probs          []float32
}

// Empty reports whether the region has no pixels.
func (r MaskRegion) Empty() bool { return r.X1 <= r.X0 || r.Y1 <= r.Y0 }

// PasteMaskRegion is PasteMaskInImage restricted to the pixels the box
// covers (the same arithmetic); buf is reused for Probs when large enough.
func PasteMaskRegion(buf []float32, imH, imW int, mask []float32, m int, box []float32, padding int) (MaskRegion, error) {
	if imH < 0 || imW < 0 {
		return MaskRegion{}, fmt.Errorf("detection: paste mask: image size %dx%d", imH, imW)
	}
	if m <= 0 || len(mask) != m*m || len(box) != 4 || padding < 0 {
		return MaskRegion{}, fmt.Errorf("detection: paste mask: mask of %d values for M=%d, box of %d values, padding %d", len(mask), m, len(box), padding)
	}
	mp := m + 2*padding
	scale := float32(float64(mp) / float64(m))
	b, err := ExpandBox(box, scale)
	if err != nil {
		return MaskRegion{}, err
	}
	w := b[2] - b[0] + 1
	h := b[3] - b[1] + 1
	if w < 1 {
		w = 1
	}
	if h < 1 {
		h = 1
	}
	x0, x1 := max(b[0], 0), min(b[2]+1, imW)
	y0, y1 := max(b[1], 0), min(b[3]+1, imH)
	if x1 <= x0 || y1 <= y0 {
		return MaskRegion{}, nil
	}
	rw := x1 - x0
	if cap(buf) < rw*(y1-y0) {
		buf = make([]float32, rw*(y1-y0))
	}
	out := buf[:rw*(y1-y0)]
	padded := make([]float32, mp*mp)
	for y := 0; y < m; y++ {
		copy(padded[(y+padding)*mp+padding:(y+padding)*mp+padding+m], mask[y*m:(y+1)*m])
	}
	ys := linearIndices(mp, h, y0-b[1], y1-b[1])
	xs := linearIndices(mp, w, x0-b[0], x1-b[0])
	for y := y0; y < y1; y++ {
		iy := ys[y-y0]
		r0 := padded[iy.i0*mp : iy.i0*mp+mp]
		r1 := padded[iy.i1*mp : iy.i1*mp+mp]
		row := out[(y-y0)*rw : (y-y0+1)*rw]
		for x := x0; x < x1; x++ {
			ix := xs[x-x0]
			// cpu_upsample_linear_channels_last with one channel:
			// w00 = h0λ·w0λ, ..., out = i00·w00 + i01·w01 + i10·w10 + i11·w11.
			w00 := float32(iy.l0 * ix.l0)
			w01 := float32(iy.l0 * ix.l1)
			w10 := float32(iy.l1 * ix.l0)
			w11 := float32(iy.l1 * ix.l1)
			v := float32(r0[ix.i0]*w00) + float32(r0[ix.i1]*w01)
			v = v + float32(r1[ix.i0]*w10)
			v = v + float32(r1[ix.i1]*w11)
			row[x-x0] = v
		}
	}
	return MaskRegion{X0: x0, Y0: y0, X1: x1, Y1: y1, Probs: out}, nil
}

type lin struct {
	i0, i1 int
	l0, l1 float32
}

// linearIndices computes, for output indices [from, to) of a resize from
// in to out samples (align_corners=False, no explicit scale), torch's
// source indices and lambdas (area_pixel_compute_source_index and
// compute_source_index_and_lambda).
func linearIndices(in, out, from, to int) []lin {
	res := make([]lin, 0, to-from)
	scale := float32(in) / float32(out)
	for o := from; o < to; o++ {
		if in == out {
			res = append(res, lin{i0: o, i1: o, l0: 1, l1: 0})
			continue
		}
		src := float32(float64(scale)*(float64(o)+0.5) - 0.5)
		if src < 0 {
			src = 0
		}
		i0 := int(src)
		i1 := i0
		if i0 < in-1 {
			i1 = i0 + 1
		}
		l1 := src - float32(i0)
		res = append(res, lin{i0: i0, i1: i1, l0: 1 - l1, l1: l1})
	}
	return res
}

// PasteMasksInImage pastes n M×M masks (n×M×M) into images of imH×imW at
// boxes (n×4, original-image coordinates), as paste_masks_in_image with
// padding 1 in torchvision; the result is n×imH×imW probabilities.
func PasteMasksInImage(masks []float32, m int, boxes []float32, imH, imW int) ([]float32, error) {
	n, err := checkBoxes("boxes", boxes)
	if err != nil {
		return nil, err
	}
	if m <= 0 || len(masks) != n*m*m {
		return nil, fmt.Errorf("detection: paste masks: %d values for %d masks of %d×%d", len(masks), n, m, m)
	}
	if imH < 0 || imW < 0 || (imH > 0 && imW > math.MaxInt32/imH) {
		return nil, fmt.Errorf("detection: paste masks: image size %dx%d", imH, imW)
	}
	out := make([]float32, n*imH*imW)
	for i := 0; i < n; i++ {
		if err := PasteMaskInImage(out[i*imH*imW:(i+1)*imH*imW], imH, imW, masks[i*m*m:(i+1)*m*m], m, boxes[4*i:4*i+4], 1); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// BinarizeMasks returns 1 where a probability is > thresh (0.5 for COCO
// masks), else 0.
func BinarizeMasks(probs []float32, thresh float32) []uint8 {
	out := make([]uint8, len(probs))
	for i, p := range probs {
		if p > thresh {
			out[i] = 1
		}
	}
	return out
}
