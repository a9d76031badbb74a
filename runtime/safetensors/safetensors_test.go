package safetensors

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func encode(t testing.TB, ts []Tensor, md map[string]string) []byte {
	var b bytes.Buffer
	if err := Encode(&b, ts, md); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// raw builds a file from a literal header and data.
func raw(header string, data []byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(len(header)))
	b.WriteString(header)
	b.Write(data)
	return b.Bytes()
}

func TestRoundTrip(t *testing.T) {
	ts := []Tensor{
		{Name: "b", Shape: []int{2, 3}, F32: []float32{1, -2, 3.5, 0, float32(math.Inf(1)), 6}},
		{Name: "a.index", DType: I64, Shape: []int{3}, I64: []int64{0, -7, 1 << 40}},
		{Name: "scalar", Shape: []int{}, F32: []float32{42}},
		{Name: "empty", Shape: []int{0, 4}, F32: []float32{}},
	}
	path := filepath.Join(t.TempDir(), "x.safetensors")
	if err := Write(path, ts, map[string]string{ConfigKey: `{"family":"swin"}`}); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if f.Metadata[ConfigKey] != `{"family":"swin"}` {
		t.Errorf("metadata %v", f.Metadata)
	}
	if got := strings.Join(f.Names(), ","); got != "a.index,b,empty,scalar" {
		t.Errorf("names %s", got)
	}
	d, shape, err := f.Float32("b")
	if err != nil || len(shape) != 2 || d[3] != 0 || d[2] != 3.5 || !math.IsInf(float64(d[4]), 1) {
		t.Errorf("b = %v %v %v", d, shape, err)
	}
	iv, _, err := f.Int64("a.index")
	if err != nil || iv[1] != -7 || iv[2] != 1<<40 {
		t.Errorf("index = %v %v", iv, err)
	}
	if _, _, err := f.Int64("b"); err == nil || !strings.Contains(err.Error(), `"b"`) {
		t.Errorf("Int64 of a float tensor: %v", err)
	}
	if _, _, err := f.Float32("nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("missing tensor: %v", err)
	}
}

func TestHalfAndBFloat(t *testing.T) {
	// f16: 1.0 = 0x3c00, -2.5 = 0xc100, smallest subnormal 0x0001, inf 0x7c00
	f16 := []byte{0x00, 0x3c, 0x00, 0xc1, 0x01, 0x00, 0x00, 0x7c}
	// bf16: 1.0 = 0x3f80, -0.15625 = 0xbe20
	bf := []byte{0x80, 0x3f, 0x20, 0xbe}
	hdr := `{"h":{"dtype":"F16","shape":[4],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[2],"data_offsets":[8,12]}}`
	f, err := Parse(raw(hdr, append(f16, bf...)))
	if err != nil {
		t.Fatal(err)
	}
	h, _, _ := f.Float32("h")
	if h[0] != 1 || h[1] != -2.5 || h[2] != float32(math.Ldexp(1, -24)) || !math.IsInf(float64(h[3]), 1) {
		t.Errorf("f16 = %v", h)
	}
	b, _, _ := f.Float32("b")
	if b[0] != 1 || b[1] != -0.15625 {
		t.Errorf("bf16 = %v", b)
	}
}

func TestRejects(t *testing.T) {
	good := encode(t, []Tensor{{Name: "w", Shape: []int{2, 2}, F32: []float32{1, 2, 3, 4}}, {Name: "v", Shape: []int{1}, F32: []float32{5}}}, nil)
	cases := []struct {
		name string
		file []byte
		want string
	}{
		{"empty", nil, "truncated"},
		{"short header", raw(`{}`, nil)[:9], "truncated"},
		{"huge header", func() []byte { b := raw(`{}`, nil); binary.LittleEndian.PutUint64(b, 1<<40); return b }(), "exceeds"},
		{"truncated data", good[:len(good)-3], `"w"`},
		{"past end", raw(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 4)), `tensor "w"`},
		{"overlap", raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, make([]byte, 12)), `overlap`},
		{"hole", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), `tensor "a"`},
		{"size mismatch", raw(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8)), `tensor "a": F32[3] needs 12 bytes`},
		{"absurd shape", raw(`{"a":{"dtype":"F32","shape":[1000000,1000000,1000000],"data_offsets":[0,8]}}`, make([]byte, 8)), `tensor "a": absurd shape`},
		{"negative dim", raw(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, make([]byte, 8)), `tensor "a": bad dimension`},
		{"bad dtype", raw(`{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)), `tensor "a": unsupported dtype`},
		{"reversed offsets", raw(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, make([]byte, 8)), `tensor "a"`},
		{"duplicate", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), `duplicate entry "a"`},
		{"not json", raw(`{"a":`, nil), "header"},
		{"missing field", raw(`{"a":{"dtype":"F32","shape":[1]}}`, make([]byte, 4)), `tensor "a"`},
		{"trailing bytes", raw(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 6)), "trailing"},
		{"bad metadata", raw(`{"__metadata__":{"k":1}}`, nil), "__metadata__"},
	}
	for _, c := range cases {
		_, err := Parse(c.file)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want mention of %q", c.name, err, c.want)
		}
	}
	if _, err := Parse(good); err != nil {
		t.Fatal(err)
	}
}

func TestWriteAtomicOnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.safetensors")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Write(path, []Tensor{{Name: "a", Shape: []int{3}, F32: []float32{1}}}, nil)
	if err == nil || !strings.Contains(err.Error(), `"a"`) {
		t.Fatalf("err = %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Errorf("destination changed: %q", b)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(encode(f, []Tensor{{Name: "w", Shape: []int{2, 2}, F32: []float32{1, 2, 3, 4}}, {Name: "i", DType: I64, Shape: []int{1}, I64: []int64{3}}}, map[string]string{"k": "v"}))
	f.Add(raw(`{"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}`, make([]byte, 4)))
	f.Add(raw(`{"b":{"dtype":"BF16","shape":[1,1],"data_offsets":[0,2]}}`, make([]byte, 2)))
	f.Fuzz(func(t *testing.T, b []byte) {
		file, err := Parse(b)
		if err != nil {
			return
		}
		for _, n := range file.Names() {
			info, _ := file.Info(n)
			if info.End-info.Begin != int64(info.Numel())*info.DType.Size() {
				t.Fatalf("%s: inconsistent info %+v", n, info)
			}
			if info.DType.IsFloat() {
				if d, _, err := file.Float32(n); err != nil || len(d) != info.Numel() {
					t.Fatalf("%s: %v", n, err)
				}
			} else if d, _, err := file.Int64(n); err != nil || len(d) != info.Numel() {
				t.Fatalf("%s: %v", n, err)
			}
		}
	})
}
