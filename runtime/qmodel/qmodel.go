// Package qmodel is the runtime side of a generated model package: it
// loads the compact weight blob `flbq generate` embeds (a safetensors file)
// and returns a Mask R-CNN detector whose quantized backbone layers run on
// the bit-packed kernels of runtime/kernels.
//
// The blob holds, per quantized backbone layer L, the packed weights
// (L.qweight, U8, the qformat layout), per-channel scales and zero points
// (L.qscale F32, L.qzero I32, padded to whole tiles) and the tile bit-widths
// (L.qtile_bits U8); per head weight tensor X (FPN / simple pyramid, RPN,
// RoI box and mask heads) its uniform 8-bit form (X.q8 U8 in X's layout,
// X.q8scale F32 and X.q8zero I32 per output channel); every other tensor as
// in the source model; and the metadata "flbq.config" (the model) and
// "flbq.qmodel" (Meta).
//
// The quantized linears compute with int8 activations and exact int32
// accumulation. So do the heads of a blob packed with integer heads: every
// pyramid and head layer (maskrcnn.HeadLayers) runs its channels-last
// product on kernels.QLinear with the stored codes, except the mask
// logits, evaluated per predicted label in fp32 on their dequantized
// weights.
package qmodel

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/kernels"
	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/runtime/safetensors"
)

// Format is the value of Meta.Format.
const Format = "flbq.qmodel/v1"

// MetaKey is the safetensors metadata key of Meta.
const MetaKey = "flbq.qmodel"

// Run is a range of output channels [Lo, Hi) sharing one bit-width.
type Run struct {
	Lo   int `json:"lo"`
	Hi   int `json:"hi"`
	Bits int `json:"bits"`
}

// Layer describes one quantized linear layer: its state_dict name, shape
// (N outputs, K inputs) and its runs of channel-group bit-widths.
type Layer struct {
	Name string `json:"name"`
	N    int    `json:"n"`
	K    int    `json:"k"`
	Runs []Run  `json:"runs"`
}

// TileBits expands the runs into one bit-width per tile of qformat.TileN
// channels. Runs must tile [0, N) with boundaries on tile edges.
func (l *Layer) TileBits() ([]uint8, error) {
	tb := make([]uint8, qformat.PaddedN(l.N)/qformat.TileN)
	next := 0
	for _, r := range l.Runs {
		if r.Lo != next || r.Hi <= r.Lo || r.Hi > l.N || r.Bits < qformat.MinBits || r.Bits > qformat.MaxBits {
			return nil, fmt.Errorf("layer %s: run [%d, %d) at %d bits does not continue the runs at channel %d within %d channels and 1..8 bits", l.Name, r.Lo, r.Hi, r.Bits, next, l.N)
		}
		if r.Lo%qformat.TileN != 0 || (r.Hi%qformat.TileN != 0 && r.Hi != l.N) {
			return nil, fmt.Errorf("layer %s: run [%d, %d) does not start and end on %d-channel tile edges", l.Name, r.Lo, r.Hi, qformat.TileN)
		}
		for t := r.Lo / qformat.TileN; t < qformat.PaddedN(r.Hi)/qformat.TileN; t++ {
			tb[t] = uint8(r.Bits)
		}
		next = r.Hi
	}
	if next != l.N {
		return nil, fmt.Errorf("layer %s: runs cover channels [0, %d) of %d", l.Name, next, l.N)
	}
	return tb, nil
}

// HeadTensor names a head weight stored at HeadBits bits and the axis of
// its output channels.
type HeadTensor struct {
	Name string `json:"name"`
	Axis int    `json:"axis"`
}

// Meta is the blob's "flbq.qmodel" metadata.
type Meta struct {
	Format     string       `json:"format"`
	Solver     string       `json:"solver"`
	TargetBits float64      `json:"target_bits"`
	AvgBits    float64      `json:"avg_bits"`
	Rule       string       `json:"rule"`
	HeadBits   int          `json:"head_bits"`
	Layers     []Layer      `json:"layers"`
	Heads      []HeadTensor `json:"heads"`
	// WeightNames maps each quantized layer to its source weight tensor
	// (".weight", or "_weight" for nn.MultiheadAttention's in_proj).
	WeightNames map[string]string `json:"weight_names"`
}

// Blob tensor names.
func QWeight(layer string) string   { return layer + ".qweight" }
func QScale(layer string) string    { return layer + ".qscale" }
func QZero(layer string) string     { return layer + ".qzero" }
func QTileBits(layer string) string { return layer + ".qtile_bits" }
func Q8(t string) string            { return t + ".q8" }
func Q8Scale(t string) string       { return t + ".q8scale" }
func Q8Zero(t string) string        { return t + ".q8zero" }

// WeightName is the source tensor of a quantizable layer's weight: torch's
// "<layer>.weight", or "<attn>.in_proj_weight" for nn.MultiheadAttention.
func WeightName(f *safetensors.File, layer string) (string, bool) {
	for _, n := range []string{layer + ".weight", layer + "_weight"} {
		if _, ok := f.Info(n); ok {
			return n, true
		}
	}
	return "", false
}

// Model is a loaded quantized detector and what it was built from.
type Model struct {
	*maskrcnn.Detector
	Meta   Meta
	Linear map[string]*kernels.QLinear
}

// Load builds the quantized detector from a blob. want, the layer table
// compiled into the generated package, must match the blob exactly. Every
// quantized layer runs on kernels.QLinear with the layer's runtime shape:
// per-layer code with the shape and bit-width runs as constants was measured
// and did not pay (docs/BENCHMARKS.md, "Generated model packages").
// A bad FLBQ_CPU or FLBQ_THREADS is an error here, not a silent default.
func Load(blob []byte, want []Layer) (*Model, error) {
	if err := backend.EnvError(); err != nil {
		return nil, err
	}
	f, err := safetensors.Parse(blob)
	if err != nil {
		return nil, fmt.Errorf("weight blob: %w", err)
	}
	var meta Meta
	if err := json.Unmarshal([]byte(f.Metadata[MetaKey]), &meta); err != nil {
		return nil, fmt.Errorf("weight blob: metadata %q: %v", MetaKey, err)
	}
	if meta.Format != Format {
		return nil, fmt.Errorf("weight blob: format %q is not %q", meta.Format, Format)
	}
	if err := sameLayers(meta.Layers, want); err != nil {
		return nil, fmt.Errorf("weight blob does not match the generated code: %w", err)
	}
	qlin := map[string]*kernels.QLinear{}
	heads := map[string][]float32{} // dequantized head weights by source name
	drop := map[string]bool{}       // blob-only tensors the model builders don't know
	for i := range meta.Layers {
		l := &meta.Layers[i]
		m, err := matrix(f, l)
		if err != nil {
			return nil, err
		}
		q, err := kernels.NewQLinear(m, nil)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", l.Name, err)
		}
		qlin[l.Name] = q
		for _, n := range []string{QWeight(l.Name), QScale(l.Name), QZero(l.Name), QTileBits(l.Name)} {
			drop[n] = true
		}
	}
	for _, h := range meta.Heads {
		w, err := head(f, h)
		if err != nil {
			return nil, err
		}
		heads[h.Name] = w
		for _, n := range []string{Q8(h.Name), Q8Scale(h.Name), Q8Zero(h.Name)} {
			drop[n] = true
		}
	}
	src, err := rebuild(f, heads, drop, meta)
	if err != nil {
		return nil, err
	}
	m, err := model.FromFile(src)
	if err != nil {
		return nil, fmt.Errorf("weight blob: %w", err)
	}
	for name, q := range qlin {
		lin := m.Linear(name)
		if lin == nil {
			return nil, fmt.Errorf("weight blob: %s is not a quantizable layer of the model", name)
		}
		q.Bias = lin.Bias
		if err := m.SetLinearImpl(name, op{q}); err != nil {
			return nil, err
		}
		lin.Weight = nil // the kernels hold the packed weights
	}
	d, err := maskrcnn.New(m)
	if err != nil {
		return nil, fmt.Errorf("weight blob: %w", err)
	}
	if len(meta.Heads) > 0 {
		if err := integerHeads(d, f, meta); err != nil {
			return nil, err
		}
	}
	return &Model{Detector: d, Meta: meta, Linear: qlin}, nil
}

// integerHeads puts every head layer of d on the integer kernels, from
// the blob's codes of its weight; the blob must hold exactly those layers.
func integerHeads(d *maskrcnn.Detector, f *safetensors.File, meta Meta) error {
	stored := map[string]HeadTensor{}
	for _, h := range meta.Heads {
		stored[h.Name] = h
	}
	for _, l := range d.HeadLayers() {
		name := l.WeightName()
		h, ok := stored[name]
		if !ok {
			return fmt.Errorf("weight blob: head layer %s: tensor %q is not stored at %d bits", l.Name(), Q8(name), meta.HeadBits)
		}
		delete(stored, name)
		if h.Axis != l.Axis() {
			return fmt.Errorf("weight blob: tensor %q: output channels on axis %d, the layer has them on axis %d", Q8(name), h.Axis, l.Axis())
		}
		if l.PerLabel {
			continue
		}
		q, err := HeadKernel(f, l, meta.HeadBits)
		if err != nil {
			return err
		}
		g := l.GEMM()
		g.Impl = op{q}
		g.Weight = nil // the kernel holds the packed weights
		l.SetWeight(nil)
	}
	for name := range stored {
		return fmt.Errorf("weight blob: tensor %q is no pyramid or head layer of the model", Q8(name))
	}
	return nil
}

// HeadKernel builds the integer kernel of one head layer from the blob's
// codes of its weight (in the torch layout, per-output-channel scales and
// zero points), reordered to the layer's channels-last product.
func HeadKernel(f *safetensors.File, l maskrcnn.HeadLayer, bits int) (*kernels.QLinear, error) {
	name := l.WeightName()
	info, ok := f.Info(Q8(name))
	if !ok {
		return nil, fmt.Errorf("weight blob: tensor %q: missing", Q8(name))
	}
	if !sameShape(info.Shape, l.Shape()) || info.DType != safetensors.U8 {
		return nil, fmt.Errorf("weight blob: tensor %q: %s %v, the layer wants U8 %v", Q8(name), info.DType, info.Shape, l.Shape())
	}
	q, err := f.Raw(Q8(name))
	if err != nil {
		return nil, fmt.Errorf("weight blob: %w", err)
	}
	out := l.Shape()[l.Axis()]
	scale, err := floats(f, Q8Scale(name), out)
	if err != nil {
		return nil, err
	}
	zero64, _, err := f.Int64(Q8Zero(name))
	if err != nil || len(zero64) != out {
		return nil, fmt.Errorf("weight blob: tensor %q: want %d zero points (%v)", Q8Zero(name), out, err)
	}
	if order := l.GEMMOrder(); order != nil {
		q = nn.Reorder(q, order)
	}
	g := l.GEMM()
	rs, rz := make([]float32, g.Out), make([]int32, g.Out)
	for r := range rs {
		c := l.GEMMChannel(r)
		rs[r], rz[r] = scale[c], int32(zero64[c])
	}
	m, err := qformat.Pack(q, g.Out, g.In, qformat.UniformBits(g.Out, bits), rs, rz)
	if err != nil {
		return nil, fmt.Errorf("weight blob: tensor %q: %w", Q8(name), err)
	}
	k, err := kernels.NewQLinear(m, g.Bias)
	if err != nil {
		return nil, fmt.Errorf("weight blob: tensor %q: %w", Q8(name), err)
	}
	return k, nil
}

func sameShape(a, b []int) bool {
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

// LoadPacked loads a packed model file (a generated package's weights.bin,
// or any blob flbq generate writes) without a compiled layer table: the
// blob's own table is used, and every layer is still checked against the
// model its config describes.
func LoadPacked(blob []byte) (*Model, error) {
	meta, err := PackedMeta(blob)
	if err != nil {
		return nil, err
	}
	return Load(blob, meta.Layers)
}

// PackedMeta returns the quantized-model metadata of blob; an error says
// why it is not a packed model (e.g. a plain fp32 model file).
func PackedMeta(blob []byte) (*Meta, error) {
	f, err := safetensors.Parse(blob)
	if err != nil {
		return nil, fmt.Errorf("weight blob: %w", err)
	}
	js, ok := f.Metadata[MetaKey]
	if !ok {
		return nil, fmt.Errorf("weight blob: no %q metadata: not a packed model", MetaKey)
	}
	var meta Meta
	if err := json.Unmarshal([]byte(js), &meta); err != nil {
		return nil, fmt.Errorf("weight blob: metadata %q: %v", MetaKey, err)
	}
	if meta.Format != Format {
		return nil, fmt.Errorf("weight blob: format %q is not %q", meta.Format, Format)
	}
	return &meta, nil
}

// op adapts a QLinear to nn.LinearOp; shapes were checked at load, so an
// error here is a bug in the caller's shapes.
type op struct{ q *kernels.QLinear }

func (o op) Forward(dst, x []float32, M int) {
	if err := o.q.Forward(dst, x, M); err != nil {
		panic(err)
	}
}

func sameLayers(got, want []Layer) error {
	if len(got) != len(want) {
		return fmt.Errorf("%d quantized layers, the package declares %d", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.N != w.N || g.K != w.K || len(g.Runs) != len(w.Runs) {
			return fmt.Errorf("layer %d: blob has %s (N=%d K=%d, %d runs), package declares %s (N=%d K=%d, %d runs)",
				i, g.Name, g.N, g.K, len(g.Runs), w.Name, w.N, w.K, len(w.Runs))
		}
		for j := range g.Runs {
			if g.Runs[j] != w.Runs[j] {
				return fmt.Errorf("layer %s: run %d is %+v in the blob, %+v in the package", g.Name, j, g.Runs[j], w.Runs[j])
			}
		}
	}
	return nil
}

// matrix rebuilds a packed weight matrix from the blob and checks it
// against the layer's shape and runs.
func matrix(f *safetensors.File, l *Layer) (*qformat.Matrix, error) {
	tb, err := l.TileBits()
	if err != nil {
		return nil, err
	}
	data, err := f.Raw(QWeight(l.Name))
	if err != nil {
		return nil, fmt.Errorf("weight blob: %w", err)
	}
	stored, err := f.Raw(QTileBits(l.Name))
	if err != nil {
		return nil, fmt.Errorf("weight blob: %w", err)
	}
	if !bytes.Equal(stored, tb) {
		return nil, fmt.Errorf("weight blob: tensor %q: tile bit-widths differ from the layer's runs", QTileBits(l.Name))
	}
	np := qformat.PaddedN(l.N)
	scale, err := floats(f, QScale(l.Name), np)
	if err != nil {
		return nil, err
	}
	zero64, _, err := f.Int64(QZero(l.Name))
	if err != nil {
		return nil, fmt.Errorf("weight blob: %w", err)
	}
	if len(zero64) != np {
		return nil, fmt.Errorf("weight blob: tensor %q has %d values, want %d", QZero(l.Name), len(zero64), np)
	}
	m := &qformat.Matrix{N: l.N, K: l.K, KP: qformat.PaddedK(l.K), TileBits: tb, Scale: scale, Zero: make([]int32, np)}
	for i, z := range zero64 {
		m.Zero[i] = int32(z)
	}
	m.TileOff = make([]int, len(tb)+1)
	for t, b := range tb {
		m.TileOff[t+1] = m.TileOff[t] + qformat.TileBytes(int(b), m.KP)
	}
	if len(data) != m.TileOff[len(tb)] {
		return nil, fmt.Errorf("weight blob: tensor %q has %d bytes, the layer's tiles need %d", QWeight(l.Name), len(data), m.TileOff[len(tb)])
	}
	m.Data = qformat.AlignedBytes(len(data))
	copy(m.Data, data)
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("weight blob: layer %s: %w", l.Name, err)
	}
	return m, nil
}

func floats(f *safetensors.File, name string, n int) ([]float32, error) {
	v, _, err := f.Float32(name)
	if err != nil {
		return nil, fmt.Errorf("weight blob: %w", err)
	}
	if len(v) != n {
		return nil, fmt.Errorf("weight blob: tensor %q has %d values, want %d", name, len(v), n)
	}
	return v, nil
}

// head dequantizes one 8-bit head tensor.
func head(f *safetensors.File, h HeadTensor) ([]float32, error) {
	info, ok := f.Info(Q8(h.Name))
	if !ok {
		return nil, fmt.Errorf("weight blob: tensor %q: missing", Q8(h.Name))
	}
	q, err := f.Raw(Q8(h.Name))
	if err != nil {
		return nil, fmt.Errorf("weight blob: %w", err)
	}
	if h.Axis < 0 || h.Axis >= len(info.Shape) {
		return nil, fmt.Errorf("weight blob: tensor %q: axis %d for shape %v", h.Name, h.Axis, info.Shape)
	}
	out := info.Shape[h.Axis]
	scale, err := floats(f, Q8Scale(h.Name), out)
	if err != nil {
		return nil, err
	}
	zero64, _, err := f.Int64(Q8Zero(h.Name))
	if err != nil || len(zero64) != out {
		return nil, fmt.Errorf("weight blob: tensor %q: want %d zero points (%v)", Q8Zero(h.Name), out, err)
	}
	zero := make([]int32, out)
	for i, z := range zero64 {
		zero[i] = int32(z)
	}
	w, err := qformat.DequantizeTensor(q, info.Shape, h.Axis, scale, zero)
	if err != nil {
		return nil, fmt.Errorf("weight blob: tensor %q: %w", h.Name, err)
	}
	return w, nil
}

// rebuild makes the model file the builders read, under the source names:
// the blob's pass-through tensors, the dequantized heads, and for every
// quantized layer a zero placeholder weight of the right shape (the model
// builder checks it; the kernels never read it).
func rebuild(f *safetensors.File, heads map[string][]float32, drop map[string]bool, meta Meta) (*safetensors.File, error) {
	var ts []safetensors.Tensor
	for _, n := range f.Names() {
		if drop[n] {
			continue
		}
		info, _ := f.Info(n)
		raw, err := f.Raw(n)
		if err != nil {
			return nil, fmt.Errorf("weight blob: %w", err)
		}
		ts = append(ts, safetensors.Tensor{Name: n, DType: info.DType, Shape: info.Shape, Raw: raw})
	}
	for _, l := range meta.Layers {
		name, ok := meta.WeightNames[l.Name]
		if !ok {
			return nil, fmt.Errorf("weight blob: metadata names no source weight for layer %s", l.Name)
		}
		// F16 zeros: half the bytes of F32 for a tensor nothing reads.
		ts = append(ts, safetensors.Tensor{Name: name, DType: safetensors.F16, Shape: []int{l.N, l.K}, Raw: make([]byte, 2*l.N*l.K)})
	}
	for _, h := range meta.Heads {
		info, _ := f.Info(Q8(h.Name))
		ts = append(ts, safetensors.Tensor{Name: h.Name, Shape: info.Shape, F32: heads[h.Name]})
	}
	size := 1 << 16 // header
	for _, t := range ts {
		size += len(t.Raw) + 4*len(t.F32) + 128
	}
	var buf bytes.Buffer
	buf.Grow(size) // one allocation instead of repeated doubling (most of New's time)
	if err := safetensors.Encode(&buf, ts, map[string]string{safetensors.ConfigKey: f.Metadata[safetensors.ConfigKey]}); err != nil {
		return nil, fmt.Errorf("weight blob: %w", err)
	}
	return safetensors.Parse(buf.Bytes())
}
