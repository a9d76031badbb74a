package maskrcnn

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/flbq/flbq/runtime/cocomask"
	"github.com/flbq/flbq/runtime/imageio"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/runtime/tensor"
)

func loadTestImage(t testing.TB, name string) image.Image {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "images", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, _, err := image.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// Concurrent Detect calls on one Detector give the sequential results.
func TestConcurrentDetect(t *testing.T) {
	d := loadDetector(t, "vit_maskrcnn")
	imgs := []image.Image{loadTestImage(t, "shapes.png"), loadTestImage(t, "gray.png")}
	want := make([][]Detection, len(imgs))
	for i, img := range imgs {
		var err error
		if want[i], err = d.Detect(img); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := 0; g < 6; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			i := g % len(imgs)
			got, err := d.Detect(imgs[i])
			if err != nil {
				errs <- err.Error()
				return
			}
			if len(got) != len(want[i]) {
				errs <- "detection count differs"
				return
			}
			for k := range got {
				if got[k].Box != want[i][k].Box || got[k].Score != want[i][k].Score || !bytes.Equal(got[k].Mask.Pix, want[i][k].Mask.Pix) {
					errs <- "detections differ between concurrent and sequential calls"
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// Options: the score threshold and cap change the output as torchvision's
// box_score_thresh / box_detections_per_img would; NoMasks drops masks.
func TestOptions(t *testing.T) {
	base := loadDetector(t, "swin_maskrcnn")
	img := loadTestImage(t, "photo.png")
	all, err := base.Detect(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) < 10 {
		t.Fatalf("only %d detections", len(all))
	}
	th := all[len(all)/2].Score
	d := base.WithOptions(Options{ScoreThresh: float64(th), DetectionsPerImage: 100})
	got, err := d.Detect(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range got {
		if x.Score <= th {
			t.Errorf("score %v <= threshold %v", x.Score, th)
		}
	}
	if len(got) == 0 || len(got) >= len(all) || got[0].Score != all[0].Score {
		t.Errorf("threshold %v: %d detections of %d", th, len(got), len(all))
	}
	capped, err := base.WithOptions(Options{ScoreThresh: -1, DetectionsPerImage: 3, NoMasks: true}).Detect(img)
	if err != nil {
		t.Fatal(err)
	}
	if len(capped) != 3 || capped[2].Box != all[2].Box || capped[0].Mask != nil {
		t.Errorf("cap 3 without masks: %d detections, mask %v", len(capped), capped[0].Mask)
	}
	if base.Options().ScoreThresh != -1 {
		t.Error("WithOptions changed the original")
	}
	for _, x := range all {
		if x.ClassName != CATS[x.Label] || x.CategoryID != int64(x.Label) {
			t.Errorf("label %d: class %q, category %d", x.Label, x.ClassName, x.CategoryID)
		}
	}
}

var CATS = []string{"__background__", "circle", "square", "triangle", "blob"}

// Gray, paletted, CMYK and 16-bit images are converted like PIL's
// convert("RGB"): a 16-bit copy of an 8-bit image detects the same.
func TestImageKinds(t *testing.T) {
	d := loadDetector(t, "vit_maskrcnn")
	src := loadTestImage(t, "shapes.png")
	want, err := d.Detect(src)
	if err != nil {
		t.Fatal(err)
	}
	b := src.Bounds()
	rgba64 := image.NewRGBA64(b)
	gray16 := image.NewGray16(b)
	cmyk := image.NewCMYK(b)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			c := color.NRGBAModel.Convert(src.At(x, y)).(color.NRGBA)
			rgba64.Set(x, y, color.RGBA64{uint16(c.R) * 257, uint16(c.G) * 257, uint16(c.B) * 257, 0xffff})
			gray16.Set(x, y, color.Gray16{uint16(c.G) * 257})
			cmyk.Set(x, y, c)
		}
	}
	got, err := d.Detect(rgba64)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || got[0].Box != want[0].Box {
		t.Errorf("16-bit RGBA: %d detections, want %d identical to 8-bit", len(got), len(want))
	}
	for _, img := range []image.Image{gray16, cmyk} {
		got, err := d.Detect(img)
		if err != nil || len(got) == 0 {
			t.Errorf("%T: %d detections, %v", img, len(got), err)
		}
	}
}

func TestBadImages(t *testing.T) {
	d := loadDetector(t, "vit_maskrcnn")
	if _, err := d.Detect(image.NewRGBA(image.Rect(0, 0, 0, 10))); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("zero-width image: %v", err)
	}
	if _, err := d.Detect(nil); err == nil {
		t.Error("nil image: no error")
	}
	small := d.WithOptions(Options{ScoreThresh: -1, MaxPixels: 1000})
	if _, err := small.Detect(image.NewRGBA(image.Rect(0, 0, 40, 40))); err == nil || !strings.Contains(err.Error(), "1000-pixel limit") {
		t.Errorf("over the limit: %v", err)
	}
	// A huge image is refused from its bounds, before any pixel is read.
	if _, err := d.Detect(hugeImage{}); err == nil || !strings.Contains(err.Error(), "pixel limit") {
		t.Errorf("huge image: %v", err)
	}
	if _, err := d.Detect(image.NewRGBA(image.Rect(0, 0, 100000, 1))); err == nil || !strings.Contains(err.Error(), "elongated") {
		t.Errorf("100000x1 image: %v", err)
	}
	if _, err := d.DetectFile(filepath.Join("testdata", "goldens.json")); err == nil {
		t.Error("not an image: no error")
	}
	if _, err := d.DetectRGB(&imageio.RGB{W: 2, H: 2, Pix: make([]uint8, 5)}); err == nil {
		t.Error("short RGB buffer: no error")
	}
	// A flat image may have no detections: a valid empty result.
	dets, err := d.WithOptions(Options{ScoreThresh: 0.9999}).Detect(image.NewGray(image.Rect(0, 0, 64, 48)))
	if err != nil || dets == nil || len(dets) != 0 {
		t.Errorf("no detections: %v, %v", dets, err)
	}
}

type hugeImage struct{}

func (hugeImage) ColorModel() color.Model { return color.RGBAModel }
func (hugeImage) Bounds() image.Rectangle { return image.Rect(0, 0, 200000, 100000) }
func (hugeImage) At(x, y int) color.Color { panic("pixels of a refused image were read") }

// Mask.RLE, Full and At agree with cocomask on random crops.
func TestMaskRLE(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for it := 0; it < 200; it++ {
		h, w := 1+rng.Intn(12), 1+rng.Intn(12)
		x0, y0 := rng.Intn(w+1), rng.Intn(h+1)
		x1, y1 := x0+rng.Intn(w-x0+1), y0+rng.Intn(h-y0+1)
		m := &Mask{H: h, W: w, Rect: image.Rect(x0, y0, x1, y1)}
		m.Pix = make([]uint8, m.Rect.Dx()*m.Rect.Dy())
		for i := range m.Pix {
			m.Pix[i] = uint8(rng.Intn(2))
		}
		full := m.Full()
		want := cocomask.Encode(full, h, w)
		got := m.RLE()
		if got.String() != want.String() || got.Validate() != nil {
			t.Fatalf("%dx%d rect %v: RLE %v, want %v", h, w, m.Rect, got.Counts, want.Counts)
		}
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				if m.At(x, y) != (full[y*w+x] == 1) {
					t.Fatalf("At(%d,%d)", x, y)
				}
			}
		}
		if m.Area() != int(want.Area()) {
			t.Fatalf("area %d, want %d", m.Area(), want.Area())
		}
	}
}

// fileTensors returns a fixture's tensors and metadata for editing.
func fileTensors(t *testing.T, name string) ([]safetensors.Tensor, map[string]string) {
	t.Helper()
	f, err := safetensors.Open(filepath.Join("testdata", name+".safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	var ts []safetensors.Tensor
	for _, n := range f.Names() {
		info, _ := f.Info(n)
		if info.DType.IsFloat() {
			d, shape, err := f.Float32(n)
			if err != nil {
				t.Fatal(err)
			}
			ts = append(ts, safetensors.Tensor{Name: n, Shape: shape, F32: d})
		} else {
			d, shape, err := f.Int64(n)
			if err != nil {
				t.Fatal(err)
			}
			ts = append(ts, safetensors.Tensor{Name: n, DType: safetensors.I64, Shape: shape, I64: d})
		}
	}
	md := map[string]string{}
	for k, v := range f.Metadata {
		md[k] = v
	}
	return ts, md
}

func newFrom(t *testing.T, ts []safetensors.Tensor, md map[string]string) (*Detector, error) {
	t.Helper()
	var b bytes.Buffer
	if err := safetensors.Encode(&b, ts, md); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Parse(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.FromFile(f)
	if err != nil {
		return nil, err
	}
	return New(m)
}

// Every head tensor is validated with an error that names it.
func TestLoadErrors(t *testing.T) {
	drop := func(name string) func([]safetensors.Tensor) []safetensors.Tensor {
		return func(ts []safetensors.Tensor) []safetensors.Tensor {
			var out []safetensors.Tensor
			for _, x := range ts {
				if x.Name != name {
					out = append(out, x)
				}
			}
			return out
		}
	}
	reshape := func(name string) func([]safetensors.Tensor) []safetensors.Tensor {
		return func(ts []safetensors.Tensor) []safetensors.Tensor {
			for i := range ts {
				if ts[i].Name == name {
					ts[i].Shape = append([]int{1}, ts[i].Shape...)
				}
			}
			return ts
		}
	}
	add := func(ts []safetensors.Tensor) []safetensors.Tensor {
		return append(ts, safetensors.Tensor{Name: "roi_heads.extra.weight", Shape: []int{2}, F32: []float32{1, 2}})
	}
	cfg := func(edit string) func(map[string]string) {
		return func(md map[string]string) {
			var m, e map[string]json.RawMessage
			if err := json.Unmarshal([]byte(md[safetensors.ConfigKey]), &m); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal([]byte("{"+edit+"}"), &e); err != nil {
				t.Fatal(err)
			}
			for k, v := range e {
				m[k] = v
			}
			b, _ := json.Marshal(m)
			md[safetensors.ConfigKey] = string(b)
		}
	}
	cases := []struct {
		name string
		ts   func([]safetensors.Tensor) []safetensors.Tensor
		md   func(map[string]string)
		want string
	}{
		{"missing rpn conv", drop("rpn.head.conv.0.0.weight"), nil, `"rpn.head.conv.0.0.weight": missing`},
		{"missing cls_logits bias", drop("rpn.head.cls_logits.bias"), nil, `"rpn.head.cls_logits.bias": missing`},
		{"missing fc6", drop("roi_heads.box_head.fc6.weight"), nil, `"roi_heads.box_head.fc6.weight": missing`},
		{"missing fc7 bias", drop("roi_heads.box_head.fc7.bias"), nil, `"roi_heads.box_head.fc7.bias"`},
		{"missing bbox_pred", drop("roi_heads.box_predictor.bbox_pred.weight"), nil, `"roi_heads.box_predictor.bbox_pred.weight"`},
		{"missing mask logits", drop("roi_heads.mask_predictor.mask_fcn_logits.weight"), nil, `"roi_heads.mask_predictor.mask_fcn_logits.weight"`},
		{"missing conv5", drop("roi_heads.mask_predictor.conv5_mask.weight"), nil, `"roi_heads.mask_predictor.conv5_mask.weight"`},
		{"bad cls_score shape", reshape("roi_heads.box_predictor.cls_score.weight"), nil, `"roi_heads.box_predictor.cls_score.weight": shape`},
		{"bad mask conv shape", reshape("roi_heads.mask_head.1.0.weight"), nil, `"roi_heads.mask_head.1.0.weight"`},
		{"unexpected tensor", add, nil, `"roi_heads.extra.weight": unexpected`},
		{"num_classes mismatch", nil, cfg(`"num_classes":7,"categories":null`), `"roi_heads.box_predictor.cls_score.weight": shape`},
		{"bad threshold", nil, cfg(`"box_nms_thresh":2`), "box_nms_thresh"},
		{"bad anchors", nil, cfg(`"anchor_sizes":[[32],[64]]`), "anchor_sizes"},
		{"wrong anchor count", nil, cfg(`"aspect_ratios":[[1],[1],[1],[1],[1]]`), `"rpn.head.cls_logits.weight": shape`},
		{"bad category ids", nil, cfg(`"category_ids":[1,2]`), "category_ids"},
		{"bad settings type", nil, cfg(`"rpn_pre_nms_top_n_test":"many"`), "rpn_pre_nms_top_n_test"},
	}
	for _, c := range cases {
		ts, md := fileTensors(t, "vit_maskrcnn")
		if c.ts != nil {
			ts = c.ts(ts)
		}
		if c.md != nil {
			c.md(md)
		}
		_, err := newFrom(t, ts, md)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
	// Without the mask branch the checkpoint is a Faster R-CNN.
	ts, md := fileTensors(t, "vit_maskrcnn")
	var fr []safetensors.Tensor
	for _, x := range ts {
		if !strings.HasPrefix(x.Name, "roi_heads.mask_") {
			fr = append(fr, x)
		}
	}
	d, err := newFrom(t, fr, md)
	if err != nil {
		t.Fatal(err)
	}
	dets, err := d.Detect(loadTestImage(t, "shapes.png"))
	if err != nil || len(dets) == 0 || dets[0].Mask != nil {
		t.Errorf("faster r-cnn: %d detections, %v", len(dets), err)
	}
	// Legacy names (torchvision < 0.13) load too.
	ts, md = fileTensors(t, "vit_maskrcnn")
	for i := range ts {
		ts[i].Name = strings.Replace(ts[i].Name, "rpn.head.conv.0.0.", "rpn.head.conv.", 1)
		for k := 0; k < 4; k++ {
			ts[i].Name = strings.Replace(ts[i].Name, "mask_head."+string(rune('0'+k))+".0.", "mask_head.mask_fcn"+string(rune('1'+k))+".", 1)
		}
	}
	if d, err = newFrom(t, ts, md); err != nil {
		t.Fatal(err)
	}
	legacy, err := d.Detect(loadTestImage(t, "shapes.png"))
	want, _ := loadDetector(t, "vit_maskrcnn").Detect(loadTestImage(t, "shapes.png"))
	if err != nil || len(legacy) != len(want) || legacy[0].Box != want[0].Box {
		t.Errorf("legacy names: %d detections, %v", len(legacy), err)
	}
	if _, err := Load(filepath.Join("testdata", "missing.safetensors")); err == nil {
		t.Error("missing file: no error")
	}
}

// The channels-last mask head (Mask, MaskLabels) agrees with torch's
// layout computed by runtime/nn's Conv2d and ConvTranspose2d.
func TestMaskHeadMatchesCHW(t *testing.T) {
	d := loadDetector(t, "swin_maskrcnn")
	m := d.Heads.MaskHead
	n := 5
	rng := rand.New(rand.NewSource(2))
	pooled := make([]float32, n*m.InC*14*14)
	for i := range pooled {
		pooled[i] = float32(rng.NormFloat64())
	}
	// Reference: NCHW through the torch-layout modules.
	x := tensor.From(append([]float32(nil), pooled...), n, m.InC, 14, 14)
	for _, c := range m.Convs {
		x = c.Forward(x)
		nn.ReLU(x.Data)
	}
	x = m.Deconv.Forward(x)
	nn.ReLU(x.Data)
	ref := m.Logits.Forward(x).Data
	labels := []int{1, 4, 0, 2, 4}
	full, err := d.Heads.Mask(pooled, n)
	if err != nil {
		t.Fatal(err)
	}
	one, err := d.Heads.MaskLabels(pooled, n, labels)
	if err != nil {
		t.Fatal(err)
	}
	k, mm := d.NumClasses(), 28*28
	if len(full) != n*k*mm || len(one) != n*mm || len(ref) != len(full) {
		t.Fatalf("sizes %d, %d, %d", len(full), len(one), len(ref))
	}
	tol := 1e-5 * float64(tensor.MaxAbs(ref))
	if dd := float64(tensor.MaxAbsDiff(full, ref)); dd > tol {
		t.Errorf("Mask differs from the NCHW reference by %g (tol %g)", dd, tol)
	}
	for i, l := range labels {
		for p := 0; p < mm; p++ {
			a, b := one[i*mm+p], ref[(i*k+l)*mm+p]
			if dd := float64(a - b); dd > tol || dd < -tol {
				t.Fatalf("roi %d pixel %d: %v vs %v", i, p, a, b)
			}
		}
	}
	if _, err := d.Heads.MaskLabels(pooled, n, []int{1, 2, 3, 4, 5}); err == nil {
		t.Error("label out of range: no error")
	}
	if out, err := d.Heads.MaskLabels(nil, 0, nil); err != nil || len(out) != 0 {
		t.Errorf("no RoIs: %v, %v", out, err)
	}
	if _, err := d.Heads.Mask(pooled[:len(pooled)-1], n); err == nil {
		t.Error("short input: no error")
	}
}
