package imageio

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"testing"
)

// TestResizeLinear8MatchesOpenCV compares ResizeLinear8 with cv2.resize
// (INTER_LINEAR, OpenCV 4.6, tools/refgen/mmdet_ops_goldens.py): every
// value equal, for up- and downscaling, an exact halving and the identity.
func TestResizeLinear8MatchesOpenCV(t *testing.T) {
	b, err := os.ReadFile("testdata/cv2_resize.json")
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		CV2     string `json:"cv2"`
		H, W    int
		RGB     string `json:"rgb_hwc_base64"`
		Resized []struct {
			H, W int
			RGB  string `json:"rgb_hwc_base64"`
		}
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	planar := func(s string, h, w int) []uint8 {
		hwc, err := base64.StdEncoding.DecodeString(s)
		if err != nil || len(hwc) != 3*h*w {
			t.Fatalf("golden image %dx%d: %v (%d bytes)", w, h, err, len(hwc))
		}
		out := make([]uint8, len(hwc))
		for i := 0; i < h*w; i++ {
			for c := 0; c < 3; c++ {
				out[c*h*w+i] = hwc[3*i+c]
			}
		}
		return out
	}
	src := &RGB{W: g.W, H: g.H, Pix: planar(g.RGB, g.H, g.W)}
	for _, r := range g.Resized {
		want := planar(r.RGB, r.H, r.W)
		got := ResizeLinear8(src, r.H, r.W)
		worst, off := 0, 0
		for i := range want {
			d := int(got.Pix[i]) - int(want[i])
			if d < 0 {
				d = -d
			}
			worst = max(worst, d)
			if d != 0 {
				off++
			}
		}
		frac := float64(off) / float64(len(want))
		t.Logf("%dx%d -> %dx%d: %d of %d values differ from cv2 %s (%.2f%%), by at most %d", g.W, g.H, r.W, r.H, off, len(want), g.CV2, 100*frac, worst)
		if off != 0 {
			t.Errorf("%dx%d: %.2f%% of values differ from cv2, by up to %d levels", r.W, r.H, 100*frac, worst)
		}
	}
}

// TestMMCVSize: mmcv.imrescale rounds the output size; torchvision floors it.
func TestMMCVSize(t *testing.T) {
	for _, c := range []struct {
		h, w           int
		mmcv, tv       [2]int
		minSize, maxSz int
	}{
		{480, 640, [2]int{800, 1067}, [2]int{800, 1066}, 800, 1333},
		{427, 640, [2]int{800, 1199}, [2]int{799, 1199}, 800, 1333},
		{100, 1000, [2]int{133, 1333}, [2]int{133, 1333}, 800, 1333},
		{150, 230, [2]int{125, 192}, [2]int{125, 191}, 128, 192},
	} {
		tf := DetectionTransform{MinSize: c.minSize, MaxSize: c.maxSz, Resize: ResizeMMCV}
		if h, w := tf.Size(c.h, c.w); [2]int{h, w} != c.mmcv {
			t.Errorf("mmcv %dx%d: %dx%d, want %v", c.h, c.w, h, w, c.mmcv)
		}
		tf.Resize = ResizeTorchvision
		if h, w := tf.Size(c.h, c.w); [2]int{h, w} != c.tv {
			t.Errorf("torchvision %dx%d: %dx%d, want %v", c.h, c.w, h, w, c.tv)
		}
	}
	if _, err := ParseResize("cv2"); err == nil {
		t.Error("ParseResize(cv2) accepted")
	}
}
