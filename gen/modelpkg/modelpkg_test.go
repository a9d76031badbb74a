package modelpkg

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flbq/flbq/generated/shapesswin"
	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/runtime/qmodel"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/solver"
	"github.com/flbq/flbq/solver/calib"
	"github.com/flbq/flbq/tools/data/shapes"
)

const fixture = "../../runtime/maskrcnn/testdata/swin_maskrcnn.safetensors"

// mixedAlloc gives every 16-channel group of every layer a bit-width that
// cycles through 3..8, so runs of several widths appear in one layer.
func mixedAlloc(t testing.TB, m *model.Model) *solver.Allocation {
	t.Helper()
	a := &solver.Allocation{Solver: "test", TargetBits: 5}
	i := 0
	for _, l := range m.QuantLayers() {
		for lo, g := 0, 0; lo < l.Out; lo, g = lo+16, g+1 {
			hi := min(lo+16, l.Out)
			bits := 3 + (i/2)%6 // pairs of groups share a width → merged runs
			a.Units = append(a.Units, solver.AllocUnit{UnitID: solver.UnitID{Layer: l.Name, Group: g}, Channels: [2]int{lo, hi}, Weights: int64(hi-lo) * int64(l.In), Bits: bits})
			i++
		}
	}
	a.AvgBits = solver.ComputeAvgBits(a.Units)
	return a
}

func load(t *testing.T) (*safetensors.File, *model.Model) { return loadFile(t, fixture) }

func loadFile(t testing.TB, path string) (*safetensors.File, *model.Model) {
	t.Helper()
	f, err := safetensors.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.FromFile(f)
	if err != nil {
		t.Fatal(err)
	}
	return f, m
}

func TestGenerateIsDeterministicAndRefusesForeignFiles(t *testing.T) {
	f, m := load(t)
	a := mixedAlloc(t, m)
	o := Options{Pkg: "tiny", ModelArg: "m.safetensors", AllocArg: "a.json", Rule: qformat.MSE}
	d1, d2 := t.TempDir(), t.TempDir()
	if _, err := Write(d1, f, a, o); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(d2, f, a, o); err != nil {
		t.Fatal(err)
	}
	// Regenerating over an existing package is allowed and identical.
	if _, err := Write(d1, f, a, o); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"doc.go", "model.go", BlobName} {
		b1, _ := os.ReadFile(filepath.Join(d1, n))
		b2, _ := os.ReadFile(filepath.Join(d2, n))
		if len(b1) == 0 || !bytes.Equal(b1, b2) {
			t.Fatalf("%s differs between two generations", n)
		}
	}
	src, _ := os.ReadFile(filepath.Join(d1, "model.go"))
	if !strings.HasPrefix(string(src), generatedMarker) || !strings.Contains(string(src), "//go:embed weights.bin") {
		t.Fatalf("model.go lacks the marker or the embed:\n%s", src[:200])
	}
	os.WriteFile(filepath.Join(d1, "notes.txt"), []byte("mine"), 0o644)
	if _, err := Write(d1, f, a, o); err == nil || !strings.Contains(err.Error(), "notes.txt") {
		t.Fatalf("foreign file: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(d1, "notes.txt")); string(b) != "mine" {
		t.Fatal("foreign file changed")
	}
	if _, err := Write(t.TempDir(), f, a, Options{Pkg: "not-an-ident", Rule: qformat.MSE}); err == nil {
		t.Fatal("bad package name accepted")
	}
}

// A layer table that disagrees with the blob (another allocation's runs, or
// another shape) must be refused at load, naming the layer.
func TestLoadRefusesMismatchedLayerTable(t *testing.T) {
	f, m := load(t)
	a := mixedAlloc(t, m)
	blob, layers, err := Pack(f, a, qformat.MSE, HeadsInt8)
	if err != nil {
		t.Fatal(err)
	}
	last := len(layers) - 1
	edit := func(change func(l *qmodel.Layer)) []qmodel.Layer {
		ls := append([]qmodel.Layer(nil), layers...)
		l := ls[last]
		l.Runs = append([]qmodel.Run(nil), l.Runs...)
		change(&l)
		ls[last] = l
		return ls
	}
	if _, err := qmodel.Load(blob, layers); err != nil {
		t.Fatalf("matching table refused: %v", err)
	}
	name := layers[last].Name
	if _, err := qmodel.Load(blob, edit(func(l *qmodel.Layer) { l.Runs[0].Bits = l.Runs[0].Bits%8 + 1 })); err == nil || !strings.Contains(err.Error(), name) {
		t.Errorf("table at other bit-widths: %v", err)
	}
	if _, err := qmodel.Load(blob, edit(func(l *qmodel.Layer) { l.K++ })); err == nil || !strings.Contains(err.Error(), name) {
		t.Errorf("table of another shape: %v", err)
	}
}

func TestAllocationMismatches(t *testing.T) {
	f, m := load(t)
	o := Options{Pkg: "tiny", Rule: qformat.MSE}
	for _, tc := range []struct {
		edit func(a *solver.Allocation)
		want string
	}{
		{func(a *solver.Allocation) {
			u := a.Units[0]
			u.Layer = "backbone.body.9.9.attn.qkv"
			a.Units = append(a.Units, u)
		}, "not a quantizable layer"},
		{func(a *solver.Allocation) { a.Units = a.Units[1:] }, "expected one starting at 0"},
		{func(a *solver.Allocation) { a.Units[0].Weights++ }, "different models"},
		{func(a *solver.Allocation) {
			in := a.Units[0].Weights / 16
			a.Units[0].Channels[1] += 8
			a.Units[0].Weights += 8 * in
			a.Units[1].Channels[0] += 8
			a.Units[1].Weights -= 8 * in
		}, "kernel tile"},
		{func(a *solver.Allocation) { a.Units[2].Bits = 9 }, "has 9 bits"},
		{func(a *solver.Allocation) { a.Units[3].Bits = 0 }, "has 0 bits"},
		{func(a *solver.Allocation) {}, "not a Go identifier"},
	} {
		a := mixedAlloc(t, m)
		tc.edit(a)
		dir := t.TempDir()
		o := o
		if tc.want == "not a Go identifier" {
			o.Pkg = "type"
		}
		_, err := Write(dir, f, a, o)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("files written despite the error: %v", ents)
		}
	}
}

// The quantized detector must give the detections of the calibration's
// fake-quant path with the same allocation: the kernels' integer
// arithmetic is the only difference.
// The quantized detector (backbone and integer heads on the kernels)
// against its float twin, with the heads at 8 and at 5 bits.
func TestQuantizedMatchesFakeQuant(t *testing.T) {
	for _, fx := range []string{fixture, "../../runtime/maskrcnn/testdata/vit_maskrcnn.safetensors"} {
		for _, h := range []Heads{HeadsInt8, "int5"} {
			t.Run(filepath.Base(fx)+"/"+string(h), func(t *testing.T) { quantizedMatchesFakeQuant(t, fx, h) })
		}
	}
}

func quantizedMatchesFakeQuant(t *testing.T, fx string, h Heads) {
	f, m := loadFile(t, fx)
	a := mixedAlloc(t, m)
	blob, layers, err := Pack(f, a, qformat.MSE, h)
	if err != nil {
		t.Fatal(err)
	}
	q, err := qmodel.Load(blob, layers)
	if err != nil {
		t.Fatal(err)
	}
	if q.Meta.HeadBits != h.Bits() {
		t.Errorf("head_bits %d, want %d", q.Meta.HeadBits, h.Bits())
	}
	imgs, _ := filepath.Glob("../../runtime/maskrcnn/testdata/images/*")
	matchesFakeQuant(t, q.Detector, fakeQuantDetectorHeads(t, f, a, h), imgs, 0.9)
}

func TestParseHeads(t *testing.T) {
	for s, want := range map[string]int{"": 8, "int8": 8, "int4": 4, "int6": 6, "fp32": 32} {
		h, err := ParseHeads(s)
		if err != nil || h.Bits() != want {
			t.Errorf("ParseHeads(%q) = %q (%d bits), %v; want %d bits", s, h, h.Bits(), err, want)
		}
	}
	for _, s := range []string{"int3", "int9", "int", "int88", "fp16", "INT8"} {
		if _, err := ParseHeads(s); err == nil {
			t.Errorf("ParseHeads(%q) accepted", s)
		}
	}
}

// TestFP32Heads: with --heads fp32 the blob keeps the source's pyramid and
// head weights (no 8-bit copies) and the quantized detector matches the
// fake-quant path with only the backbone quantized; the int8 heads' blob is
// smaller.
func TestFP32Heads(t *testing.T) {
	f, m := load(t)
	a := mixedAlloc(t, m)
	blob, layers, err := Pack(f, a, qformat.MSE, HeadsFP32)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := qmodel.PackedMeta(blob)
	if err != nil {
		t.Fatal(err)
	}
	if meta.HeadBits != 32 || len(meta.Heads) != 0 {
		t.Errorf("fp32 heads: head_bits %d, %d quantized heads", meta.HeadBits, len(meta.Heads))
	}
	pf, err := safetensors.Parse(blob)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"roi_heads.box_head.fc6.weight", "backbone.fpn.layer_blocks.0.0.weight"} {
		got, _, err1 := pf.Float32(name)
		want, _, err2 := f.Float32(name)
		if err1 != nil || err2 != nil || len(got) != len(want) {
			t.Fatalf("%s: %v %v", name, err1, err2)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s[%d] = %v, the source has %v", name, i, got[i], want[i])
			}
		}
	}
	q, err := qmodel.Load(blob, layers)
	if err != nil {
		t.Fatal(err)
	}
	imgs, _ := filepath.Glob("../../runtime/maskrcnn/testdata/images/*")
	matchesFakeQuant(t, q.Detector, fakeQuantDetectorHeads(t, f, a, HeadsFP32), imgs, 0.9)
	int8Blob, _, err := Pack(f, a, qformat.MSE, HeadsInt8)
	if err != nil {
		t.Fatal(err)
	}
	if len(int8Blob) >= len(blob) {
		t.Errorf("int8 heads blob %d bytes, fp32 heads %d", len(int8Blob), len(blob))
	}
	if _, _, err := Pack(f, a, qformat.MSE, "fp16"); err == nil {
		t.Error("heads fp16 accepted")
	}
}

// The committed package of the bundled model (with its specialised entry
// points) against the fake-quant path built from the committed model and
// allocation files, on held-out shapes images: every fake-quant detection
// must be found with the same label at box IoU ≥ 0.99.
func TestBundledPackageMatchesFakeQuant(t *testing.T) {
	q, err := shapesswin.New()
	if err != nil {
		t.Fatal(err)
	}
	f, _ := loadFile(t, "../../tools/models/shapes-swin-t32.safetensors")
	a, err := solver.ReadAllocFile("../../tools/models/shapes-swin-t32.alloc.json")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := shapes.Generate(shapes.Options{N: 4, Seed: 2, Size: 192, Out: dir}); err != nil {
		t.Fatal(err)
	}
	imgs, _ := filepath.Glob(filepath.Join(dir, shapes.ImagesDir, "*"))
	matchesFakeQuant(t, q.Detector, fakeQuantDetector(t, f, a), imgs, 1)
}

// fakeQuantDetector is the calibration's view of allocation a: the
// backbone layers as calibration runs them (dequantized weights,
// int8-rounded activations) and, with integer heads, the heads' float twin
// (calib.FakeQuantHeads: 8-bit weights, int8-rounded activations).
func fakeQuantDetector(t *testing.T, f *safetensors.File, a *solver.Allocation) *maskrcnn.Detector {
	return fakeQuantDetectorHeads(t, f, a, HeadsInt8)
}

func fakeQuantDetectorHeads(t *testing.T, f *safetensors.File, a *solver.Allocation, h Heads) *maskrcnn.Detector {
	t.Helper()
	fm, err := model.FromFile(f)
	if err != nil {
		t.Fatal(err)
	}
	ovs, err := calib.NewQuantizer(qformat.MSE).AllocationOverrides(fm.Backbone, a.Units)
	if err != nil {
		t.Fatal(err)
	}
	for name, op := range ovs {
		if err := fm.SetLinearImpl(name, op); err != nil {
			t.Fatal(err)
		}
	}
	fd, err := maskrcnn.New(fm)
	if err != nil {
		t.Fatal(err)
	}
	if h != HeadsFP32 {
		if err := calib.FakeQuantHeads(fd, h.Bits()); err != nil {
			t.Fatal(err)
		}
	}
	return fd
}

// matchesFakeQuant requires, on every image, at least share of the
// fake-quant detections to have a quantized one of the same label at box
// IoU ≥ 0.99: the kernels' integer arithmetic is the only difference.
func matchesFakeQuant(t *testing.T, q, fd *maskrcnn.Detector, imgs []string, share float64) {
	t.Helper()
	if len(imgs) == 0 {
		t.Fatal("no test images")
	}
	compared := 0
	for _, p := range imgs {
		got, err := q.DetectFile(p)
		if err != nil {
			t.Fatal(err)
		}
		want, err := fd.DetectFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(want) == 0 {
			continue
		}
		matched := 0
		for _, w := range want {
			for _, g := range got {
				if g.Label == w.Label && iou(g.Box, w.Box) >= 0.99 {
					matched++
					break
				}
			}
		}
		if float64(matched) < share*float64(len(want)) {
			t.Errorf("%s: %d of %d fake-quant detections found in the quantized output (%d detections)", p, matched, len(want), len(got))
		}
		compared += len(want)
		t.Logf("%s: %d fake-quant detections, %d quantized, %d matched", filepath.Base(p), len(want), len(got), matched)
	}
	if compared == 0 {
		t.Fatal("no detections to compare")
	}
}

func iou(a, b [4]float32) float64 {
	ix := math.Max(0, math.Min(float64(a[2]), float64(b[2]))-math.Max(float64(a[0]), float64(b[0])))
	iy := math.Max(0, math.Min(float64(a[3]), float64(b[3]))-math.Max(float64(a[1]), float64(b[1])))
	inter := ix * iy
	area := func(r [4]float32) float64 { return float64(r[2]-r[0]) * float64(r[3]-r[1]) }
	return inter / (area(a) + area(b) - inter)
}

// reencode returns blob with its tensors edited by edit (which may drop
// entries by returning false).
func reencode(t *testing.T, blob []byte, edit func(ts *safetensors.Tensor) bool) []byte {
	t.Helper()
	f, err := safetensors.Parse(blob)
	if err != nil {
		t.Fatal(err)
	}
	var ts []safetensors.Tensor
	for _, n := range f.Names() {
		info, _ := f.Info(n)
		raw, _ := f.Raw(n)
		x := safetensors.Tensor{Name: n, DType: info.DType, Shape: info.Shape, Raw: append([]byte(nil), raw...)}
		if edit(&x) {
			ts = append(ts, x)
		}
	}
	var buf bytes.Buffer
	if err := safetensors.Encode(&buf, ts, f.Metadata); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// A packed model whose head tensors are damaged, truncated or belong to
// another model is refused with an error naming the tensor.
func TestLoadRefusesDamagedHeads(t *testing.T) {
	f, m := load(t)
	a := mixedAlloc(t, m)
	blob, _, err := Pack(f, a, qformat.MSE, HeadsInt8)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := qmodel.LoadPacked(blob); err != nil {
		t.Fatalf("intact blob refused: %v", err)
	}
	const head = "rpn.head.conv.0.0.weight"
	for _, c := range []struct {
		name string
		edit func(ts *safetensors.Tensor) bool
		want string
	}{
		{"missing codes", func(ts *safetensors.Tensor) bool { return ts.Name != qmodel.Q8(head) }, qmodel.Q8(head)},
		{"missing scales", func(ts *safetensors.Tensor) bool { return ts.Name != qmodel.Q8Scale(head) }, qmodel.Q8Scale(head)},
		{"codes of another shape", func(ts *safetensors.Tensor) bool {
			if ts.Name == qmodel.Q8(head) {
				ts.Shape = []int{ts.Shape[0] * ts.Shape[1], ts.Shape[2], ts.Shape[3]}
			}
			return true
		}, qmodel.Q8(head)},
		{"codes as I8", func(ts *safetensors.Tensor) bool {
			if ts.Name == qmodel.Q8(head) {
				ts.DType = safetensors.I8
			}
			return true
		}, qmodel.Q8(head)},
		{"zero point out of range", func(ts *safetensors.Tensor) bool {
			if ts.Name == qmodel.Q8Zero(head) {
				ts.Raw[0], ts.Raw[1] = 0xff, 0x7f // 32767
			}
			return true
		}, qmodel.Q8(head)},
		{"scales too few", func(ts *safetensors.Tensor) bool {
			if ts.Name == qmodel.Q8Scale(head) {
				ts.Shape, ts.Raw = []int{ts.Shape[0] - 1}, ts.Raw[:len(ts.Raw)-4]
			}
			return true
		}, qmodel.Q8Scale(head)},
	} {
		_, err := qmodel.LoadPacked(reencode(t, blob, c.edit))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error naming %s", c.name, err, c.want)
		}
	}
	if _, err := qmodel.LoadPacked(blob[:len(blob)/2]); err == nil {
		t.Error("truncated blob accepted")
	}
	// Another model's blob under this model's layer table.
	vf, vm := loadFile(t, "../../runtime/maskrcnn/testdata/vit_maskrcnn.safetensors")
	vblob, _, err := Pack(vf, mixedAlloc(t, vm), qformat.MSE, HeadsInt8)
	if err != nil {
		t.Fatal(err)
	}
	_, layers, _ := Pack(f, a, qformat.MSE, HeadsInt8)
	if _, err := qmodel.Load(vblob, layers); err == nil || !strings.Contains(err.Error(), "layer") {
		t.Errorf("another model's blob: %v", err)
	}
}

// FuzzLoadPacked: no packed model, however damaged, panics the loader.
// The fuzzer edits the "flbq.qmodel" metadata (the layer and head tables
// the loader trusts least) and may cut the blob short.
func FuzzLoadPacked(f *testing.F) {
	src, m := loadFile(f, fixture)
	a := mixedAlloc(f, m)
	blob, _, err := Pack(src, a, qformat.MSE, HeadsInt8)
	if err != nil {
		f.Fatal(err)
	}
	pf, err := safetensors.Parse(blob)
	if err != nil {
		f.Fatal(err)
	}
	var ts []safetensors.Tensor
	for _, n := range pf.Names() {
		info, _ := pf.Info(n)
		raw, _ := pf.Raw(n)
		ts = append(ts, safetensors.Tensor{Name: n, DType: info.DType, Shape: info.Shape, Raw: raw})
	}
	f.Add(pf.Metadata[qmodel.MetaKey], uint32(0))
	f.Add(pf.Metadata[qmodel.MetaKey], uint32(len(blob)/2))
	f.Fuzz(func(t *testing.T, meta string, cut uint32) {
		var buf bytes.Buffer
		md := map[string]string{safetensors.ConfigKey: pf.Metadata[safetensors.ConfigKey], qmodel.MetaKey: meta}
		if err := safetensors.Encode(&buf, ts, md); err != nil {
			return
		}
		b := buf.Bytes()
		if cut > 0 {
			b = b[:int(cut)%len(b)]
		}
		if q, err := qmodel.LoadPacked(b); err == nil && q.Detector == nil {
			t.Fatal("nil detector without an error")
		}
	})
}
