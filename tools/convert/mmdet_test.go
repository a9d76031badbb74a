package convert

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/flbq/flbq/runtime/cocomask"
	"github.com/flbq/flbq/runtime/imageio"
	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/runtime/tensor"
	"github.com/flbq/flbq/tools/torchckpt"
)

// The fixtures of tools/refgen/mmdet_fixtures.py: one random-weight small
// Swin Mask R-CNN saved in mmdetection's layout (legacy format) and in the
// official Swin repository's (zip, with optimizer state), and the outputs
// of a PyTorch reference that follows mmdetection 2.25's inference line by
// line (scaled-down test pipeline: img_scale (192, 128)), and with the
// official repository's mmdet 2.11 RPN size rule ("cases_2.11").
const mmdetDir = "testdata/mmdet"

var smallScale = []byte(`{"min_size": 128, "max_size": 192}`)

type mmdetCase struct {
	Image                 string
	Orig, Resized, Padded [2]int
	Proposals             []float32
	ProposalScores        []float32 `json:"proposal_scores"`
	Boxes, Scores         []float32
	Labels                []int
	Masks                 [][]uint32
}

// mmdetFixture returns the reference outputs of source from's framework
// (mmdetection 2.25, or 2.11 for swin-official) and the feature maps.
func mmdetFixture(t testing.TB, from Source) (map[string]mmdetCase, *safetensors.File) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(mmdetDir, "goldens.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		Cases    map[string]mmdetCase
		Cases211 map[string]mmdetCase `json:"cases_2.11"`
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if from == SwinOfficial {
		for n, c := range g.Cases {
			o := g.Cases211[n]
			c.Proposals, c.ProposalScores, c.Boxes, c.Scores, c.Labels, c.Masks = o.Proposals, o.ProposalScores, o.Boxes, o.Scores, o.Labels, o.Masks
			g.Cases[n] = c
		}
	}
	maps, err := safetensors.Open(filepath.Join(mmdetDir, "maps.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	return g.Cases, maps
}

func convertFile(t testing.TB, from Source, file string, cfg []byte) ([]byte, []string) {
	t.Helper()
	ck, err := torchckpt.Read(filepath.Join(mmdetDir, file))
	if err != nil {
		t.Fatal(err)
	}
	var warnings []string
	blob, err := Convert(ck, Options{From: from, Config: cfg, Origin: file, Warn: func(s string) { warnings = append(warnings, s) }})
	if err != nil {
		t.Fatal(err)
	}
	return blob, warnings
}

func detectorOf(t testing.TB, blob []byte) *maskrcnn.Detector {
	t.Helper()
	f, err := safetensors.Parse(blob)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.FromFile(f)
	if err != nil {
		t.Fatal(err)
	}
	d, err := maskrcnn.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

var mmdetSources = []struct {
	from Source
	file string
}{{MMDet, "mask_rcnn_swin_tiny_mmdet.pth"}, {SwinOfficial, "mask_rcnn_swin_tiny_official.pth"}}

// TestMMDetLayoutsAgree: the two layouts hold the same weights, so after
// the key maps (and the Unfold permutation for mmdetection) the model
// files must be identical but for the recorded source.
func TestMMDetLayoutsAgree(t *testing.T) {
	var files []*safetensors.File
	for _, s := range mmdetSources {
		blob, warns := convertFile(t, s.from, s.file, smallScale)
		if len(warns) != 0 {
			t.Errorf("%s: warnings %q for a COCO checkpoint", s.from, warns)
		}
		f, err := safetensors.Parse(blob)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	a, b := files[0], files[1]
	if len(a.Names()) != len(b.Names()) {
		t.Fatalf("%d and %d tensors", len(a.Names()), len(b.Names()))
	}
	for _, n := range a.Names() {
		ra, err1 := a.Raw(n)
		rb, err2 := b.Raw(n)
		if err1 != nil || err2 != nil || !bytes.Equal(ra, rb) {
			t.Errorf("tensor %q differs between the layouts (%v, %v)", n, err1, err2)
		}
	}
	m, err := model.ParseConfig([]byte(a.Metadata[safetensors.ConfigKey]))
	if err != nil {
		t.Fatal(err)
	}
	if m.NumClasses != 81 || len(m.Categories) != 81 || m.Categories[1] != "person" || m.Resize != "mmcv" || !m.ShiftSingleWindow {
		t.Errorf("config: %d classes, categories %v..., resize %q, shift_single_window %v", m.NumClasses, m.Categories[:2], m.Resize, m.ShiftSingleWindow)
	}
}

func tensorOf(t testing.TB, f *safetensors.File, name string) *tensor.Tensor {
	t.Helper()
	v, shape, err := f.Float32(name)
	if err != nil {
		t.Fatal(err)
	}
	return &tensor.Tensor{Shape: shape, Data: v}
}

func closeTo(t *testing.T, what string, got, want []float32, abs, rel float64) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	worst := 0.0
	bad := 0
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		worst = math.Max(worst, d)
		if !(d <= abs || d <= rel*math.Abs(float64(want[i]))) {
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values off (max |Δ| %.3g)", what, bad, len(want), worst)
	}
	return worst
}

// TestMMDetParity: both converted checkpoints against the mmdetection
// reference — preprocessing, backbone stages, FPN levels, proposals,
// detections and masks — on a 150×230 image and a 40×300 strip, whose
// stage-3 and stage-4 maps one window covers (the shift mmdetection keeps).
func TestMMDetParity(t *testing.T) {
	for _, s := range mmdetSources {
		cases, maps := mmdetFixture(t, s.from)
		blob, _ := convertFile(t, s.from, s.file, smallScale)
		d := detectorOf(t, blob)
		names := make([]string, 0, len(cases))
		for n := range cases {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, name := range names {
			c := cases[name]
			t.Run(fmt.Sprintf("%s/%s", s.from, name), func(t *testing.T) {
				img, err := imageio.Load(filepath.Join(mmdetDir, "images", c.Image))
				if err != nil {
					t.Fatal(err)
				}
				want := tensorOf(t, maps, name+".input")
				in := d.Model.Config.Transform().Apply(img)
				if fmt.Sprint(in.Batch.Shape) != fmt.Sprint(want.Shape) || [2]int{in.Height, in.Width} != c.Resized {
					t.Fatalf("input %v resized %dx%d, want %v resized %v", in.Batch.Shape, in.Height, in.Width, want.Shape, c.Resized)
				}
				dIn := closeTo(t, "input", in.Batch.Data, want.Data, 1e-5, 0)
				// The network on the reference's own input.
				ref := &imageio.DetectionInput{Batch: want, Height: c.Resized[0], Width: c.Resized[1], OrigHeight: c.Orig[0], OrigWidth: c.Orig[1]}
				stages := d.Model.Backbone.Forward(ref.Batch, nil)
				var dStage, dFPN float64
				for i, st := range stages {
					w := tensorOf(t, maps, fmt.Sprintf("%s.stage%d", name, i))
					dStage = math.Max(dStage, closeTo(t, fmt.Sprintf("stage %d", i), st.Data, w.Data, 1e-4, 1e-4))
				}
				for i, p := range d.Model.Pyramid.Forward(stages) {
					w := tensorOf(t, maps, fmt.Sprintf("%s.fpn%d", name, i))
					dFPN = math.Max(dFPN, closeTo(t, fmt.Sprintf("fpn %d", i), p.Data, w.Data, 1e-4, 1e-4))
				}
				out, err := d.DetectInput(ref)
				if err != nil {
					t.Fatal(err)
				}
				t.Logf("input max |Δ| %.2g, stages %.2g, fpn %.2g", dIn, dStage, dFPN)
				checkDetections(t, out, c)
				// And from the image file: the same detections.
				full, err := d.DetectRGB(img)
				if err != nil {
					t.Fatal(err)
				}
				checkDetections(t, full, c)
			})
		}
	}
}

// checkDetections compares with the reference: proposals in order, then
// detections in multiclass_nms's score order with mmdetection's 0-based
// labels (flbq's label - 1) and masks by IoU.
func checkDetections(t *testing.T, out *maskrcnn.Output, c mmdetCase) {
	t.Helper()
	var props []float32
	for _, p := range out.Proposals {
		props = append(props, p[:]...)
	}
	if len(props) != len(c.Proposals) {
		t.Fatalf("%d proposals, want %d", len(props)/4, len(c.Proposals)/4)
	}
	dp := closeTo(t, "proposals", props, c.Proposals, 1e-3, 1e-4)
	closeTo(t, "proposal scores", out.ProposalScores, c.ProposalScores, 1e-5, 0)
	if len(out.Detections) != len(c.Scores) {
		t.Fatalf("%d detections, want %d", len(out.Detections), len(c.Scores))
	}
	var boxes, scores []float32
	for i, det := range out.Detections {
		if det.Label-1 != c.Labels[i] {
			t.Fatalf("detection %d: label %d (mmdet %d), want mmdet %d", i, det.Label, det.Label-1, c.Labels[i])
		}
		boxes = append(boxes, det.Box[:]...)
		scores = append(scores, det.Score)
	}
	db := closeTo(t, "boxes", boxes, c.Boxes, 1e-3, 1e-4)
	closeTo(t, "scores", scores, c.Scores, 1e-4, 0)
	// Pixels whose probability lies within float rounding of the threshold
	// may flip: a mask passes with IoU >= 0.99 or at most 2 pixels off.
	minIoU, diff := 1.0, 0
	for i, det := range out.Detections {
		want := cocomask.RLE{H: c.Orig[0], W: c.Orig[1], Counts: c.Masks[i]}
		if err := want.Validate(); err != nil {
			t.Fatalf("golden mask %d: %v", i, err)
		}
		wm, gm := want.Decode(), det.Mask.Full()
		inter, uni, off := 0, 0, 0
		for p := range wm {
			a, b := wm[p] != 0, gm[p] != 0
			if a && b {
				inter++
			}
			if a || b {
				uni++
			}
			if a != b {
				off++
			}
		}
		iou := 1.0
		if uni > 0 {
			iou = float64(inter) / float64(uni)
		}
		if iou < 0.99 && off > 2 {
			t.Errorf("mask %d: IoU %.4f, %d pixels differ", i, iou, off)
		}
		minIoU, diff = math.Min(minIoU, iou), diff+off
	}
	t.Logf("%d proposals (max |Δ| %.2g px), %d detections (max |Δbox| %.2g px), masks min IoU %.4f, %d pixels differ",
		len(out.Proposals), dp, len(out.Detections), db, minIoU, diff)
}

// deviates reports whether out differs from the reference beyond the
// parity tolerances (detections, boxes, scores, labels or masks).
func deviates(out *maskrcnn.Output, c mmdetCase) bool {
	if len(out.Detections) != len(c.Scores) || len(out.Proposals)*4 != len(c.Proposals) {
		return true
	}
	for i, p := range out.Proposals {
		for k := range p {
			if math.Abs(float64(p[k]-c.Proposals[4*i+k])) > 1e-3+1e-4*math.Abs(float64(c.Proposals[4*i+k])) {
				return true
			}
		}
	}
	for i, det := range out.Detections {
		if det.Label-1 != c.Labels[i] || math.Abs(float64(det.Score-c.Scores[i])) > 1e-4 {
			return true
		}
		for k := 0; k < 4; k++ {
			if math.Abs(float64(det.Box[k]-c.Boxes[4*i+k])) > 1e-3+1e-4*math.Abs(float64(c.Boxes[4*i+k])) {
				return true
			}
		}
		want := cocomask.RLE{H: c.Orig[0], W: c.Orig[1], Counts: c.Masks[i]}.Decode()
		off := 0
		for p, v := range det.Mask.Full() {
			if (v != 0) != (want[p] != 0) {
				off++
			}
		}
		if off > 2 {
			return true
		}
	}
	return false
}

// TestMMDetSettingsMatter: each mmdetection setting the converter writes,
// put back to torchvision's behaviour, makes flbq miss the reference on
// the fixture images — so the parity test exercises it. The exception is
// anchor_strides: at this scale every padded size is a multiple of 64 on
// the extra level (or the map is one row high), so the derived strides
// equal the fixed ones; TestMMDetAnchors covers them. Three more are listed
// below.
func TestMMDetSettingsMatter(t *testing.T) {
	for _, c := range []struct {
		key, value string
		matters    bool
		from       Source
	}{
		{"rpn_min_size_strict", `true`, true, SwinOfficial}, // 2.11 keeps empty proposals
		{"resize", `"torchvision"`, true, ""},
		{"anchor_round", `true`, true, ""},
		{"anchor_strides", `null`, false, ""},
		{"roi_aligned", `false`, true, ""},
		{"roi_sampling_ratio", `2`, true, ""},
		{"mask_paste", `"torchvision"`, true, ""},
		{"shift_single_window", `false`, true, ""},
		{"rpn_min_size_strict", `false`, true, ""},
		// Not reached by this model (no delta beyond the clamp, no box side
		// in (0, 1e-2)), which these rows assert: runtime/detection's
		// mmdetection goldens and RemoveSmallBoxes' tests cover them.
		{"box_delta_clamp", `"upper"`, false, ""},
		{"box_min_size", `0.01`, false, ""},
		{"rpn_min_size", `0.001`, false, ""},
	} {
		ov := fmt.Sprintf(`{"min_size": 128, "max_size": 192, %q: %s}`, c.key, c.value)
		file := mmdetSources[0].file
		if c.from == SwinOfficial {
			file = mmdetSources[1].file
		} else {
			c.from = MMDet
		}
		cases, _ := mmdetFixture(t, c.from)
		blob, _ := convertFile(t, c.from, file, []byte(ov))
		d := detectorOf(t, blob)
		var off []string
		for name, cs := range cases {
			img, err := imageio.Load(filepath.Join(mmdetDir, "images", cs.Image))
			if err != nil {
				t.Fatal(err)
			}
			out, err := d.DetectRGB(img)
			if err != nil {
				t.Fatal(err)
			}
			if deviates(out, cs) {
				off = append(off, name)
			}
		}
		sort.Strings(off)
		t.Logf("%s %s = %s: differs from the reference on %v", c.from, c.key, c.value, off)
		if c.matters != (len(off) > 0) {
			t.Errorf("%s = %s: differs on %v; expected it to matter: %v", c.key, c.value, off, c.matters)
		}
	}
}

// TestMMDetRefuses: a damaged mmdetection checkpoint fails naming the key
// (the source's name, and flbq's for shapes checked at build).
func TestMMDetRefuses(t *testing.T) {
	read := func() *torchckpt.Checkpoint {
		ck, err := torchckpt.Read(filepath.Join(mmdetDir, mmdetSources[0].file))
		if err != nil {
			t.Fatal(err)
		}
		return ck
	}
	drop := func(name string) func(*torchckpt.Checkpoint) {
		return func(ck *torchckpt.Checkpoint) {
			for i, x := range ck.Tensors {
				if x.Name == name {
					ck.Tensors = append(ck.Tensors[:i], ck.Tensors[i+1:]...)
					return
				}
			}
			t.Fatalf("no tensor %q in the fixture", name)
		}
	}
	extra := func(from, to string) func(*torchckpt.Checkpoint) {
		return func(ck *torchckpt.Checkpoint) {
			for _, x := range ck.Tensors {
				if x.Name == from {
					c := *x
					c.Name = to
					ck.Tensors = append(ck.Tensors, &c)
					return
				}
			}
			t.Fatalf("no tensor %q in the fixture", from)
		}
	}
	for _, c := range []struct {
		name string
		edit func(*torchckpt.Checkpoint)
		want string
	}{
		{"missing norm", drop("backbone.stages.1.blocks.0.norm2.bias"), `missing key "backbone.stages.1.blocks.0.norm2.bias"`},
		{"missing neck", drop("neck.fpn_convs.2.conv.weight"), `missing key "neck.fpn_convs.2.conv.weight"`},
		{"missing block", func(ck *torchckpt.Checkpoint) {
			kept := ck.Tensors[:0]
			for _, x := range ck.Tensors {
				if !bytes.HasPrefix([]byte(x.Name), []byte("backbone.stages.2.blocks.0.")) {
					kept = append(kept, x)
				}
			}
			ck.Tensors = kept
		}, "backbone.stages.2.blocks.0.*"},
		{"extra key", extra("rpn_head.rpn_cls.bias", "rpn_head.rpn_cls.offset"), `unexpected key "rpn_head.rpn_cls.offset"`},
		{"cascade head", extra("roi_head.bbox_head.fc_reg.bias", "roi_head.bbox_head.1.fc_reg.bias"), `unexpected key "roi_head.bbox_head.1.fc_reg.bias"`},
		{"wrong shape", func(ck *torchckpt.Checkpoint) {
			for _, x := range ck.Tensors {
				if x.Name == "rpn_head.rpn_reg.weight" {
					x.Shape = []int{x.Shape[1], x.Shape[0], 1, 1}
				}
			}
		}, `checkpoint key "rpn_head.rpn_reg.weight"`},
		{"wrong reduction", func(ck *torchckpt.Checkpoint) {
			for _, x := range ck.Tensors {
				if x.Name == "backbone.stages.0.downsample.reduction.weight" {
					x.Shape = []int{x.Shape[0] * x.Shape[1]}
				}
			}
		}, `key "backbone.stages.0.downsample.reduction.weight"`},
		{"no classes", func(ck *torchckpt.Checkpoint) {
			for _, x := range ck.Tensors {
				if x.Name == "roi_head.bbox_head.fc_cls.weight" {
					x.Shape = []int{1, len(x.Raw) / 4}
				}
			}
		}, `key "roi_head.bbox_head.fc_cls.weight"`},
		{"integer weights", func(ck *torchckpt.Checkpoint) {
			for _, x := range ck.Tensors {
				if x.Name == "neck.lateral_convs.0.conv.bias" {
					x.DType = safetensors.I32
				}
			}
		}, `key "neck.lateral_convs.0.conv.bias": dtype`},
	} {
		ck := read()
		c.edit(ck)
		_, err := Convert(ck, Options{From: MMDet, Config: smallScale})
		if err == nil || !bytes.Contains([]byte(err.Error()), []byte(c.want)) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
	// The official layout's file is not an mmdetection one, and vice versa.
	ck, err := torchckpt.Read(filepath.Join(mmdetDir, mmdetSources[1].file))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Convert(ck, Options{From: MMDet}); err == nil || !bytes.Contains([]byte(err.Error()), []byte(`missing key "backbone.patch_embed.projection.weight"`)) {
		t.Errorf("official file as mmdet: %v", err)
	}
	if _, err := Convert(read(), Options{From: SwinOfficial}); err == nil || !bytes.Contains([]byte(err.Error()), []byte(`missing key "backbone.patch_embed.proj.weight"`)) {
		t.Errorf("mmdet file as official: %v", err)
	}
	// A config override that does not parse.
	if _, err := Convert(read(), Options{From: MMDet, Config: []byte("{")}); err == nil {
		t.Error("a broken --config was accepted")
	}
}

// FuzzConvertMMDet: the converter on checkpoints with a tensor dropped,
// duplicated under another stage or block index, reshaped, or retyped never
// panics and, when it succeeds, yields a model file that loads. (The
// reader's own fuzzing is torchckpt's FuzzDecode.)
func FuzzConvertMMDet(f *testing.F) {
	fuzzConvert(f, filepath.Join(mmdetDir, mmdetSources[0].file), MMDet, smallScale)
}

// FuzzConvertViTDet is FuzzConvertMMDet on detectron2's ViTDet.
func FuzzConvertViTDet(f *testing.F) {
	fuzzConvert(f, filepath.Join(vitdetDir, "model_final_tiny.pkl"), Detectron2, vitdetScale)
}

func fuzzConvert(f *testing.F, file string, from Source, cfg []byte) {
	base, err := torchckpt.Read(file)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(uint16(3), uint8(0), uint16(0), uint16(0))
	f.Add(uint16(40), uint8(1), uint16(5), uint16(1))
	f.Add(uint16(170), uint8(2), uint16(7), uint16(3))
	f.Add(uint16(11), uint8(3), uint16(0), uint16(0))
	f.Fuzz(func(t *testing.T, idx uint16, op uint8, a, b uint16) {
		ck := &torchckpt.Checkpoint{Root: base.Root, Format: base.Format, Classes: base.Classes}
		for _, x := range base.Tensors {
			c := *x
			ck.Tensors = append(ck.Tensors, &c)
		}
		i := int(idx) % len(ck.Tensors)
		x := ck.Tensors[i]
		switch op % 4 {
		case 0: // drop
			ck.Tensors = append(ck.Tensors[:i], ck.Tensors[i+1:]...)
		case 1: // duplicate under other indices
			c := *x
			c.Name = stageBlockRe.ReplaceAllString(x.Name, fmt.Sprintf("${1}.%d.blocks.%d.", a%9, b%9))
			if c.Name == x.Name {
				c.Name = x.Name + fmt.Sprint(a)
			}
			ck.Tensors = append(ck.Tensors, &c)
		case 2: // reshape, keeping the element count when it divides
			n := x.Elems()
			d := int(a%64) + 1
			if n%d == 0 {
				x.Shape = []int{d, n / d}
			} else {
				x.Shape = []int{int(a % 8), int(b % 8)}
			}
		case 3: // another dtype of the same bytes
			x.DType = []safetensors.DType{safetensors.F16, safetensors.I64, safetensors.U8, safetensors.BF16}[a%4]
		}
		blob, err := Convert(ck, Options{From: from, Config: cfg})
		if err != nil {
			return
		}
		if err := Validate(blob); err != nil {
			t.Fatalf("Convert succeeded but its file does not validate: %v", err)
		}
	})
}
