package detection

import (
	"fmt"
	"math"
)

// BboxXformClip is torchvision's default clamp of dw/dh before exp: log(1000/16).
var BboxXformClip = math.Log(1000.0 / 16)

// BoxCoder encodes and decodes box regression targets, as
// torchvision.models.detection._utils.BoxCoder.
type BoxCoder struct {
	// Weights (wx, wy, ww, wh): (1,1,1,1) in the RPN, (10,10,5,5) in the RoI heads.
	Weights [4]float64
	// Clip is the upper clamp applied to dw/dh before exp (log(1000/16) in torchvision).
	Clip float64
	// ClipBelow also clamps dw/dh at -Clip, as mmdetection's delta2bbox does.
	ClipBelow bool
}

// RPNBoxCoder is the RPN's coder: weights (1,1,1,1).
func RPNBoxCoder() BoxCoder { return BoxCoder{Weights: [4]float64{1, 1, 1, 1}, Clip: BboxXformClip} }

// RoIBoxCoder is the RoI heads' coder: weights (10,10,5,5).
func RoIBoxCoder() BoxCoder { return BoxCoder{Weights: [4]float64{10, 10, 5, 5}, Clip: BboxXformClip} }

func checkBoxes(name string, b []float32) (int, error) {
	if len(b)%4 != 0 {
		return 0, fmt.Errorf("detection: %s has %d values, not a multiple of 4", name, len(b))
	}
	return len(b) / 4, nil
}

// Decode applies deltas to reference boxes. boxes is n×4; deltas is
// n×(4·k) (k predictions per box, e.g. one per class); the result is
// n×k×4 (flat), as BoxCoder.decode followed by reshape(n, k, 4).
func (c BoxCoder) Decode(deltas, boxes []float32) ([]float32, error) {
	n, err := checkBoxes("boxes", boxes)
	if err != nil {
		return nil, err
	}
	if n == 0 {
		if len(deltas) != 0 {
			return nil, fmt.Errorf("detection: decode: %d deltas for 0 boxes", len(deltas))
		}
		return []float32{}, nil
	}
	if len(deltas)%(4*n) != 0 {
		return nil, fmt.Errorf("detection: decode: %d deltas is not a multiple of 4×%d boxes", len(deltas), n)
	}
	k := len(deltas) / (4 * n)
	out := make([]float32, len(deltas))
	c.decodeInto(out, deltas, boxes, n, k)
	return out, nil
}

func (c BoxCoder) decodeInto(out, deltas, boxes []float32, n, k int) {
	wx, wy := float32(c.Weights[0]), float32(c.Weights[1])
	ww, wh := float32(c.Weights[2]), float32(c.Weights[3])
	clip := float32(c.Clip)
	half := float32(0.5)
	for i := 0; i < n; i++ {
		b := boxes[4*i : 4*i+4]
		width := b[2] - b[0]
		height := b[3] - b[1]
		ctrX := b[0] + float32(half*width)
		ctrY := b[1] + float32(half*height)
		for j := 0; j < k; j++ {
			d := deltas[(i*k+j)*4 : (i*k+j)*4+4]
			dx := d[0] / wx
			dy := d[1] / wy
			dw := d[2] / ww
			dh := d[3] / wh
			// torch.clamp(max=...) propagates NaN.
			if dw > clip {
				dw = clip
			}
			if dh > clip {
				dh = clip
			}
			if c.ClipBelow {
				if dw < -clip {
					dw = -clip
				}
				if dh < -clip {
					dh = -clip
				}
			}
			pcx := float32(dx*width) + ctrX
			pcy := float32(dy*height) + ctrY
			pw := float32(float32(math.Exp(float64(dw))) * width)
			ph := float32(float32(math.Exp(float64(dh))) * height)
			cw := float32(half * pw)
			ch := float32(half * ph)
			o := out[(i*k+j)*4 : (i*k+j)*4+4]
			o[0] = pcx - cw
			o[1] = pcy - ch
			o[2] = pcx + cw
			o[3] = pcy + ch
		}
	}
}

// Encode computes regression targets of reference boxes relative to
// proposals (both n×4), as BoxCoder.encode_single; the result is n×4.
func (c BoxCoder) Encode(reference, proposals []float32) ([]float32, error) {
	n, err := checkBoxes("proposals", proposals)
	if err != nil {
		return nil, err
	}
	if len(reference) != len(proposals) {
		return nil, fmt.Errorf("detection: encode: %d reference values for %d proposal values", len(reference), len(proposals))
	}
	wx, wy := float32(c.Weights[0]), float32(c.Weights[1])
	ww, wh := float32(c.Weights[2]), float32(c.Weights[3])
	half := float32(0.5)
	out := make([]float32, 4*n)
	for i := 0; i < n; i++ {
		p := proposals[4*i : 4*i+4]
		g := reference[4*i : 4*i+4]
		exW := p[2] - p[0]
		exH := p[3] - p[1]
		exCX := p[0] + float32(half*exW)
		exCY := p[1] + float32(half*exH)
		gtW := g[2] - g[0]
		gtH := g[3] - g[1]
		gtCX := g[0] + float32(half*gtW)
		gtCY := g[1] + float32(half*gtH)
		out[4*i] = float32(wx*(gtCX-exCX)) / exW
		out[4*i+1] = float32(wy*(gtCY-exCY)) / exH
		out[4*i+2] = float32(ww * float32(math.Log(float64(gtW/exW))))
		out[4*i+3] = float32(wh * float32(math.Log(float64(gtH/exH))))
	}
	return out, nil
}

func clampf(v, lo, hi float32) float32 {
	// torch.clamp(min, max): NaN stays NaN; max wins if lo > hi.
	if v < lo {
		v = lo
	}
	if v > hi {
		v = hi
	}
	return v
}

// ClipBoxesToImage clamps x to [0, width] and y to [0, height] in place
// (torchvision.ops.clip_boxes_to_image).
func ClipBoxesToImage(boxes []float32, height, width int) error {
	if _, err := checkBoxes("boxes", boxes); err != nil {
		return err
	}
	h, w := float32(height), float32(width)
	for i := 0; i < len(boxes); i += 4 {
		boxes[i] = clampf(boxes[i], 0, w)
		boxes[i+1] = clampf(boxes[i+1], 0, h)
		boxes[i+2] = clampf(boxes[i+2], 0, w)
		boxes[i+3] = clampf(boxes[i+3], 0, h)
	}
	return nil
}

// RemoveSmallBoxes returns the indices of boxes whose width and height are
// both >= minSize (torchvision.ops.remove_small_boxes; the comparison is in
// float32 as torch does with a Python scalar).
func RemoveSmallBoxes(boxes []float32, minSize float64) ([]int, error) {
	n, err := checkBoxes("boxes", boxes)
	if err != nil {
		return nil, err
	}
	m := float32(minSize)
	keep := make([]int, 0, n)
	for i := 0; i < n; i++ {
		b := boxes[4*i : 4*i+4]
		if b[2]-b[0] >= m && b[3]-b[1] >= m {
			keep = append(keep, i)
		}
	}
	return keep, nil
}

// BoxArea returns (x2-x1)·(y2-y1) per box.
func BoxArea(boxes []float32) ([]float32, error) {
	n, err := checkBoxes("boxes", boxes)
	if err != nil {
		return nil, err
	}
	a := make([]float32, n)
	for i := range a {
		b := boxes[4*i : 4*i+4]
		a[i] = float32((b[2] - b[0]) * (b[3] - b[1]))
	}
	return a, nil
}

// GatherBoxes returns boxes[idx] (n×4 → len(idx)×4).
func GatherBoxes(boxes []float32, idx []int) []float32 {
	out := make([]float32, 4*len(idx))
	for j, i := range idx {
		copy(out[4*j:4*j+4], boxes[4*i:4*i+4])
	}
	return out
}

func gather32(v []float32, idx []int) []float32 {
	out := make([]float32, len(idx))
	for j, i := range idx {
		out[j] = v[i]
	}
	return out
}

func gatherInt(v []int, idx []int) []int {
	out := make([]int, len(idx))
	for j, i := range idx {
		out[j] = v[i]
	}
	return out
}
