package detection

import (
	"fmt"
	"math"
)

// AnchorGenerator is torchvision.models.detection.anchor_utils.AnchorGenerator:
// level l has len(Sizes[l])·len(AspectRatios[l]) anchors per location.
type AnchorGenerator struct {
	Sizes        [][]float64
	AspectRatios [][]float64
	// Unrounded keeps the base anchors' exact half-sizes, as
	// mmdetection's AnchorGenerator does; torchvision rounds them.
	Unrounded bool
	// Strides fixes each level's stride (mmdetection: 4, 8, 16, 32, 64);
	// nil derives it as torchvision does, padded image // feature size
	// (61 rather than 64 on the extra level of an 800-high image).
	Strides []int
}

// DefaultAnchorGenerator is MaskRCNN's default: sizes 32..512 (one per FPN
// level, five levels) and aspect ratios (0.5, 1, 2) on every level.
func DefaultAnchorGenerator() AnchorGenerator {
	g := AnchorGenerator{}
	for _, s := range []float64{32, 64, 128, 256, 512} {
		g.Sizes = append(g.Sizes, []float64{s})
		g.AspectRatios = append(g.AspectRatios, []float64{0.5, 1.0, 2.0})
	}
	return g
}

// NumAnchorsPerLocation returns the anchors per feature-map location of each level.
func (g AnchorGenerator) NumAnchorsPerLocation() []int {
	out := make([]int, len(g.Sizes))
	for i := range g.Sizes {
		out[i] = len(g.Sizes[i]) * len(g.AspectRatios[i])
	}
	return out
}

// CellAnchors returns the zero-centred base anchors of a level (A×4), as
// generate_anchors: h_ratio = sqrt(ratio), w_ratio = 1/h_ratio,
// ws = w_ratio·size (ratio-major), anchors [-ws,-hs,ws,hs]/2 rounded half
// to even (unless Unrounded).
func (g AnchorGenerator) CellAnchors(level int) ([]float32, error) {
	if level < 0 || level >= len(g.Sizes) || level >= len(g.AspectRatios) {
		return nil, fmt.Errorf("detection: anchor level %d out of range (%d sizes, %d aspect-ratio sets)", level, len(g.Sizes), len(g.AspectRatios))
	}
	sizes, ratios := g.Sizes[level], g.AspectRatios[level]
	out := make([]float32, 0, 4*len(sizes)*len(ratios))
	for _, r := range ratios {
		hr := float32(math.Sqrt(float64(float32(r))))
		wr := 1 / hr
		for _, s := range sizes {
			ws := float32(wr * float32(s))
			hs := float32(hr * float32(s))
			for _, v := range []float32{-ws, -hs, ws, hs} {
				if g.Unrounded {
					out = append(out, v/2)
				} else {
					out = append(out, float32(math.RoundToEven(float64(v/2))))
				}
			}
		}
	}
	return out, nil
}

// Anchors returns one image's anchors for each level, as AnchorGenerator.forward:
// imageH×imageW is the padded batch tensor size, featSizes[l] = (H_l, W_l);
// stride = image // feature (integer division) unless Strides fixes it;
// anchors of level l are
// ordered (y, x, anchor) and number H_l·W_l·A_l.
func (g AnchorGenerator) Anchors(imageH, imageW int, featSizes [][2]int) ([][]float32, error) {
	if len(featSizes) != len(g.Sizes) || len(g.Sizes) != len(g.AspectRatios) {
		return nil, fmt.Errorf("detection: anchor generator has %d size sets and %d aspect-ratio sets for %d feature maps", len(g.Sizes), len(g.AspectRatios), len(featSizes))
	}
	if g.Strides != nil && len(g.Strides) != len(featSizes) {
		return nil, fmt.Errorf("detection: anchor generator has %d strides for %d feature maps", len(g.Strides), len(featSizes))
	}
	out := make([][]float32, len(featSizes))
	for l, fs := range featSizes {
		gh, gw := fs[0], fs[1]
		if gh <= 0 || gw <= 0 || imageH <= 0 || imageW <= 0 {
			return nil, fmt.Errorf("detection: anchors: level %d feature size %dx%d for image %dx%d", l, gh, gw, imageH, imageW)
		}
		sh, sw := imageH/gh, imageW/gw
		if g.Strides != nil {
			sh, sw = g.Strides[l], g.Strides[l]
		}
		base, err := g.CellAnchors(l)
		if err != nil {
			return nil, err
		}
		a := len(base) / 4
		anchors := make([]float32, 0, gh*gw*a*4)
		for y := 0; y < gh; y++ {
			for x := 0; x < gw; x++ {
				fx, fy := float32(x*sw), float32(y*sh)
				for k := 0; k < a; k++ {
					anchors = append(anchors, fx+base[4*k], fy+base[4*k+1], fx+base[4*k+2], fy+base[4*k+3])
				}
			}
		}
		out[l] = anchors
	}
	return out, nil
}
