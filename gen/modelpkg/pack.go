// Package modelpkg generates the Go package of a quantized model: from a
// detector (safetensors) and an allocation (alloc.json) it packs the
// weights into the compact blob runtime/qmodel loads, and emits with
// jennifer the package that embeds it, declares every quantized layer's
// shape and runs of channel-group bit-widths as constants, and returns a
// ready detector bound to the quantized kernels.
package modelpkg

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/runtime/qmodel"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/solver"
)

// HeadBits is the paper's uniform bit-width of the FPN and detection heads.
const HeadBits = 8

// MinHeadBits is the fewest bits --heads intN takes: below it the heads'
// uniform min–max weights lose too much for a detector to be useful.
const MinHeadBits = 4

// Heads is the precision of the pyramid and detection heads in a packed
// model (flag --heads): "intN" (N = 4..8) or "fp32".
type Heads string

const (
	// HeadsInt8: pyramid and head weights at HeadBits bits, uniform with
	// vanilla per-output-channel scales (the paper's protocol; the
	// default), run on the integer kernels (runtime/qmodel). int4..int7
	// store them at fewer bits on the same kernels.
	HeadsInt8 Heads = "int8"
	// HeadsFP32: head weights as in the source model, as deployments that
	// exclude the heads from quantization keep them.
	HeadsFP32 Heads = "fp32"
)

// ParseHeads reads a --heads value ("" is int8).
func ParseHeads(s string) (Heads, error) {
	switch h := Heads(s); {
	case s == "":
		return HeadsInt8, nil
	case h == HeadsFP32:
		return h, nil
	case len(s) == 4 && strings.HasPrefix(s, "int") && s[3] >= '0'+MinHeadBits && s[3] <= '0'+HeadBits:
		return h, nil
	}
	return "", fmt.Errorf("heads %q: want int%d..int%d (pyramid and heads at that many bits on the integer kernels) or fp32", s, MinHeadBits, HeadBits)
}

// Bits is the heads' weight bit-width (32 for fp32).
func (h Heads) Bits() int {
	if h == HeadsFP32 {
		return 32
	}
	if h == "" {
		return HeadBits
	}
	return int(h[3] - '0')
}

// Layers checks the allocation against the model's quantizable layers and
// returns each layer's runs of equal bit-widths, in the model's order.
func Layers(m *model.Model, a *solver.Allocation) ([]qmodel.Layer, error) {
	byLayer := map[string][]solver.AllocUnit{}
	for _, u := range a.Units {
		byLayer[u.Layer] = append(byLayer[u.Layer], u)
	}
	var out []qmodel.Layer
	for _, ref := range m.QuantLayers() {
		units, ok := byLayer[ref.Name]
		if !ok {
			return nil, fmt.Errorf("allocation has no units for layer %s of the model (were the model and the allocation made for different models?)", ref.Name)
		}
		delete(byLayer, ref.Name)
		sort.Slice(units, func(i, j int) bool { return units[i].Channels[0] < units[j].Channels[0] })
		l := qmodel.Layer{Name: ref.Name, N: ref.Out, K: ref.In}
		next := 0
		for _, u := range units {
			lo, hi := u.Channels[0], u.Channels[1]
			switch {
			case lo != next:
				return nil, fmt.Errorf("allocation: layer %s: unit %s covers channels [%d, %d), expected one starting at %d: the units must tile the layer's %d channels", ref.Name, u.UnitID, lo, hi, next, ref.Out)
			case hi > ref.Out:
				return nil, fmt.Errorf("allocation: layer %s: unit %s ends at channel %d, the layer has %d", ref.Name, u.UnitID, hi, ref.Out)
			case u.Weights != int64(hi-lo)*int64(ref.In):
				return nil, fmt.Errorf("allocation: layer %s: unit %s has %d weights, the model's %d×%d channels have %d (different models?)", ref.Name, u.UnitID, u.Weights, hi-lo, ref.In, int64(hi-lo)*int64(ref.In))
			case u.Bits < qformat.MinBits || u.Bits > qformat.MaxBits:
				return nil, fmt.Errorf("allocation: layer %s: unit %s has %d bits, the kernels take %d..%d", ref.Name, u.UnitID, u.Bits, qformat.MinBits, qformat.MaxBits)
			case lo%qformat.TileN != 0:
				return nil, fmt.Errorf("allocation: layer %s: unit %s starts at channel %d, not on a %d-channel kernel tile", ref.Name, u.UnitID, lo, qformat.TileN)
			}
			if n := len(l.Runs); n > 0 && l.Runs[n-1].Bits == u.Bits {
				l.Runs[n-1].Hi = hi
			} else {
				l.Runs = append(l.Runs, qmodel.Run{Lo: lo, Hi: hi, Bits: u.Bits})
			}
			next = hi
		}
		if next != ref.Out {
			return nil, fmt.Errorf("allocation: layer %s: units cover channels [0, %d) of %d", ref.Name, next, ref.Out)
		}
		out = append(out, l)
	}
	for name := range byLayer {
		return nil, fmt.Errorf("allocation: layer %s is not a quantizable layer of the model", name)
	}
	return out, nil
}

// Pack builds the weight blob: quantized backbone layers packed for the
// kernels (scale rule rule), head weights at HeadBits bits (heads int8) or
// as in the source (fp32), every other tensor as in the source file.
func Pack(src *safetensors.File, a *solver.Allocation, rule qformat.Rule, heads Heads) ([]byte, []qmodel.Layer, error) {
	heads, err := ParseHeads(string(heads))
	if err != nil {
		return nil, nil, err
	}
	m, err := model.FromFile(src)
	if err != nil {
		return nil, nil, err
	}
	det, err := maskrcnn.New(m)
	if err != nil {
		return nil, nil, err
	}
	layers, err := Layers(m, a)
	if err != nil {
		return nil, nil, err
	}
	done := map[string]bool{}
	weightNames := map[string]string{}
	var ts []safetensors.Tensor
	for i := range layers {
		l := &layers[i]
		wname, ok := qmodel.WeightName(src, l.Name)
		if !ok {
			return nil, nil, fmt.Errorf("layer %s: no weight tensor", l.Name)
		}
		w, _, err := src.Float32(wname)
		if err != nil {
			return nil, nil, err
		}
		tb, err := l.TileBits()
		if err != nil {
			return nil, nil, err
		}
		mat, err := qformat.QuantizeWeights(w, l.N, l.K, tb, rule)
		if err != nil {
			return nil, nil, fmt.Errorf("layer %s: %w", l.Name, err)
		}
		ts = append(ts,
			safetensors.Tensor{Name: qmodel.QWeight(l.Name), DType: safetensors.U8, Shape: []int{len(mat.Data)}, Raw: mat.Data},
			safetensors.Tensor{Name: qmodel.QScale(l.Name), Shape: []int{len(mat.Scale)}, F32: mat.Scale},
			safetensors.Tensor{Name: qmodel.QZero(l.Name), DType: safetensors.I32, Shape: []int{len(mat.Zero)}, Raw: int32Bytes(mat.Zero)},
			safetensors.Tensor{Name: qmodel.QTileBits(l.Name), DType: safetensors.U8, Shape: []int{len(tb)}, Raw: tb})
		done[wname] = true
		weightNames[l.Name] = wname
	}
	headAxis := map[string]int{} // the pyramid and head weights, by tensor
	for _, l := range det.HeadLayers() {
		headAxis[l.WeightName()] = l.Axis()
	}
	var qheads []qmodel.HeadTensor
	headBits := heads.Bits()
	for _, name := range src.Names() {
		axis, ok := headAxis[name]
		if heads == HeadsFP32 || !ok {
			continue
		}
		h := qmodel.HeadTensor{Name: name, Axis: axis}
		w, shape, err := src.Float32(name)
		if err != nil {
			return nil, nil, err
		}
		q, s, z, err := qformat.QuantizeTensor(w, shape, h.Axis, headBits, qformat.MinMax)
		if err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		ts = append(ts,
			safetensors.Tensor{Name: qmodel.Q8(name), DType: safetensors.U8, Shape: shape, Raw: q},
			safetensors.Tensor{Name: qmodel.Q8Scale(name), Shape: []int{len(s)}, F32: s},
			safetensors.Tensor{Name: qmodel.Q8Zero(name), DType: safetensors.I32, Shape: []int{len(z)}, Raw: int32Bytes(z)})
		qheads = append(qheads, h)
		done[name] = true
	}
	for _, name := range src.Names() {
		if done[name] {
			continue
		}
		info, _ := src.Info(name)
		raw, err := src.Raw(name)
		if err != nil {
			return nil, nil, err
		}
		ts = append(ts, safetensors.Tensor{Name: name, DType: info.DType, Shape: info.Shape, Raw: raw})
	}
	meta, err := json.Marshal(qmodel.Meta{
		Format: qmodel.Format, Solver: a.Solver, TargetBits: a.TargetBits, AvgBits: a.AvgBits,
		Rule: rule.String(), HeadBits: headBits, Layers: layers, Heads: qheads, WeightNames: weightNames,
	})
	if err != nil {
		return nil, nil, err
	}
	var buf bytes.Buffer
	md := map[string]string{safetensors.ConfigKey: src.Metadata[safetensors.ConfigKey], qmodel.MetaKey: string(meta)}
	if err := safetensors.Encode(&buf, ts, md); err != nil {
		return nil, nil, err
	}
	return buf.Bytes(), layers, nil
}

func int32Bytes(v []int32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		u := uint32(x)
		b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
	}
	return b
}
