package model

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/runtime/tensor"
)

// fixtureTensors returns the fixture's tensors and metadata for editing.
func fixtureTensors(t *testing.T, name string) ([]safetensors.Tensor, map[string]string) {
	f, err := safetensors.Open(filepath.Join("testdata", name+".safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	var ts []safetensors.Tensor
	for _, n := range f.Names() {
		info, _ := f.Info(n)
		if info.DType == safetensors.I64 {
			d, s, _ := f.Int64(n)
			ts = append(ts, safetensors.Tensor{Name: n, DType: safetensors.I64, Shape: s, I64: d})
		} else {
			d, s, _ := f.Float32(n)
			ts = append(ts, safetensors.Tensor{Name: n, Shape: s, F32: d})
		}
	}
	return ts, f.Metadata
}

func build(t *testing.T, ts []safetensors.Tensor, md map[string]string) ([]byte, error) {
	var b bytes.Buffer
	if err := safetensors.Encode(&b, ts, md); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Parse(b.Bytes())
	if err != nil {
		return b.Bytes(), err
	}
	_, err = FromFile(f)
	return b.Bytes(), err
}

func TestLoaderRejects(t *testing.T) {
	const qkv = "backbone.body.3.1.attn.qkv.weight"
	const idx = "backbone.body.5.0.attn.relative_position_index"
	edit := func(f func([]safetensors.Tensor) []safetensors.Tensor) func([]safetensors.Tensor) []safetensors.Tensor {
		return f
	}
	cases := []struct {
		name string
		edit func([]safetensors.Tensor) []safetensors.Tensor
		md   func(map[string]string)
		want string
	}{
		{"missing", edit(func(ts []safetensors.Tensor) []safetensors.Tensor {
			for i := range ts {
				if ts[i].Name == qkv {
					return append(ts[:i], ts[i+1:]...)
				}
			}
			return ts
		}), nil, `tensor "` + qkv + `": missing`},
		{"unexpected", edit(func(ts []safetensors.Tensor) []safetensors.Tensor {
			return append(ts, safetensors.Tensor{Name: "backbone.body.9.weight", Shape: []int{1}, F32: []float32{1}})
		}), nil, `tensor "backbone.body.9.weight": unexpected`},
		{"wrong shape", edit(func(ts []safetensors.Tensor) []safetensors.Tensor {
			for i := range ts {
				if ts[i].Name == qkv {
					ts[i].Shape = []int{ts[i].Shape[1], ts[i].Shape[0]}
				}
			}
			return ts
		}), nil, `tensor "` + qkv + `": shape`},
		{"float index", edit(func(ts []safetensors.Tensor) []safetensors.Tensor {
			for i := range ts {
				if ts[i].Name == idx {
					ts[i].F32 = make([]float32, len(ts[i].I64))
					ts[i].I64, ts[i].DType = nil, safetensors.F32
				}
			}
			return ts
		}), nil, `tensor "` + idx + `": dtype F32`},
		{"int weight", edit(func(ts []safetensors.Tensor) []safetensors.Tensor {
			for i := range ts {
				if ts[i].Name == qkv {
					ts[i].I64 = make([]int64, len(ts[i].F32))
					ts[i].F32, ts[i].DType = nil, safetensors.I64
				}
			}
			return ts
		}), nil, `tensor "` + qkv + `": dtype I64`},
		{"no config", nil, func(md map[string]string) { delete(md, safetensors.ConfigKey) }, "flbq.config"},
		{"bad config", nil, func(md map[string]string) { md[safetensors.ConfigKey] = `{"family":"resnet","task":"detection"}` }, `family "resnet"`},
	}
	for _, c := range cases {
		ts, md := fixtureTensors(t, "swin_tiny")
		if c.edit != nil {
			ts = c.edit(ts)
		}
		if c.md != nil {
			c.md(md)
		}
		_, err := build(t, ts, md)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
	// Truncated file: the error names the tensor that runs past the end.
	ts, md := fixtureTensors(t, "vitdet_tiny")
	b, err := build(t, ts, md)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := safetensors.Parse(b[:len(b)-100]); err == nil || !strings.Contains(err.Error(), "backbone.") {
		t.Errorf("truncated: %v", err)
	}
}

// Detection heads are left to the Mask R-CNN loader.
func TestHeadsLeftForMaskRCNN(t *testing.T) {
	ts, md := fixtureTensors(t, "vitdet_tiny")
	ts = append(ts, safetensors.Tensor{Name: "rpn.head.conv.0.0.weight", Shape: []int{1}, F32: []float32{1}})
	var b bytes.Buffer
	if err := safetensors.Encode(&b, ts, md); err != nil {
		t.Fatal(err)
	}
	f, _ := safetensors.Parse(b.Bytes())
	m, err := FromFile(f)
	if err != nil {
		t.Fatal(err)
	}
	if u := m.Weights.Unused(""); len(u) != 1 || u[0] != "rpn.head.conv.0.0.weight" {
		t.Errorf("unused = %v", u)
	}
}

// Calibration's interface: cached block inputs, re-running from any block,
// per-call overrides and permanent swaps.
func TestBlocksAndOverrides(t *testing.T) {
	for _, name := range []string{"swin_tiny", "vitdet_tiny"} {
		m := loadModel(t, name)
		g := loadGolden(t, name)
		x := g.get(t, "raw_odd/input")
		bb := m.Backbone
		blocks := bb.Blocks()
		inputs := make([]*tensor.Tensor, len(blocks))
		full := bb.ForwardFrom(0, x, nil, nil, inputs)
		for i := range blocks {
			if inputs[i] == nil {
				t.Fatalf("%s: block %d input not cached", name, i)
			}
			part := bb.ForwardFrom(i, inputs[i], full, nil, nil)
			for k := range full {
				if d := tensor.MaxAbsDiff(part[k].Data, full[k].Data); d != 0 {
					t.Fatalf("%s: ForwardFrom(%d) output %d differs by %g", name, i, k, d)
				}
			}
		}
		layers := m.QuantLayers()
		if len(layers) == 0 {
			t.Fatal("no quantizable layers")
		}
		// An override that computes fp32 changes nothing; one that zeroes a
		// late layer changes only the outputs after it.
		last := layers[len(layers)-1]
		calls := 0
		same := nn.Overrides{last.Name: nn.LinearFunc(func(dst, x []float32, M int) { calls++; last.Layer.ForwardFP32(dst, x, M) })}
		got := bb.Forward(x, same)
		if calls == 0 {
			t.Fatalf("%s: override of %s not called", name, last.Name)
		}
		for k := range full {
			if tensor.MaxAbsDiff(got[k].Data, full[k].Data) != 0 {
				t.Errorf("%s: fp32 override changed output %d", name, k)
			}
		}
		zero := nn.LinearFunc(func(dst, x []float32, M int) { clear(dst[:M*last.Out]) })
		got = bb.Forward(x, nn.Overrides{last.Name: zero})
		if tensor.MaxAbsDiff(got[len(got)-1].Data, full[len(full)-1].Data) == 0 {
			t.Errorf("%s: zero override did not change the last output", name)
		}
		if len(got) > 1 && tensor.MaxAbsDiff(got[0].Data, full[0].Data) != 0 {
			t.Errorf("%s: zero override of the last layer changed output 0", name)
		}
		if err := m.SetLinearImpl(last.Name, zero); err != nil {
			t.Fatal(err)
		}
		got2 := bb.Forward(x, nil)
		if tensor.MaxAbsDiff(got2[len(got2)-1].Data, got[len(got)-1].Data) != 0 {
			t.Errorf("%s: SetLinearImpl differs from the override", name)
		}
		_ = m.SetLinearImpl(last.Name, nil)
		if err := m.SetLinearImpl("nope", zero); err == nil {
			t.Error("SetLinearImpl accepted an unknown layer")
		}
	}
}

func TestQuantLayerNames(t *testing.T) {
	m := loadModel(t, "swin_tiny")
	var names []string
	for _, l := range m.QuantLayers() {
		names = append(names, l.Name)
	}
	s := strings.Join(names, " ")
	for _, want := range []string{"backbone.body.1.0.attn.qkv", "backbone.body.1.1.attn.proj", "backbone.body.3.0.mlp.0", "backbone.body.7.1.mlp.3", "backbone.body.2.reduction"} {
		if !strings.Contains(s, want) {
			t.Errorf("missing %s in %s", want, s)
		}
	}
	// 4 stages × 2 blocks × 4 linears + 3 patch merges
	if len(names) != 35 {
		t.Errorf("%d quantizable layers, want 35", len(names))
	}
	l := m.Linear("backbone.body.1.0.attn.qkv")
	if l == nil || l.In != 16 || l.Out != 48 {
		t.Errorf("qkv layer %+v", l)
	}
	v := loadModel(t, "vitcls_tiny")
	if l := v.Linear("encoder.layers.encoder_layer_1.self_attention.in_proj"); l == nil || l.Out != 96 {
		t.Errorf("vit in_proj %+v", l)
	}
}

// TestAttend checks Attention against the block's own forward: Attend on
// the q/k/v the block computed reproduces the output projection's input on
// image rows and zeroes padding rows, and a change to one head's q, k or v
// channels moves only that head's output columns.
func TestAttend(t *testing.T) {
	for _, name := range []string{"swin_tiny", "vitdet_tiny", "vitcls_tiny"} {
		m := loadModel(t, name)
		g := loadGolden(t, name)
		var x *tensor.Tensor
		var blocks []Block
		inputs := []*tensor.Tensor{}
		if m.Backbone != nil {
			x = g.get(t, "raw_odd/input")
			blocks = m.Backbone.Blocks()
			inputs = make([]*tensor.Tensor, len(blocks))
			m.Backbone.ForwardFrom(0, x, nil, nil, inputs)
		} else {
			x = g.get(t, "proc_a/input")
			blocks = m.Classifier.Blocks()
			for _, b := range blocks {
				inputs = append(inputs, x)
				x = b.Forward(x, nil)
			}
		}
		padded, checked := 0, 0
		for i, b := range blocks {
			a := b.Attention
			if a == nil {
				continue
			}
			checked++
			var qkv, attn []float32
			var M int
			b.Forward(inputs[i], nn.Overrides{
				a.QKV.Name: nn.LinearFunc(func(dst, x []float32, m int) {
					a.QKV.ForwardFP32(dst, x, m)
					qkv, M = append([]float32(nil), dst[:m*a.QKV.Out]...), m
				}),
				a.Proj.Name: nn.LinearFunc(func(dst, x []float32, m int) {
					attn = append([]float32(nil), x[:m*a.Proj.In]...)
					a.Proj.ForwardFP32(dst, x, m)
				}),
			})
			C := a.Proj.In
			out := make([]float32, M*C)
			a.Attend(inputs[i], qkv, out)
			tokens := 0
			for r := 0; r < M; r++ {
				row, want := out[r*C:(r+1)*C], attn[r*C:(r+1)*C]
				zero := true
				for _, v := range row {
					zero = zero && v == 0
				}
				if zero {
					continue
				}
				tokens++
				if d := tensor.MaxAbsDiff(row, want); d != 0 {
					t.Fatalf("%s %s: Attend row %d differs from the block's by %g", name, b.Name, r, d)
				}
			}
			if want := inputs[i].Numel() / C; tokens != want {
				t.Fatalf("%s %s: %d non-zero Attend rows, want the %d image tokens", name, b.Name, tokens, want)
			}
			if M > tokens {
				padded++
			}
			// Perturb head 1's k channels: only head 1's columns change.
			dh := C / a.Heads
			h := min(1, a.Heads-1)
			for r := 0; r < M; r++ {
				for j := 0; j < dh; j++ {
					qkv[r*3*C+C+h*dh+j] += 0.5 * float32(j%3-1)
				}
			}
			out2 := make([]float32, M*C)
			a.Attend(inputs[i], qkv, out2)
			moved := false
			for r := 0; r < M; r++ {
				for c := 0; c < C; c++ {
					if out2[r*C+c] != out[r*C+c] {
						if c/dh != h {
							t.Fatalf("%s %s: changing head %d's k moved column %d (head %d)", name, b.Name, h, c, c/dh)
						}
						moved = true
					}
				}
			}
			if !moved {
				t.Fatalf("%s %s: changing head %d's k changed nothing", name, b.Name, h)
			}
		}
		if checked == 0 {
			t.Fatalf("%s: no block has Attention", name)
		}
		if name == "swin_tiny" && padded == 0 {
			t.Errorf("%s: no block ran with window padding; the padding rows went untested", name)
		}
		t.Logf("%s: %d attention blocks, %d with padding rows", name, checked, padded)
	}
}
