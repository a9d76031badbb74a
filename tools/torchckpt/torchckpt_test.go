package torchckpt

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flbq/flbq/runtime/safetensors"
)

// Fixtures and values written by tools/refgen/torch_checkpoints.py (torch 1.13).
type expected map[string]struct {
	DType  string    `json:"dtype"`
	Shape  []int     `json:"shape"`
	Values []float64 `json:"values"`
}

func readExpected(t *testing.T) expected {
	b, err := os.ReadFile("testdata/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var e expected
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

var torchDTypes = map[string]safetensors.DType{"float32": safetensors.F32, "float16": safetensors.F16, "bfloat16": safetensors.BF16, "float64": safetensors.F64, "int64": safetensors.I64, "bool": safetensors.Bool}

func TestReadFormats(t *testing.T) {
	want := readExpected(t)
	for _, c := range []struct{ file, root, format, classes string }{
		{"zip_state_dict.pth", "", "zip", "[]"},
		{"legacy_mmdet.pth", "state_dict", "legacy", "[person car]"},
		{"zip_model.weird.name.pth", "model", "zip", "[]"},
	} {
		t.Run(c.file, func(t *testing.T) {
			ck, err := Read(filepath.Join("testdata", c.file))
			if err != nil {
				t.Fatal(err)
			}
			if ck.Root != c.root || ck.Format != c.format {
				t.Errorf("root %q format %s, want %q %s", ck.Root, ck.Format, c.root, c.format)
			}
			if got := fmt.Sprint(ck.Classes); got != c.classes {
				t.Errorf("meta.CLASSES %s, want %s", got, c.classes)
			}
			if len(ck.Tensors) != len(want) {
				t.Errorf("%d tensors, want %d", len(ck.Tensors), len(want))
			}
			if ck.Tensors[0].Name != "backbone.conv.weight" || ck.Tensors[len(ck.Tensors)-1].Name != "param" {
				t.Errorf("order lost: first %s, last %s", ck.Tensors[0].Name, ck.Tensors[len(ck.Tensors)-1].Name)
			}
			for name, w := range want {
				got, ok := ck.Lookup(name)
				if !ok {
					t.Errorf("%s missing", name)
					continue
				}
				if got.DType != torchDTypes[w.DType] || !sameInts(got.Shape, w.Shape) {
					t.Errorf("%s: %s %v, want %s %v", name, got.DType, got.Shape, w.DType, w.Shape)
					continue
				}
				vals := got.Float32()
				if len(vals) != len(w.Values) {
					t.Fatalf("%s: %d values, want %d", name, len(vals), len(w.Values))
				}
				for i, v := range vals {
					// Every fixture value is exact in float32 except float64's.
					if float64(v) != float64(float32(w.Values[i])) {
						t.Errorf("%s[%d] = %v, want %v", name, i, v, w.Values[i])
						break
					}
				}
			}
		})
	}
}

func sameInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A pickle that names a class outside the allow-list is refused, naming the
// class, and nothing runs (the fixture would write a file via os.system).
func TestRefusesClasses(t *testing.T) {
	os.Remove("/tmp/flbq-torchckpt-pwned")
	_, err := Read("testdata/evil.pth")
	if err == nil || !strings.Contains(err.Error(), "class posix.system is not allowed") || !strings.Contains(err.Error(), "evil.pth") {
		t.Fatalf("evil.pth: %v", err)
	}
	if _, err := os.Stat("/tmp/flbq-torchckpt-pwned"); err == nil {
		t.Fatal("the checkpoint's command ran")
	}
}

func TestBadInput(t *testing.T) {
	good, err := os.ReadFile("testdata/zip_state_dict.pth")
	if err != nil {
		t.Fatal(err)
	}
	legacy, err := os.ReadFile("testdata/legacy_mmdet.pth")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "not a PyTorch checkpoint"},
		{"text", []byte("hello, world"), ""},
		{"zip truncated", good[:len(good)/2], "zip checkpoint"},
		{"legacy truncated in the storages", legacy[:len(legacy)-40], "truncated"},
		{"forged length", []byte("\x80\x02\x8e\xff\xff\xff\xff\xff\xff\xff\x7f."), "states 9223372036854775807 bytes"},
		{"legacy truncated in the pickle", legacy[:300], ""},
		{"a plain pickle of an int", []byte("\x80\x02K\x05."), "type int, not a dict"},
	} {
		_, err := Decode(c.b)
		if err == nil {
			t.Errorf("%s: accepted", c.name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q lacks %q", c.name, err, c.want)
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, n := range []string{"zip_state_dict.pth", "legacy_mmdet.pth", "evil.pth", "d2_proto2.pkl", "d2_proto4.pkl"} {
		b, err := os.ReadFile(filepath.Join("testdata", n))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ck, err := Decode(b)
		if err != nil {
			return
		}
		for _, tn := range ck.Tensors {
			if len(tn.Raw) != tn.Elems()*size(tn.DType) {
				t.Fatalf("%s: %d bytes for shape %v of %s", tn.Name, len(tn.Raw), tn.Shape, tn.DType)
			}
			tn.Float32()
		}
	})
}

var npDTypes = map[string]safetensors.DType{"float32": safetensors.F32, "float64": safetensors.F64, "float16": safetensors.F16, "int64": safetensors.I64, "uint8": safetensors.U8}

// detectron2's .pkl: a pickle of NumPy arrays under "model", at protocols 2
// (bytes via _codecs.encode) and 4; Fortran-ordered and big-endian arrays
// come out row-major little-endian.
func TestReadDetectron2Pickle(t *testing.T) {
	b, err := os.ReadFile("testdata/d2_expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var want expected
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"d2_proto2.pkl", "d2_proto4.pkl"} {
		ck, err := Read(filepath.Join("testdata", f))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if ck.Root != "model" || ck.Format != "pickle" || len(ck.Tensors) != len(want) {
			t.Fatalf("%s: root %q format %s, %d tensors", f, ck.Root, ck.Format, len(ck.Tensors))
		}
		for name, w := range want {
			got, ok := ck.Lookup(name)
			if !ok {
				t.Fatalf("%s: %s missing", f, name)
			}
			if got.DType != npDTypes[w.DType] || !sameInts(got.Shape, w.Shape) {
				t.Errorf("%s %s: %s %v, want %s %v", f, name, got.DType, got.Shape, w.DType, w.Shape)
				continue
			}
			for i, v := range got.Float32() {
				if float64(v) != float64(float32(w.Values[i])) {
					t.Errorf("%s %s[%d] = %v, want %v", f, name, i, v, w.Values[i])
					break
				}
			}
		}
	}
	if _, err := Read("testdata/d2_object.pkl"); err == nil || !strings.Contains(err.Error(), "not a plain numeric type") {
		t.Errorf("object array: %v", err)
	}
}
