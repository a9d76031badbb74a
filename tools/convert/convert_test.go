package convert

import (
	"os"
	"strings"
	"testing"

	"github.com/flbq/flbq/runtime/imageio"
	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/tools/torchckpt"
)

// Fixtures: tools/refgen/convert_fixtures.py wrote the bundled ViT Mask
// R-CNN (runtime/maskrcnn/testdata) as torch.save files.
const original = "../../runtime/maskrcnn/testdata/vit_maskrcnn.safetensors"

func config(t *testing.T) []byte {
	b, err := os.ReadFile("testdata/vit_maskrcnn.config.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A converted checkpoint holds the original's tensors exactly and detects
// exactly as the original file does.
func TestConvertTorchvision(t *testing.T) {
	orig, err := safetensors.Open(original)
	if err != nil {
		t.Fatal(err)
	}
	want, err := maskrcnn.Load(original)
	if err != nil {
		t.Fatal(err)
	}
	img, err := imageio.Load("../../runtime/maskrcnn/testdata/images/shapes.png")
	if err != nil {
		t.Fatal(err)
	}
	wantOut, err := want.DetectRGB(img)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"vit_maskrcnn.pth", "vit_maskrcnn_legacy.pth"} {
		ck, err := torchckpt.Read("testdata/" + f)
		if err != nil {
			t.Fatal(err)
		}
		blob, err := Convert(ck, Options{From: Torchvision, Config: config(t), Origin: f})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		got, err := safetensors.Parse(blob)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(got.Metadata[safetensors.ConfigKey], `"source":{"file":"`+f+`","from":"torchvision"}`) {
			t.Errorf("%s: config %s lacks the source", f, got.Metadata[safetensors.ConfigKey])
		}
		names := orig.Names()
		if len(got.Names()) != len(names) {
			t.Fatalf("%s: %d tensors, want %d", f, len(got.Names()), len(names))
		}
		for _, n := range names {
			a, _, err := orig.Float32(n)
			if err != nil {
				t.Fatal(err)
			}
			b, _, err := got.Float32(n)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			for i := range a {
				if a[i] != b[i] {
					t.Fatalf("%s: %s[%d] = %v, want %v", f, n, i, b[i], a[i])
				}
			}
		}
		path := t.TempDir() + "/m.safetensors"
		if err := os.WriteFile(path, blob, 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := maskrcnn.Load(path)
		if err != nil {
			t.Fatal(err)
		}
		out, err := d.DetectRGB(img)
		if err != nil {
			t.Fatal(err)
		}
		if len(out.Detections) == 0 || len(out.Detections) != len(wantOut.Detections) {
			t.Fatalf("%s: %d detections, the original %d", f, len(out.Detections), len(wantOut.Detections))
		}
		for i, x := range out.Detections {
			if x.Box != wantOut.Detections[i].Box || x.Score != wantOut.Detections[i].Score || x.Label != wantOut.Detections[i].Label {
				t.Fatalf("%s: detection %d differs: %+v vs %+v", f, i, x, wantOut.Detections[i])
			}
		}
	}
}

// Missing, extra and mis-shaped tensors, another architecture's config and
// an unknown source fail naming what is wrong.
func TestConvertRefuses(t *testing.T) {
	read := func() *torchckpt.Checkpoint {
		ck, err := torchckpt.Read("testdata/vit_maskrcnn.pth")
		if err != nil {
			t.Fatal(err)
		}
		return ck
	}
	for _, c := range []struct {
		name string
		edit func(ck *torchckpt.Checkpoint, cfg *[]byte)
		want string
	}{
		{"missing", func(ck *torchckpt.Checkpoint, _ *[]byte) {
			for i, x := range ck.Tensors {
				if x.Name == "roi_heads.box_predictor.cls_score.weight" {
					ck.Tensors = append(ck.Tensors[:i], ck.Tensors[i+1:]...)
					return
				}
			}
			t.Fatal("fixture lacks the tensor")
		}, "roi_heads.box_predictor.cls_score.weight"},
		{"extra", func(ck *torchckpt.Checkpoint, _ *[]byte) {
			ck.Tensors = append(ck.Tensors, &torchckpt.Tensor{Name: "backbone.extra.weight", DType: safetensors.F32, Shape: []int{1}, Raw: make([]byte, 4)})
		}, "backbone.extra.weight"},
		{"mis-shaped", func(ck *torchckpt.Checkpoint, _ *[]byte) {
			x, _ := ck.Lookup("rpn.head.conv.0.0.weight")
			if x == nil {
				x = ck.Tensors[len(ck.Tensors)-1]
			}
			x.Shape = []int{x.Elems()}
		}, "shape"},
		{"other architecture", func(_ *torchckpt.Checkpoint, cfg *[]byte) {
			*cfg = []byte(strings.Replace(string(*cfg), `"hidden_dim": 32`, `"hidden_dim": 48`, 1))
		}, "shape"},
		{"bad config", func(_ *torchckpt.Checkpoint, cfg *[]byte) { *cfg = []byte("{") }, "flbq.config"},
	} {
		ck, cfg := read(), config(t)
		c.edit(ck, &cfg)
		_, err := Convert(ck, Options{From: Torchvision, Config: cfg})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := ParseSource("timm"); err == nil || !strings.Contains(err.Error(), "accepted: torchvision, mmdet, swin-official, detectron2") {
		t.Errorf("ParseSource(timm): %v", err)
	}
	// A torchvision ViT state dict is not an mmdetection Swin.
	if _, err := Convert(read(), Options{From: MMDet}); err == nil || !strings.Contains(err.Error(), `missing key "backbone.patch_embed.projection.weight"`) {
		t.Errorf("a torchvision ViT read as mmdet: %v", err)
	}
}
