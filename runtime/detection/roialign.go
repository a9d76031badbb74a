package detection

import (
	"fmt"
	"math"

	"github.com/flbq/flbq/runtime/nn"
)

// FeatureMap is one image's C×H×W float32 feature map, row-major in
// C×H×W order, or H×W×C when ChannelsLast (the layout the pyramid and the
// heads compute in; RoIAlign reads it without a transposed copy).
type FeatureMap struct {
	C, H, W      int
	Data         []float32
	ChannelsLast bool
}

func (f FeatureMap) check() error {
	if f.C < 0 || f.H < 0 || f.W < 0 {
		return fmt.Errorf("negative shape %dx%dx%d", f.C, f.H, f.W)
	}
	if len(f.Data) != f.C*f.H*f.W {
		return fmt.Errorf("shape %dx%dx%d needs %d values, have %d", f.C, f.H, f.W, f.C*f.H*f.W, len(f.Data))
	}
	return nil
}

// RoIAlignParams configures RoIAlign. torchvision's Mask R-CNN uses 7×7
// (box head) and 14×14 (mask head) outputs with SamplingRatio 2 and Aligned false.
type RoIAlignParams struct {
	PooledH, PooledW int
	SpatialScale     float32
	SamplingRatio    int // <= 0: adaptive, ceil(roi size / pooled size) samples per bin
	Aligned          bool
}

type preCalc struct {
	p1, p2, p3, p4 int32
	w1, w2, w3, w4 float32
}

// RoIAlign is torchvision.ops.roi_align on CPU for one image: boxes are n×4
// in image coordinates; the result is n×C×PooledH×PooledW. The arithmetic
// follows torchvision's roi_align_kernel.cpp step by step (including
// bilinear_interpolate's rules: samples with y < -1, y > H, x < -1 or x > W
// contribute zero, coordinates <= 0 snap to 0, and coordinates at or past
// the last row/column snap to it).
func RoIAlign(feat FeatureMap, boxes []float32, p RoIAlignParams) ([]float32, error) {
	n, err := checkBoxes("boxes", boxes)
	if err != nil {
		return nil, err
	}
	if err := feat.check(); err != nil {
		return nil, fmt.Errorf("detection: roi_align input: %w", err)
	}
	if p.PooledH <= 0 || p.PooledW <= 0 {
		return nil, fmt.Errorf("detection: roi_align output size %dx%d", p.PooledH, p.PooledW)
	}
	if p.SamplingRatio <= 0 {
		for r := 0; r < n; r++ {
			if err := checkAdaptiveGrid(boxes[4*r:4*r+4], p); err != nil {
				return nil, err
			}
		}
	}
	out := make([]float32, n*feat.C*p.PooledH*p.PooledW)
	hwc := feat.channelLast()
	var ws roiScratch
	for r := 0; r < n; r++ {
		roiAlignOne(out[r*feat.C*p.PooledH*p.PooledW:(r+1)*feat.C*p.PooledH*p.PooledW], feat, hwc, boxes[4*r:4*r+4], p, &ws)
	}
	return out, nil
}

// roiAlignOne pools one box from feat (hwc: its channel-last copy) into
// out (C×PooledH×PooledW).
func roiAlignOne(out []float32, feat FeatureMap, hwc []float32, box []float32, p RoIAlignParams, ws *roiScratch) {
	height, width := feat.H, feat.W
	ph, pw := p.PooledH, p.PooledW
	scale := p.SpatialScale
	var offset float32
	if p.Aligned {
		offset = 0.5
	}
	startW := float32(box[0]*scale) - offset
	startH := float32(box[1]*scale) - offset
	endW := float32(box[2]*scale) - offset
	endH := float32(box[3]*scale) - offset
	roiW := endW - startW
	roiH := endH - startH
	if !p.Aligned {
		roiW = fmax(roiW, 1)
		roiH = fmax(roiH, 1)
	}
	binH := roiH / float32(ph)
	binW := roiW / float32(pw)
	gridH, gridW := p.SamplingRatio, p.SamplingRatio
	if p.SamplingRatio <= 0 {
		gridH = int(float32(math.Ceil(float64(roiH / float32(ph)))))
		gridW = int(float32(math.Ceil(float64(roiW / float32(pw)))))
	}
	cnt := gridH * gridW
	if cnt < 1 {
		cnt = 1
	}
	count := float32(cnt)
	need := gridH * gridW * ph * pw
	if need < 0 {
		need = 0
	}
	if cap(ws.pc) < need {
		ws.pc = make([]preCalc, need)
	}
	if cap(ws.acc) < feat.C {
		ws.acc = make([]float32, feat.C)
	}
	pc := ws.pc[:need]
	idx := 0
	for y := 0; y < ph; y++ {
		for x := 0; x < pw; x++ {
			for iy := 0; iy < gridH; iy++ {
				yy := float32(startH+float32(float32(y)*binH)) + float32(float32(float32(iy)+.5)*binH)/float32(gridH)
				for ix := 0; ix < gridW; ix++ {
					xx := float32(startW+float32(float32(x)*binW)) + float32(float32(float32(ix)+.5)*binW)/float32(gridW)
					pc[idx] = bilinearPreCalc(yy, xx, height, width)
					idx++
				}
			}
		}
	}
	// Channel-last: the four taps of a sample are four contiguous runs of C
	// values, read once for every channel instead of gathered per channel.
	// Each channel's sums keep torchvision's order, so results are identical.
	C, ns, nb := feat.C, gridH*gridW, ph*pw
	acc := ws.acc[:C]
	for b := 0; b < nb; b++ {
		clear(acc)
		for _, q := range pc[b*ns : (b+1)*ns] {
			w := [4]float32{q.w1, q.w2, q.w3, q.w4}
			nn.BilerpAcc(acc, hwc[int(q.p1)*C:int(q.p1)*C+C], hwc[int(q.p2)*C:int(q.p2)*C+C],
				hwc[int(q.p3)*C:int(q.p3)*C+C], hwc[int(q.p4)*C:int(q.p4)*C+C], &w)
		}
		for c, v := range acc {
			out[c*nb+b] = v / count
		}
	}
}

// channelLast returns the map's values as H×W×C.
func (f FeatureMap) channelLast() []float32 {
	if f.ChannelsLast {
		return f.Data
	}
	hw := f.H * f.W
	t := make([]float32, len(f.Data))
	for c := 0; c < f.C; c++ {
		for i, v := range f.Data[c*hw : (c+1)*hw] {
			t[i*f.C+c] = v
		}
	}
	return t
}

// roiScratch is one goroutine's reusable RoIAlign buffers.
type roiScratch struct {
	pc  []preCalc
	acc []float32
}

// maxAdaptiveGrid bounds the adaptive sampling grid per bin side so that a
// huge or non-finite box cannot demand an unbounded allocation.
const maxAdaptiveGrid = 1 << 12

func checkAdaptiveGrid(box []float32, p RoIAlignParams) error {
	for _, v := range box {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("detection: roi_align: non-finite box %v with adaptive sampling", box)
		}
	}
	gw := math.Ceil(float64((box[2]-box[0])*p.SpatialScale) / float64(p.PooledW))
	gh := math.Ceil(float64((box[3]-box[1])*p.SpatialScale) / float64(p.PooledH))
	if gw > maxAdaptiveGrid || gh > maxAdaptiveGrid {
		return fmt.Errorf("detection: roi_align: box %v needs a %gx%g sampling grid per bin (limit %d)", box, gh, gw, maxAdaptiveGrid)
	}
	return nil
}

func bilinearPreCalc(y, x float32, height, width int) preCalc {
	if float64(y) < -1.0 || y > float32(height) || float64(x) < -1.0 || x > float32(width) {
		return preCalc{}
	}
	if y != y || x != x {
		// NaN coordinates: undefined in torchvision's kernel; contribute zero.
		return preCalc{}
	}
	if y <= 0 {
		y = 0
	}
	if x <= 0 {
		x = 0
	}
	yl, xl := int(y), int(x)
	var yh, xh int
	if yl >= height-1 {
		yl, yh = height-1, height-1
		y = float32(yl)
	} else {
		yh = yl + 1
	}
	if xl >= width-1 {
		xl, xh = width-1, width-1
		x = float32(xl)
	} else {
		xh = xl + 1
	}
	ly := y - float32(yl)
	lx := x - float32(xl)
	hy, hx := 1-ly, 1-lx
	return preCalc{
		p1: int32(yl*width + xl), p2: int32(yl*width + xh), p3: int32(yh*width + xl), p4: int32(yh*width + xh),
		w1: float32(hy * hx), w2: float32(hy * lx), w3: float32(ly * hx), w4: float32(ly * lx),
	}
}

// InferScale is poolers._infer_scale: 2^round(log2(featureH / imageH)),
// with the log2 and round (half to even) done in float32 as torch does.
func InferScale(featureH, imageH int) float64 {
	approx := float64(featureH) / float64(imageH)
	l := float32(math.Log2(float64(float32(approx))))
	return math.Pow(2, math.RoundToEven(float64(l)))
}

// LevelMapper is torchvision's FPN level mapper (poolers.LevelMapper).
type LevelMapper struct {
	KMin, KMax     int
	CanonicalScale int     // 224
	CanonicalLevel int     // 4
	Eps            float64 // 1e-6
}

// Levels returns, for each box, its pyramid index in [0, KMax-KMin]:
// floor(lvl0 + log2(sqrt(area)/s0) + eps) clamped to [KMin, KMax], minus KMin.
func (m LevelMapper) Levels(boxes []float32) ([]int, error) {
	area, err := BoxArea(boxes)
	if err != nil {
		return nil, err
	}
	out := make([]int, len(area))
	s0 := float32(m.CanonicalScale)
	eps := float32(m.Eps)
	for i, a := range area {
		s := float32(math.Sqrt(float64(a)))
		l2 := float32(math.Log2(float64(s / s0)))
		t := float32(float32(float32(m.CanonicalLevel)+l2) + eps)
		t = float32(math.Floor(float64(t)))
		t = clampf(t, float32(m.KMin), float32(m.KMax))
		// float -> int64 of NaN is undefined in C++; map it to the lowest level.
		if t != t {
			t = float32(m.KMin)
		}
		out[i] = int(t) - m.KMin
	}
	return out, nil
}

// MultiScaleRoIAlign is torchvision.ops.MultiScaleRoIAlign for one image
// (the feature maps named in featmap_names, finest first; Mask R-CNN uses
// '0'..'3', not 'pool').
type MultiScaleRoIAlign struct {
	OutputSize    int  // 7 (box head) or 14 (mask head)
	SamplingRatio int  // 2 (torchvision); <= 0: adaptive (mmdetection)
	Aligned       bool // half-pixel offset (mmdetection's aligned=True)
	// Strides fixes each level's spatial scale at 1/stride (mmdetection's
	// featmap_strides, detectron2's ROIPooler); nil infers it as
	// torchvision does, 2^round(log2(feature height / image height)),
	// which is wrong for images padded far beyond their size (a square pad).
	Strides        []int
	CanonicalScale int // 224
	CanonicalLevel int // 4
}

// BoxRoIPool and MaskRoIPool are torchvision MaskRCNN's poolers.
var (
	BoxRoIPool  = MultiScaleRoIAlign{OutputSize: 7, SamplingRatio: 2, CanonicalScale: 224, CanonicalLevel: 4}
	MaskRoIPool = MultiScaleRoIAlign{OutputSize: 14, SamplingRatio: 2, CanonicalScale: 224, CanonicalLevel: 4}
)

// Scales returns the spatial scale of each level and the level mapper, as
// poolers._setup_scales for an image of (resized, unpadded) size imageH×imageW.
func (m MultiScaleRoIAlign) Scales(features []FeatureMap, imageH, imageW int) ([]float32, LevelMapper, error) {
	if len(features) == 0 {
		return nil, LevelMapper{}, fmt.Errorf("detection: multiscale roi_align: no feature maps")
	}
	if imageH <= 0 || imageW <= 0 {
		return nil, LevelMapper{}, fmt.Errorf("detection: multiscale roi_align: image size %dx%d", imageH, imageW)
	}
	if m.Strides != nil && len(m.Strides) != len(features) {
		return nil, LevelMapper{}, fmt.Errorf("detection: multiscale roi_align: %d strides for %d levels", len(m.Strides), len(features))
	}
	scales := make([]float32, len(features))
	for i, f := range features {
		if f.H <= 0 {
			return nil, LevelMapper{}, fmt.Errorf("detection: multiscale roi_align: level %d has height %d", i, f.H)
		}
		if m.Strides != nil {
			scales[i] = 1 / float32(m.Strides[i])
		} else {
			scales[i] = float32(InferScale(f.H, imageH))
		}
	}
	lmin := -math.Log2(float64(scales[0]))
	lmax := -math.Log2(float64(scales[len(scales)-1]))
	eps := 1e-6
	return scales, LevelMapper{KMin: int(lmin), KMax: int(lmax), CanonicalScale: m.CanonicalScale, CanonicalLevel: m.CanonicalLevel, Eps: eps}, nil
}

// Apply pools boxes (n×4, image coordinates) from the level chosen by the
// level mapper; the result is n×C×OutputSize×OutputSize. All levels must
// have the same channel count.
func (m MultiScaleRoIAlign) Apply(features []FeatureMap, boxes []float32, imageH, imageW int) ([]float32, error) {
	return m.apply(features, boxes, imageH, imageW, func(n int) []float32 { return make([]float32, n) })
}

// applyScratch is Apply into an nn scratch buffer, which the caller returns
// with nn.PutScratch (the pooled RoIs are the pipeline's second-largest
// transient buffer).
func (m MultiScaleRoIAlign) applyScratch(features []FeatureMap, boxes []float32, imageH, imageW int) (*[]float32, error) {
	var buf *[]float32
	out, err := m.apply(features, boxes, imageH, imageW, func(n int) []float32 {
		buf = nn.GetScratch(n)
		clear(*buf) // levels outside the pyramid leave rows zero
		return *buf
	})
	if err != nil {
		if buf != nil {
			nn.PutScratch(buf)
		}
		return nil, err
	}
	if buf == nil {
		return &out, nil
	}
	return buf, nil
}

func (m MultiScaleRoIAlign) apply(features []FeatureMap, boxes []float32, imageH, imageW int, alloc func(int) []float32) ([]float32, error) {
	n, err := checkBoxes("boxes", boxes)
	if err != nil {
		return nil, err
	}
	scales, mapper, err := m.Scales(features, imageH, imageW)
	if err != nil {
		return nil, err
	}
	c := features[0].C
	for i, f := range features {
		if err := f.check(); err != nil {
			return nil, fmt.Errorf("detection: multiscale roi_align level %d: %w", i, err)
		}
		if f.C != c {
			return nil, fmt.Errorf("detection: multiscale roi_align: level %d has %d channels, level 0 has %d", i, f.C, c)
		}
	}
	per := c * m.OutputSize * m.OutputSize
	out := alloc(n * per)
	if n == 0 {
		return out, nil
	}
	var levels []int
	if len(features) == 1 {
		levels = make([]int, n)
	} else if levels, err = mapper.Levels(boxes); err != nil {
		return nil, err
	}
	hwc := make([][]float32, len(features))
	for _, l := range levels {
		if l >= 0 && l < len(features) && hwc[l] == nil {
			hwc[l] = features[l].channelLast()
		}
	}
	// RoIs are independent: split them across backend.Threads() goroutines
	// (each RoI's arithmetic is unchanged).
	nn.ParallelFor(n, 8, func(lo, hi int) {
		var ws roiScratch
		for r := lo; r < hi; r++ {
			l := levels[r]
			if l < 0 || l >= len(features) {
				// torchvision leaves such rows zero (no level selects them).
				continue
			}
			p := RoIAlignParams{PooledH: m.OutputSize, PooledW: m.OutputSize, SpatialScale: scales[l], SamplingRatio: m.SamplingRatio, Aligned: m.Aligned}
			roiAlignOne(out[r*per:(r+1)*per], features[l], hwc[l], boxes[4*r:4*r+4], p, &ws)
		}
	})
	return out, nil
}
