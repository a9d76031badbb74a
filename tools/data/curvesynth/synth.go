// Package curvesynth makes realistic synthetic error curves with the true linear
// layer shapes of Swin-T and ViT-B, for tests, benchmarks and the demo.
//
// The model behind the numbers. Quantizing a unit's weights at b bits with a
// min–max uniform quantizer adds noise of variance Δ²/12 per weight, with
// step Δ = range/(2^b − 1). An output channel sums K such noisy products, so
// the output error energy of one channel is ∝ K·range²/(2^b − 1)². The
// backbone-feature distortion of a unit is that energy times a sensitivity:
//
//		D_u(b) = s_layer · e_u · K · (2^b − 1)^-2 · c(b) · (1 + 0.05·ξ) + floor_u·|ξ'|
//
//	  - s_layer: by layer kind (qkv 1.0, attention output 0.6, fc1 0.8, fc2 1.5,
//	    patch-merging reduction 1.2), growing by up to 50% towards the output
//	    (later blocks are closer to the measured features), with a per-layer
//	    log-normal factor (σ = 0.3);
//	  - e_u: the group's weight range, log-normal (σ = 0.5), and one group in
//	    twenty an outlier group eight times wider;
//	  - c(b): extra clipping error at the lowest widths (×3 at 1 bit, ×1.3 at
//	    2 bits), where a min–max grid wastes most levels;
//	  - measurement noise: 5% multiplicative, plus an additive noise floor of
//	    the unit's 8-bit quantization error, so curves flatten and may turn
//	    non-monotone at 7–8 bits, as measured curves do.
//
// Units are channel groups of groupSize output channels (the last group of a
// layer may be smaller), or whole layers when groupSize is 0.
package curvesynth

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/flbq/flbq/solver"
)

// Layer is one quantizable linear layer: its state_dict name and shape.
type Layer struct {
	Name    string
	In, Out int
	Kind    string // qkv, proj, fc1, fc2, reduction
}

// Archs lists the architectures Layers knows.
var Archs = []string{"swin-t", "vit-b"}

// Layers returns the quantizable linear layers of arch in forward order,
// named as in the detector's state_dict.
func Layers(arch string) ([]Layer, error) {
	var ls []Layer
	switch arch {
	case "swin-t":
		// torchvision swin_t: features.{1,3,5,7} are the stages,
		// features.{2,4,6} the patch-merging layers.
		dims, depths := []int{96, 192, 384, 768}, []int{2, 2, 6, 2}
		for s, c := range dims {
			for blk := 0; blk < depths[s]; blk++ {
				p := fmt.Sprintf("backbone.body.%d.%d.", 2*s+1, blk)
				ls = append(ls,
					Layer{p + "attn.qkv", c, 3 * c, "qkv"},
					Layer{p + "attn.proj", c, c, "proj"},
					Layer{p + "mlp.0", c, 4 * c, "fc1"},
					Layer{p + "mlp.3", 4 * c, c, "fc2"})
			}
			if s < 3 {
				ls = append(ls, Layer{fmt.Sprintf("backbone.body.%d.reduction", 2*s+2), 4 * c, 2 * c, "reduction"})
			}
		}
	case "vit-b":
		for blk := 0; blk < 12; blk++ {
			p := fmt.Sprintf("backbone.blocks.%d.", blk)
			ls = append(ls,
				Layer{p + "self_attention.in_proj", 768, 2304, "qkv"},
				Layer{p + "self_attention.out_proj", 768, 768, "proj"},
				Layer{p + "mlp.0", 768, 3072, "fc1"},
				Layer{p + "mlp.3", 3072, 768, "fc2"})
		}
	default:
		return nil, fmt.Errorf("unknown architecture %q (want one of %v)", arch, Archs)
	}
	return ls, nil
}

var kindSensitivity = map[string]float64{"qkv": 1.0, "proj": 0.6, "fc1": 0.8, "fc2": 1.5, "reduction": 1.2}

// Tile is the kernels' output-channel tile: group sizes must be multiples.
const Tile = 16

// Curves makes synthetic curves for arch at bits 1..8. The same arguments
// always give the same curves.
func Curves(arch string, groupSize int, seed uint64) (*solver.Curves, error) {
	ls, err := Layers(arch)
	if err != nil {
		return nil, err
	}
	if groupSize < 0 || groupSize%Tile != 0 {
		return nil, fmt.Errorf("group size %d is not a non-negative multiple of the kernel tile %d (0 means layer granularity)", groupSize, Tile)
	}
	rng := rand.New(rand.NewPCG(seed, 0x666c6271)) // "flbq"
	bits := []int{1, 2, 3, 4, 5, 6, 7, 8}
	c := &solver.Curves{Bits: bits}
	for i, l := range ls {
		depth := float64(i) / float64(len(ls)-1)
		sLayer := kindSensitivity[l.Kind] * (1 + 0.5*depth) * math.Exp(0.3*rng.NormFloat64()) * 1e-6
		gs := groupSize
		if gs == 0 {
			gs = l.Out
		}
		for g, lo := 0, 0; lo < l.Out; g, lo = g+1, lo+gs {
			hi := min(lo+gs, l.Out)
			e := 0.0 // Σ over channels of range² (log-normal ranges)
			for ch := lo; ch < hi; ch++ {
				r := math.Exp(0.5 * rng.NormFloat64())
				if rng.IntN(20) == 0 {
					r *= 8
				}
				e += r * r
			}
			d := make([]float64, len(bits))
			base := sLayer * e * float64(l.In)
			floor := base * quantNoise(8)
			for j, b := range bits {
				d[j] = base*quantNoise(b)*(1+0.05*rng.NormFloat64()) + floor*math.Abs(rng.NormFloat64())
				d[j] = math.Max(d[j], 0)
			}
			c.Units = append(c.Units, solver.CurveUnit{
				UnitID:     solver.UnitID{Layer: l.Name, Group: g},
				Channels:   [2]int{lo, hi},
				Weights:    int64(hi-lo) * int64(l.In),
				Distortion: d,
			})
		}
	}
	c.Meta = map[string]any{
		"source":     "synthetic (tools/data/curvesynth)",
		"arch":       arch,
		"group_size": groupSize,
		"seed":       seed,
		"layers":     len(ls),
	}
	return c, nil
}

// quantNoise is the relative error energy of a b-bit min–max grid, with the
// extra clipping loss of the lowest widths.
func quantNoise(b int) float64 {
	q := 1 / math.Pow(math.Exp2(float64(b))-1, 2)
	switch b {
	case 1:
		q *= 3
	case 2:
		q *= 1.3
	}
	return q
}
