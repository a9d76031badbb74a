package maskrcnn

import (
	"errors"
	"fmt"
	"image"
	"time"

	"github.com/flbq/flbq/runtime/cocomask"
	"github.com/flbq/flbq/runtime/detection"
	"github.com/flbq/flbq/runtime/imageio"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/tensor"
)

// DefaultMaxPixels is the largest image (width×height) a Detector accepts
// unless Options.MaxPixels says otherwise: imageio's decoding limit, 10⁸
// pixels. Detection itself works on the resized image (min_size/max_size),
// so the limit only bounds the memory of the input and of the pasted masks.
const DefaultMaxPixels = imageio.MaxPixels

// Options adjust a Detector's post-processing.
type Options struct {
	// ScoreThresh keeps detections with score > ScoreThresh (torchvision's
	// box_score_thresh, applied before the per-class NMS). Negative: the
	// model's value (0.05 unless its config says otherwise).
	ScoreThresh float64
	// DetectionsPerImage caps the detections per image (box_detections_per_img).
	// Zero or negative: the model's value (100).
	DetectionsPerImage int
	// MaxPixels refuses larger images (width×height); <= 0: DefaultMaxPixels.
	MaxPixels int64
	// NoMasks skips the mask branch (Detection.Mask is nil).
	NoMasks bool
}

// Detector is a loaded Mask R-CNN: backbone and pyramid (runtime/model),
// heads, GeneralizedRCNNTransform preprocessing and torchvision's eval-mode
// post-processing. It is safe for concurrent use; every call allocates its
// own buffers, and each call uses all cores (backend.SetThreads).
type Detector struct {
	Model    *model.Model
	Heads    *Heads
	Settings *Settings
	cfg      detection.Config // the model's configuration
	opts     Options
}

// Load reads a Mask R-CNN from a safetensors file (torchvision state_dict
// names, "flbq.config" metadata with task "detection").
func Load(path string) (*Detector, error) {
	m, err := model.Load(path)
	if err != nil {
		return nil, err
	}
	d, err := New(m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// New builds a detector from a loaded detection model whose Weights hold
// the rpn.* and roi_heads.* tensors. Tensors nobody uses are an error.
func New(m *model.Model) (*Detector, error) {
	c := m.Config
	if c.Task != "detection" || m.Backbone == nil || m.Pyramid == nil {
		return nil, fmt.Errorf("model is not a detector (task %q)", c.Task)
	}
	if c.NumClasses < 2 {
		return nil, fmt.Errorf("flbq.config: num_classes %d: a Mask R-CNN needs background + at least one class", c.NumClasses)
	}
	s, err := ParseSettings(c)
	if err != nil {
		return nil, err
	}
	cfg, err := s.DetectionConfig(c.NumClasses)
	if err != nil {
		return nil, err
	}
	heads, err := LoadHeads(m.Weights, m.Pyramid.OutChannels(), cfg.Anchors.NumAnchorsPerLocation()[0], c.NumClasses, cfg.BoxPool.OutputSize)
	if err != nil {
		return nil, err
	}
	if err := m.Weights.CheckUnused(""); err != nil {
		return nil, err
	}
	if heads.MaskHead == nil {
		cfg.NoMasks = true
	} else if out := heads.MaskHead.Logits.OutC; out != c.NumClasses {
		return nil, fmt.Errorf("mask predictor has %d classes, num_classes is %d", out, c.NumClasses)
	}
	cfg.CropMasks = true
	return &Detector{Model: m, Heads: heads, Settings: s, cfg: cfg, opts: Options{ScoreThresh: -1}}, nil
}

// WithOptions returns a detector sharing d's weights with other
// post-processing options; both stay usable concurrently.
func (d *Detector) WithOptions(o Options) *Detector {
	c := *d
	c.opts = o
	return &c
}

// Options returns the detector's options.
func (d *Detector) Options() Options { return d.opts }

// Config returns the effective detection configuration (options applied).
func (d *Detector) Config() detection.Config {
	cfg := d.cfg
	if d.opts.ScoreThresh >= 0 {
		cfg.RoI.ScoreThresh = d.opts.ScoreThresh
	}
	if d.opts.DetectionsPerImage > 0 {
		cfg.RoI.DetectionsPerImg = d.opts.DetectionsPerImage
	}
	if d.opts.NoMasks {
		cfg.NoMasks = true
	}
	return cfg
}

// NumClasses is K, background included.
func (d *Detector) NumClasses() int { return d.Model.Config.NumClasses }

// ClassName returns the configured name of a label ("" when the config has
// no categories), e.g. "person" for COCO label 1.
func (d *Detector) ClassName(label int) string {
	if c := d.Model.Config.Categories; label >= 0 && label < len(c) {
		return c[label]
	}
	return ""
}

// CategoryID returns the COCO category id of a label (config key
// category_ids; the label itself by default).
func (d *Detector) CategoryID(label int) int64 {
	if ids := d.Settings.CategoryIDs; label >= 0 && label < len(ids) {
		return ids[label]
	}
	return int64(label)
}

// Detection is one detected instance.
type Detection struct {
	Box        [4]float32 // x1, y1, x2, y2 in original-image pixels
	Label      int        // 1..K-1
	ClassName  string     // from the config's categories ("" if none)
	CategoryID int64      // COCO category id
	Score      float32
	Mask       *Mask // nil when masks are off
}

// Mask is a binary instance mask of an H×W image, stored cropped to Rect
// (every pixel outside it is 0).
type Mask struct {
	H, W int
	Rect image.Rectangle
	Pix  []uint8 // Rect.Dy() rows of Rect.Dx() values, 1 = foreground
}

// At reports whether pixel (x, y) belongs to the instance.
func (m *Mask) At(x, y int) bool {
	if !(image.Point{x, y}).In(m.Rect) {
		return false
	}
	return m.Pix[(y-m.Rect.Min.Y)*m.Rect.Dx()+x-m.Rect.Min.X] != 0
}

// Area counts the foreground pixels.
func (m *Mask) Area() int {
	n := 0
	for _, v := range m.Pix {
		n += int(v)
	}
	return n
}

// Full returns the H×W row-major mask (1 = foreground).
func (m *Mask) Full() []uint8 {
	out := make([]uint8, m.H*m.W)
	w := m.Rect.Dx()
	for y := m.Rect.Min.Y; y < m.Rect.Max.Y; y++ {
		copy(out[y*m.W+m.Rect.Min.X:y*m.W+m.Rect.Max.X], m.Pix[(y-m.Rect.Min.Y)*w:(y-m.Rect.Min.Y+1)*w])
	}
	return out
}

// RLE encodes the mask as COCO run-lengths (column-major), without
// building the full image.
func (m *Mask) RLE() cocomask.RLE {
	r := cocomask.RLE{H: m.H, W: m.W}
	var cur uint8
	var run uint32
	push := func(v uint8, n int) {
		if n == 0 {
			return
		}
		if v != cur {
			r.Counts = append(r.Counts, run)
			run, cur = 0, v
		}
		run += uint32(n)
	}
	w := m.Rect.Dx()
	for x := 0; x < m.W; x++ {
		if x < m.Rect.Min.X || x >= m.Rect.Max.X {
			push(0, m.H)
			continue
		}
		push(0, m.Rect.Min.Y)
		for y := m.Rect.Min.Y; y < m.Rect.Max.Y; y++ {
			push(m.Pix[(y-m.Rect.Min.Y)*w+x-m.Rect.Min.X], 1)
		}
		push(0, m.H-m.Rect.Max.Y)
	}
	r.Counts = append(r.Counts, run)
	return r
}

// Timings is the wall time of each stage of one Detect call.
type Timings struct {
	Preprocess, Backbone, Pyramid, RPN, RoIHeads, Masks time.Duration
}

// Total is the sum of the stages.
func (t Timings) Total() time.Duration {
	return t.Preprocess + t.Backbone + t.Pyramid + t.RPN + t.RoIHeads + t.Masks
}

// Output is everything one image produced.
type Output struct {
	Detections []Detection
	// Proposals are the RPN's boxes in resized-image coordinates
	// (x1, y1, x2, y2), best first, with their objectness probabilities.
	Proposals      [][4]float32
	ProposalScores []float32
	Geometry       detection.ImageGeometry
	Timings        Timings
}

// Detect runs the detector on an image of any type (gray, paletted, CMYK
// and 16-bit images are converted to 8-bit RGB as PIL's convert("RGB")).
func (d *Detector) Detect(img image.Image) ([]Detection, error) {
	if img == nil {
		return nil, errors.New("maskrcnn: nil image")
	}
	if err := d.checkSize(img.Bounds().Dx(), img.Bounds().Dy()); err != nil {
		return nil, err
	}
	out, err := d.DetectRGB(imageio.FromImage(img))
	if err != nil {
		return nil, err
	}
	return out.Detections, nil
}

// DetectFile decodes a JPEG or PNG file and runs the detector on it.
func (d *Detector) DetectFile(path string) ([]Detection, error) {
	img, err := imageio.Load(path)
	if err != nil {
		return nil, err
	}
	out, err := d.DetectRGB(img)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out.Detections, nil
}

func (d *Detector) checkSize(w, h int) error {
	if w <= 0 || h <= 0 {
		return fmt.Errorf("maskrcnn: empty image (%dx%d)", w, h)
	}
	limit := d.opts.MaxPixels
	if limit <= 0 {
		limit = DefaultMaxPixels
	}
	if int64(w)*int64(h) > limit {
		return fmt.Errorf("maskrcnn: image %dx%d exceeds the %d-pixel limit", w, h, limit)
	}
	return nil
}

// DetectRGB runs the detector on a decoded image and returns detections,
// proposals and per-stage timings.
func (d *Detector) DetectRGB(img *imageio.RGB) (*Output, error) {
	if img == nil {
		return nil, errors.New("maskrcnn: nil image")
	}
	if err := d.checkSize(img.W, img.H); err != nil {
		return nil, err
	}
	if len(img.Pix) != 3*img.W*img.H {
		return nil, fmt.Errorf("maskrcnn: image %dx%d has %d values, want %d", img.W, img.H, len(img.Pix), 3*img.W*img.H)
	}
	tf := d.Model.Config.Transform()
	if rh, rw := tf.Size(img.H, img.W); rh < 1 || rw < 1 {
		return nil, fmt.Errorf("maskrcnn: image %dx%d is too elongated: it resizes to %dx%d", img.W, img.H, rw, rh)
	}
	t0 := time.Now()
	in := tf.Apply(img)
	out, err := d.DetectInput(in)
	if err != nil {
		return nil, err
	}
	out.Timings.Preprocess = time.Since(t0) - out.Timings.Total()
	return out, nil
}

// DetectInput runs the detector on an already preprocessed image (e.g. one
// a reference framework prepared): in.Batch is the padded 1×3×Hp×Wp
// tensor, in.Height×in.Width the resized image inside it and
// in.OrigHeight×in.OrigWidth the size detections are mapped back to.
func (d *Detector) DetectInput(in *imageio.DetectionInput) (*Output, error) {
	if in == nil || in.Batch == nil || len(in.Batch.Shape) != 4 || in.Batch.Shape[0] != 1 || in.Batch.Shape[1] != 3 {
		return nil, errors.New("maskrcnn: input is not a 1×3×H×W batch")
	}
	if hp, wp := in.Batch.Shape[2], in.Batch.Shape[3]; hp%imageio.SizeDivisible != 0 || wp%imageio.SizeDivisible != 0 || in.Height < 1 || in.Width < 1 || in.Height > hp || in.Width > wp {
		return nil, fmt.Errorf("maskrcnn: input batch %dx%d does not hold a %dx%d image padded to a multiple of %d", hp, wp, in.Height, in.Width, imageio.SizeDivisible)
	}
	if err := d.checkSize(in.OrigWidth, in.OrigHeight); err != nil {
		return nil, err
	}
	var tm Timings
	t1 := time.Now()
	bb := d.Model.Backbone.Forward(in.Batch, nil)
	t2 := time.Now()
	tm.Backbone = t2.Sub(t1)
	pyr := d.Model.Pyramid.ForwardNHWC(bb)
	t3 := time.Now()
	tm.Pyramid = t3.Sub(t2)
	feats := make([]detection.FeatureMap, len(pyr))
	for i, p := range pyr {
		feats[i] = featureMap(p)
	}
	geo := detection.ImageGeometry{ResizedH: in.Height, ResizedW: in.Width, PaddedH: in.Batch.Shape[2], PaddedW: in.Batch.Shape[3], OrigH: in.OrigHeight, OrigW: in.OrigWidth}
	cfg := d.Config()
	last, stage := t3, detection.StageRPN
	cfg.Trace = func(s detection.Stage) {
		now := time.Now()
		if s != detection.StageRPN {
			dt := now.Sub(last)
			switch stage {
			case detection.StageRPN:
				tm.RPN += dt
			case detection.StageRoIHeads:
				tm.RoIHeads += dt
			case detection.StageMasks:
				tm.Masks += dt
			}
		}
		last, stage = now, s
	}
	res, err := detection.Run(feats, geo, d.Heads, cfg)
	if err != nil {
		return nil, err
	}
	out := &Output{Geometry: geo, ProposalScores: res.ProposalScores, Timings: tm}
	out.Proposals = make([][4]float32, len(res.ProposalScores))
	for i := range out.Proposals {
		copy(out.Proposals[i][:], res.Proposals[4*i:4*i+4])
	}
	out.Detections = make([]Detection, res.Len())
	for i := range out.Detections {
		det := &out.Detections[i]
		copy(det.Box[:], res.Boxes[4*i:4*i+4])
		det.Label = res.Labels[i]
		det.ClassName = d.ClassName(det.Label)
		det.CategoryID = d.CategoryID(det.Label)
		det.Score = res.Scores[i]
		if res.MaskCrops != nil {
			c := res.MaskCrops[i]
			r := image.Rect(c.X0, c.Y0, c.X1, c.Y1)
			pix := c.Pix
			if r.Empty() {
				r, pix = image.Rectangle{}, nil
			}
			det.Mask = &Mask{H: in.OrigHeight, W: in.OrigWidth, Rect: r, Pix: pix}
		}
	}
	return out, nil
}

// featureMap views image 0 of a channels-last pyramid level as a
// detection.FeatureMap.
func featureMap(t *tensor.Tensor) detection.FeatureMap {
	h, w, c := t.Shape[1], t.Shape[2], t.Shape[3]
	return detection.FeatureMap{C: c, H: h, W: w, Data: t.Data[:c*h*w], ChannelsLast: true}
}
