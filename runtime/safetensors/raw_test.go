package safetensors

import (
	"bytes"
	"testing"
)

func TestEncodeRaw(t *testing.T) {
	var buf bytes.Buffer
	err := Encode(&buf, []Tensor{
		{Name: "q", DType: U8, Shape: []int{2, 3}, Raw: []byte{1, 2, 3, 4, 5, 6}},
		{Name: "z", DType: I32, Shape: []int{2}, Raw: []byte{7, 0, 0, 0, 255, 255, 255, 255}},
		{Name: "f", Shape: []int{1}, F32: []float32{1.5}},
	}, map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	q, _ := f.Raw("q")
	z, _, _ := f.Int64("z")
	v, _, _ := f.Float32("f")
	if !bytes.Equal(q, []byte{1, 2, 3, 4, 5, 6}) || z[0] != 7 || z[1] != -1 || v[0] != 1.5 {
		t.Fatalf("round trip: q %v z %v f %v", q, z, v)
	}
	for _, bad := range []Tensor{
		{Name: "a", DType: U8, Shape: []int{4}, Raw: []byte{1, 2, 3}},
		{Name: "b", DType: I32, Shape: []int{1}, Raw: []byte{1, 2, 3}},
		{Name: "c", DType: "X9", Shape: []int{1}, Raw: []byte{1}},
	} {
		if err := Encode(&bytes.Buffer{}, []Tensor{bad}, nil); err == nil {
			t.Errorf("tensor %s accepted", bad.Name)
		}
	}
}
