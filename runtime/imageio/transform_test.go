package imageio

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"image"
	"image/jpeg"
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

// TestJPEGMatchesLibjpeg compares Load with libjpeg-turbo's decoding
// (cv2.imread) of odd-sized JPEGs in 4:2:0, 4:2:2 and 4:4:4: libjpeg's
// colour tables and fancy chroma upsampling are reproduced, so what is
// left is the IDCT (Go's vs libjpeg's islow), a level or two on a few
// pixels.
func TestJPEGMatchesLibjpeg(t *testing.T) {
	b, err := os.ReadFile("testdata/cv2_jpeg.json")
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		CV2    string `json:"cv2"`
		Images []struct {
			File string
			H, W int
			RGB  string `json:"rgb_hwc_base64"`
		}
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	for _, c := range g.Images {
		img, err := Load("testdata/" + c.File)
		if err != nil {
			t.Fatal(err)
		}
		hwc, err := base64.StdEncoding.DecodeString(c.RGB)
		if err != nil || len(hwc) != 3*c.H*c.W || img.W != c.W || img.H != c.H {
			t.Fatalf("%s: golden %v (%d bytes), decoded %dx%d", c.File, err, len(hwc), img.W, img.H)
		}
		worst, sum, off := 0, 0, 0
		for i := 0; i < c.H*c.W; i++ {
			for ch := 0; ch < 3; ch++ {
				d := int(img.Pix[ch*c.H*c.W+i]) - int(hwc[3*i+ch])
				if d < 0 {
					d = -d
				}
				worst, sum = max(worst, d), sum+d
				if d != 0 {
					off++
				}
			}
		}
		mean := float64(sum) / float64(len(hwc))
		t.Logf("%s: mean |Δ| %.3f levels, max %d, %.1f%% of values differ from cv2 %s", c.File, mean, worst, 100*float64(off)/float64(len(hwc)), g.CV2)
		if worst > 4 || mean > 0.1 {
			t.Errorf("%s: mean |Δ| %.3f levels, max %d (want <= 0.1, <= 4)", c.File, mean, worst)
		}
	}
}

// TestJPEGTinySizes: fancy upsampling at widths and heights of 1–3 pixels
// (one chroma sample per row or column) keeps the plain mean colour of a
// flat image.
func TestJPEGTinySizes(t *testing.T) {
	for _, sz := range [][2]int{{1, 1}, {1, 2}, {2, 1}, {3, 5}, {5, 3}} {
		w, h := sz[0], sz[1]
		img := image.NewRGBA(image.Rect(0, 0, w, h))
		for i := 0; i < w*h; i++ {
			copy(img.Pix[4*i:], []uint8{200, 40, 90, 255})
		}
		var buf bytes.Buffer
		if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 100}); err != nil {
			t.Fatal(err)
		}
		got, err := Decode(&buf)
		if err != nil {
			t.Fatal(err)
		}
		if got.W != w || got.H != h {
			t.Fatalf("%dx%d decoded as %dx%d", w, h, got.W, got.H)
		}
		for c, want := range []int{200, 40, 90} {
			for _, v := range got.Pix[c*w*h : (c+1)*w*h] {
				if d := int(v) - want; d < -3 || d > 3 {
					t.Errorf("%dx%d: channel %d is %d, want %d ± 3", w, h, c, v, want)
				}
			}
		}
	}
}
