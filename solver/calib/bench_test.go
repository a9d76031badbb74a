package calib

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/runtime/tensor"
)

// swinTensors returns random weights (N(0, 0.02²) linears, unit LayerNorms)
// for a Swin detection backbone + FPN of the given configuration.
func swinTensors(ed int, depths, heads []int, win, outC int, seed uint64) []safetensors.Tensor {
	rng := rand.New(rand.NewPCG(seed, 1))
	var ts []safetensors.Tensor
	randn := func(name string, std float64, shape ...int) {
		n := 1
		for _, d := range shape {
			n *= d
		}
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(rng.NormFloat64() * std)
		}
		ts = append(ts, safetensors.Tensor{Name: name, Shape: shape, F32: d})
	}
	fill := func(name string, v float32, n int) {
		d := make([]float32, n)
		for i := range d {
			d[i] = v
		}
		ts = append(ts, safetensors.Tensor{Name: name, Shape: []int{n}, F32: d})
	}
	ln := func(name string, n int) { fill(name+".weight", 1, n); fill(name+".bias", 0, n) }
	lin := func(name string, in, out int, bias bool) {
		randn(name+".weight", 0.02, out, in)
		if bias {
			fill(name+".bias", 0, out)
		}
	}
	p := "backbone.body"
	randn(p+".0.0.weight", 0.02, ed, 3, 4, 4)
	fill(p+".0.0.bias", 0, ed)
	ln(p+".0.2", ed)
	T := win * win
	idx := make([]int64, T*T)
	for i := 0; i < T; i++ {
		for j := 0; j < T; j++ {
			dy, dx := i/win-j/win+win-1, i%win-j%win+win-1
			idx[i*T+j] = int64(dy*(2*win-1) + dx)
		}
	}
	feat := 1
	var chans []int
	for st, depth := range depths {
		dim := ed << st
		for j := 0; j < depth; j++ {
			n := fmt.Sprintf("%s.%d.%d", p, feat, j)
			ln(n+".norm1", dim)
			lin(n+".attn.qkv", dim, 3*dim, true)
			lin(n+".attn.proj", dim, dim, true)
			ln(n+".norm2", dim)
			lin(n+".mlp.0", dim, 4*dim, true)
			lin(n+".mlp.3", 4*dim, dim, true)
			randn(n+".attn.relative_position_bias_table", 0.02, (2*win-1)*(2*win-1), heads[st])
			ts = append(ts, safetensors.Tensor{Name: n + ".attn.relative_position_index", DType: safetensors.I64, Shape: []int{T * T}, I64: idx})
		}
		chans = append(chans, dim)
		feat++
		if st < len(depths)-1 {
			n := fmt.Sprintf("%s.%d", p, feat)
			ln(n+".norm", 4*dim)
			lin(n+".reduction", 4*dim, 2*dim, false)
			feat++
		}
	}
	for i, c := range chans {
		ln(fmt.Sprintf("backbone.out_norms.%d", i), c)
		n := fmt.Sprintf("backbone.fpn.inner_blocks.%d.0", i)
		randn(n+".weight", 0.02, outC, c, 1, 1)
		fill(n+".bias", 0, outC)
		n = fmt.Sprintf("backbone.fpn.layer_blocks.%d.0", i)
		randn(n+".weight", 0.02, outC, outC, 3, 3)
		fill(n+".bias", 0, outC)
	}
	return ts
}

// swinTConfig is torchvision swin_t as a Mask R-CNN backbone at 512×512.
const swinTConfig = `{"family":"swin","task":"detection","patch_size":[4,4],"embed_dim":96,"depths":[2,2,6,2],"num_heads":[3,6,12,24],"window_size":[7,7],"mlp_ratio":4,"out_norms":true,"out_channels":256,"min_size":512,"max_size":512,"num_classes":91}`

// TestWriteSwinT writes the random-weight Swin-T model used in
// docs/BENCHMARKS.md to $FLBQ_WRITE_SWINT (skipped when unset).
func TestWriteSwinT(t *testing.T) {
	path := os.Getenv("FLBQ_WRITE_SWINT")
	if path == "" {
		t.Skip("set FLBQ_WRITE_SWINT=FILE to write the random Swin-T model")
	}
	ts := swinTensors(96, []int{2, 2, 6, 2}, []int{3, 6, 12, 24}, 7, 256, 1)
	if err := safetensors.Write(path, ts, map[string]string{safetensors.ConfigKey: swinTConfig}); err != nil {
		t.Fatal(err)
	}
	m, err := model.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d quantizable layers, %d parameters", path, len(m.QuantLayers()), m.NumParams())
}

// BenchmarkCalibrate times exact and fast mode on the fixture models with
// 8 images (one batch), against 8 plain fp32 forwards measured alongside.
func BenchmarkCalibrate(b *testing.B) {
	for _, name := range []string{"vitdet_tiny", "swin_tiny"} {
		m := fixture(b, name)
		in := calibInputs(b, m, 8, false)
		batches := MakeBatches(in, 8)
		t0 := time.Now()
		for i := 0; i < 5; i++ {
			m.Backbone.Forward(batches[0].X, nil)
		}
		fwd := time.Since(t0).Seconds() / 5
		for _, mode := range []string{Exact, Fast} {
			b.Run(name+"/"+mode, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					if _, err := Measure(context.Background(), m.Backbone, batches, Options{Mode: mode, GroupSize: 32, Rule: qformat.MSE}, NewState()); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(b.Elapsed().Seconds()/float64(b.N)/fwd, "x-fp32-forwards")
			})
		}
	}
}

// TestTimeSwinT times, on the model written by TestWriteSwinT
// ($FLBQ_SWINT) and one 512×512 image: an fp32 forward, the MSE weight
// quantization of every layer at all bit-widths (once per run, independent
// of the number of images), and fast-mode calibration with min–max scales
// (whose quantization is negligible), for docs/BENCHMARKS.md. Each is a
// subtest (-run TimeSwinT/mse times the scale search alone).
func TestTimeSwinT(t *testing.T) {
	path := os.Getenv("FLBQ_SWINT")
	if path == "" {
		t.Skip("set FLBQ_SWINT=FILE (see TestWriteSwinT)")
	}
	m, err := model.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	x := tensorOnes(512)
	fwd := 0.0
	t.Run("forward", func(t *testing.T) {
		m.Backbone.Forward(x, nil)
		t0 := time.Now()
		m.Backbone.Forward(x, nil)
		fwd = time.Since(t0).Seconds()
		t.Logf("fp32 forward 512x512: %.2fs", fwd)
	})
	t.Run("mse", func(t *testing.T) {
		t0 := time.Now()
		z := NewQuantizer(qformat.MSE)
		for _, l := range m.QuantLayers() {
			for b := 1; b <= 8; b++ {
				if _, err := z.layer(l.Layer, b); err != nil {
					t.Fatal(err)
				}
			}
		}
		t.Logf("MSE quantization of all layers at 1..8 bits: %.1fs", time.Since(t0).Seconds())
	})
	t.Run("fast", func(t *testing.T) {
		t0 := time.Now()
		if _, err := Measure(context.Background(), m.Backbone, []Batch{{Images: []int{0}, X: x}}, Options{Mode: Fast, GroupSize: 32, Rule: qformat.MinMax}, NewState()); err != nil {
			t.Fatal(err)
		}
		fast := time.Since(t0).Seconds()
		t.Logf("fast mode, 1 image, min-max: %.1fs = %.1f fp32 forwards", fast, fast/fwd)
	})
}

// TestTimeSwinTForwards times plain fp32 backbone forwards of the
// calibration batches flbq calibrate would use (64 images of
// $FLBQ_SWINT_DATA/instances.json, batches of 8) on the model in
// $FLBQ_SWINT: the "64 plain fp32 forwards" of docs/BENCHMARKS.md.
func TestTimeSwinTForwards(t *testing.T) {
	path, data := os.Getenv("FLBQ_SWINT"), os.Getenv("FLBQ_SWINT_DATA")
	if path == "" || data == "" {
		t.Skip("set FLBQ_SWINT=FILE and FLBQ_SWINT_DATA=DIR (flbq data shapes --size 512)")
	}
	p, err := Prepare(&RunConfig{Model: path, Data: data + "/instances.json", Images: data + "/images", CalibSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	for _, b := range p.Batches {
		p.Model.Backbone.Forward(b.X, nil)
	}
	t.Logf("%d plain fp32 forwards (%d batches): %.1fs", len(p.Images), len(p.Batches), time.Since(t0).Seconds())
}

// BenchmarkFastEnergies times fast mode's energy pass alone (the fp32
// pass with every layer's per-bit error energies and moments; the part
// that runs on every calibration image) on the fixture models with one
// batch of 8 images, in plain fp32 forwards of the same batch.
//
// With FLBQ_SWINT=FILE (TestWriteSwinT) it also times the Swin-T-size
// model on one 512×512 image.
func BenchmarkFastEnergies(b *testing.B) {
	names := []string{"vitdet_tiny", "swin_tiny"}
	if os.Getenv("FLBQ_SWINT") != "" {
		names = append(names, "swint_512")
	}
	for _, name := range names {
		var m *model.Model
		var x *tensor.Tensor
		if name == "swint_512" {
			var err error
			if m, err = model.Load(os.Getenv("FLBQ_SWINT")); err != nil {
				b.Fatal(err)
			}
			x = tensorOnes(512)
		} else {
			m = fixture(b, name)
			x = MakeBatches(calibInputs(b, m, 8, false), 8)[0].X
		}
		bb := m.Backbone
		e, err := newEngine(bb, []Batch{{X: x}}, Options{Mode: Fast, Rule: qformat.MinMax}, NewState())
		if err != nil {
			b.Fatal(err)
		}
		inputs := make([]*tensor.Tensor, len(bb.Blocks()))
		h := e.newStatsHook(inputs)
		bb.ForwardFrom(0, x, nil, h.overrides(), inputs) // quantize and pack once
		t0 := time.Now()
		for i := 0; i < 5; i++ {
			bb.Forward(x, nil)
		}
		fwd := time.Since(t0).Seconds() / 5
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				h := e.newStatsHook(inputs)
				bb.ForwardFrom(0, x, nil, h.overrides(), inputs)
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N)/fwd, "x-fp32-forwards")
		})
	}
}
