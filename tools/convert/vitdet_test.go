package convert

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flbq/flbq/runtime/imageio"
	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/runtime/tensor"
	"github.com/flbq/flbq/tools/torchckpt"
)

// The fixtures of tools/refgen/vitdet_fixtures.py: a random-weight small
// ViTDet Mask R-CNN in detectron2's key names and .pkl format (patch 16,
// embed 64, 4 blocks, windows of 3 in blocks 0 and 2 on an 8×8 grid, so
// windows are padded; rel-pos tables of the global blocks sized for a 4×4
// grid, so they are interpolated), and a PyTorch reference that follows
// detectron2's code line by line.
const vitdetDir = "testdata/vitdet"

var vitdetNet = model.ViTNetConfig{Patch: 16, Dim: 64, Depth: 4, Heads: 4, MLPDim: 256, PretrainGrid: 4, PosCls: true,
	Window: 3, WindowBlocks: []int{0, 2}, RelGrid: 4, RelPos: true, Eps: 1e-6}

func vitdetWeights(t *testing.T) *model.Weights {
	t.Helper()
	ck, err := torchckpt.Read(filepath.Join(vitdetDir, "model_final_tiny.pkl"))
	if err != nil {
		t.Fatal(err)
	}
	var ts []safetensors.Tensor
	for _, x := range ck.Tensors {
		if strings.HasPrefix(x.Name, "backbone.") {
			st, err := fromCheckpoint(x)
			if err != nil {
				t.Fatal(err)
			}
			ts = append(ts, *st)
		}
	}
	var buf bytes.Buffer
	if err := safetensors.Encode(&buf, ts, nil); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return model.NewWeights(f)
}

// TestViTNetParity: detectron2's ViT (windowed and global blocks,
// decomposed relative positions, interpolated tables and absolute
// positions) against the reference, block by block and at the output, and
// its simple feature pyramid p2..p6.
func TestViTNetParity(t *testing.T) {
	w := vitdetWeights(t)
	v, err := model.LoadViTNet(w, vitdetNet, "backbone.net")
	if err != nil {
		t.Fatal(err)
	}
	fp, err := model.LoadSimpleFPDetectron2(w, "backbone", 64, 32)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.CheckUnused("backbone"); err != nil {
		t.Fatal(err)
	}
	maps, err := safetensors.Open(filepath.Join(vitdetDir, "maps.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"wide", "tall"} {
		x := tensorOf(t, maps, c+".input")
		blocks := v.Blocks()
		x = blocks[0].Forward(x, nil)
		for i := 1; i < len(blocks); i++ {
			x = blocks[i].Forward(x, nil)
			name := fmt.Sprintf("%s.block%d", c, i-1)
			if _, ok := maps.Info(name); ok {
				want := tensorOf(t, maps, name)
				d := closeTo(t, name, x.Data, want.Data, 1e-4, 1e-4)
				t.Logf("%s (%s attention): max |Δ| %.2g", name, map[bool]string{true: "window", false: "global"}[i-1 == 0 || i-1 == 2], d)
			}
		}
		got := v.Forward(tensorOf(t, maps, c+".input"), nil)[0]
		want := tensorOf(t, maps, c+".vit")
		if fmt.Sprint(got.Shape) != fmt.Sprint(want.Shape) {
			t.Fatalf("%s: output %v, want %v", c, got.Shape, want.Shape)
		}
		d := closeTo(t, c+".vit", got.Data, want.Data, 1e-4, 1e-4)
		t.Logf("%s: backbone map max |Δ| %.2g (max |value| %.2g)", c, d, maxAbs(want.Data))
		// The simple feature pyramid (LayerNorm2d, detectron2's names) and p6.
		for i, p := range fp.Forward([]*tensor.Tensor{got}) {
			name := fmt.Sprintf("%s.p%d", c, i+2)
			want := tensorOf(t, maps, name)
			if fmt.Sprint(p.Shape) != fmt.Sprint(want.Shape) {
				t.Fatalf("%s: %v, want %v", name, p.Shape, want.Shape)
			}
			d := closeTo(t, name, p.Data, want.Data, 1e-4, 1e-4)
			t.Logf("%s: max |Δ| %.2g", name, d)
		}
	}
}

func maxAbs(v []float32) float64 {
	m := 0.0
	for _, x := range v {
		m = math.Max(m, math.Abs(float64(x)))
	}
	return m
}

// TestViTDetCheckpointFormats: detectron2's .pkl (a pickle of NumPy arrays
// under "model") and the .pth of the same model hold the same tensors.
func TestViTDetCheckpointFormats(t *testing.T) {
	pkl, err := torchckpt.Read(filepath.Join(vitdetDir, "model_final_tiny.pkl"))
	if err != nil {
		t.Fatal(err)
	}
	pth, err := torchckpt.Read(filepath.Join(vitdetDir, "model_final_tiny.pth"))
	if err != nil {
		t.Fatal(err)
	}
	if pkl.Format != "pickle" || pkl.Root != "model" || pth.Format != "zip" || len(pkl.Tensors) != len(pth.Tensors) {
		t.Fatalf(".pkl %s/%q %d tensors, .pth %s/%q %d", pkl.Format, pkl.Root, len(pkl.Tensors), pth.Format, pth.Root, len(pth.Tensors))
	}
	for _, a := range pkl.Tensors {
		b, ok := pth.Lookup(a.Name)
		if !ok || fmt.Sprint(a.Shape) != fmt.Sprint(b.Shape) || fmt.Sprint(a.Float32()) != fmt.Sprint(b.Float32()) {
			t.Errorf("%s differs between the .pkl and the .pth", a.Name)
		}
	}
}

type vitdetCase struct {
	Image                 string
	Orig, Resized, Padded [2]int
	Proposals             []float32
	ProposalScores        []float32 `json:"proposal_scores"` // objectness logits
	Boxes, Scores         []float32
	Labels                []int
	Masks                 [][]uint32
}

// TestViTDetDetectorParity: convert --from detectron2 and the whole
// detector on the reference's preprocessed input: proposals, detections
// and masks as detectron2 gives them.
func TestViTDetDetectorParity(t *testing.T) {
	d := vitdetDetector(t)
	gold := vitdetGoldens(t)
	maps, err := safetensors.Open(filepath.Join(vitdetDir, "maps.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"wide", "tall"} {
		c := gold[name]
		t.Run(name, func(t *testing.T) {
			in := &imageio.DetectionInput{Batch: tensorOf(t, maps, name+".input"), Height: c.Resized[0], Width: c.Resized[1], OrigHeight: c.Orig[0], OrigWidth: c.Orig[1]}
			out, err := d.DetectInput(in)
			if err != nil {
				t.Fatal(err)
			}
			checkDetections(t, out, c)
		})
	}
}

// TestViTDetPreprocessing: resize "pil" (ResizeShortestEdge's size,
// Pillow's BILINEAR resample), detectron2's mean/std and the square pad
// give the reference's input from the PNG files, and DetectRGB then the
// reference's detections.
func TestViTDetPreprocessing(t *testing.T) {
	d := vitdetDetector(t)
	maps, err := safetensors.Open(filepath.Join(vitdetDir, "maps.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"wide", "tall"} {
		img, err := imageio.Load(filepath.Join(vitdetDir, "images", name+".png"))
		if err != nil {
			t.Fatal(err)
		}
		in := d.Model.Config.Transform().Apply(img)
		want := tensorOf(t, maps, name+".input")
		if fmt.Sprint(in.Batch.Shape) != fmt.Sprint(want.Shape) {
			t.Fatalf("%s: input %v, want %v", name, in.Batch.Shape, want.Shape)
		}
		dd := closeTo(t, name+" input", in.Batch.Data, want.Data, 1e-5, 0)
		t.Logf("%s: preprocessed input max |Δ| %.2g", name, dd)
		out, err := d.DetectRGB(img)
		if err != nil {
			t.Fatal(err)
		}
		c := vitdetGoldens(t)[name]
		checkDetections(t, out, c)
	}
}

// vitdetScale is the fixtures' test scale (ViTDet's 1024 scaled down).
var vitdetScale = []byte(`{"min_size": 128, "max_size": 128, "square_pad": 128}`)

// vitdetDetector converts the fixture's .pkl and builds the detector.
func vitdetDetector(t *testing.T) *maskrcnn.Detector {
	t.Helper()
	ck, err := torchckpt.Read(filepath.Join(vitdetDir, "model_final_tiny.pkl"))
	if err != nil {
		t.Fatal(err)
	}
	blob, err := Convert(ck, Options{From: Detectron2, Config: vitdetScale})
	if err != nil {
		t.Fatal(err)
	}
	return detectorOf(t, blob)
}

// vitdetGoldens reads the reference's outputs, objectness logits turned
// into flbq's probabilities.
func vitdetGoldens(t *testing.T) map[string]mmdetCase {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(vitdetDir, "goldens.json"))
	if err != nil {
		t.Fatal(err)
	}
	var g struct{ Cases map[string]vitdetCase }
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	out := map[string]mmdetCase{}
	for name, c := range g.Cases {
		probs := make([]float32, len(c.ProposalScores))
		for i, l := range c.ProposalScores {
			probs[i] = float32(1 / (1 + math.Exp(-float64(l))))
		}
		out[name] = mmdetCase{Image: c.Image, Orig: c.Orig, Resized: c.Resized, Padded: c.Padded,
			Proposals: c.Proposals, ProposalScores: probs, Boxes: c.Boxes, Scores: c.Scores, Labels: c.Labels, Masks: c.Masks}
	}
	return out
}

// TestViTDetRefuses: a damaged detectron2 checkpoint fails naming the key.
func TestViTDetRefuses(t *testing.T) {
	read := func() *torchckpt.Checkpoint {
		ck, err := torchckpt.Read(filepath.Join(vitdetDir, "model_final_tiny.pkl"))
		if err != nil {
			t.Fatal(err)
		}
		return ck
	}
	edit := func(name string, f func(ck *torchckpt.Checkpoint, i int)) func(*torchckpt.Checkpoint) {
		return func(ck *torchckpt.Checkpoint) {
			for i, x := range ck.Tensors {
				if x.Name == name {
					f(ck, i)
					return
				}
			}
			t.Fatalf("no tensor %q in the fixture", name)
		}
	}
	drop := func(ck *torchckpt.Checkpoint, i int) { ck.Tensors = append(ck.Tensors[:i], ck.Tensors[i+1:]...) }
	for _, c := range []struct {
		name string
		edit func(*torchckpt.Checkpoint)
		want string
	}{
		{"missing qkv", edit("backbone.net.blocks.2.attn.qkv.bias", drop), `"backbone.net.blocks.2.attn.qkv.bias"`},
		{"missing pos_embed", edit("backbone.net.pos_embed", drop), `missing key "backbone.net.pos_embed"`},
		{"missing predictor", edit("roi_heads.box_predictor.cls_score.weight", drop), `missing key "roi_heads.box_predictor.cls_score.weight"`},
		{"missing rpn conv", edit("proposal_generator.rpn_head.conv.conv1.weight", drop), `"proposal_generator.rpn_head.conv.conv1.bias"`},
		{"extra key", edit("roi_heads.box_head.fc1.bias", func(ck *torchckpt.Checkpoint, i int) {
			c := *ck.Tensors[i]
			c.Name = "roi_heads.keypoint_head.fc1.bias"
			ck.Tensors = append(ck.Tensors, &c)
		}), `unexpected key "roi_heads.keypoint_head.fc1.bias"`},
		{"wrong shape", edit("roi_heads.mask_head.mask_fcn2.weight", func(ck *torchckpt.Checkpoint, i int) {
			x := ck.Tensors[i]
			x.Shape = []int{x.Shape[1], x.Shape[0], 9, 1}
		}), `mask_fcn2.weight`},
		{"rel-pos table of a third size", edit("backbone.net.blocks.1.attn.rel_pos_h", func(ck *torchckpt.Checkpoint, i int) {
			x := ck.Tensors[i]
			x.Raw = x.Raw[:len(x.Raw)-4*x.Shape[1]]
			x.Shape = []int{x.Shape[0] - 1, x.Shape[1]} // 6 rows: neither 5 (window) nor 7 (global)
		}), `backbone.net.blocks.1.attn.rel_pos_h`},
	} {
		ck := read()
		c.edit(ck)
		_, err := Convert(ck, Options{From: Detectron2, Config: vitdetScale})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
	// A Swin checkpoint is not a ViTDet.
	ck, err := torchckpt.Read(filepath.Join(mmdetDir, mmdetSources[0].file))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Convert(ck, Options{From: Detectron2}); err == nil || !strings.Contains(err.Error(), `missing key "backbone.net.patch_embed.proj.weight"`) {
		t.Errorf("an mmdetection Swin as detectron2: %v", err)
	}
}
