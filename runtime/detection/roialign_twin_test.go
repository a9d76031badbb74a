package detection

import (
	"math"
	"math/rand/v2"
	"testing"
)

// roiAlignPerChannel is the plain channel-by-channel loop of torchvision's
// roi_align_kernel.cpp (the form RoIAlign had before it went channel-last):
// the twin its bit-identity is checked against.
func roiAlignPerChannel(feat FeatureMap, box []float32, p RoIAlignParams) []float32 {
	ph, pw := p.PooledH, p.PooledW
	var offset float32
	if p.Aligned {
		offset = 0.5
	}
	startW := float32(box[0]*p.SpatialScale) - offset
	startH := float32(box[1]*p.SpatialScale) - offset
	roiW := float32(box[2]*p.SpatialScale) - offset - startW
	roiH := float32(box[3]*p.SpatialScale) - offset - startH
	if !p.Aligned {
		roiW, roiH = fmax(roiW, 1), fmax(roiH, 1)
	}
	binH, binW := roiH/float32(ph), roiW/float32(pw)
	gridH, gridW := p.SamplingRatio, p.SamplingRatio
	if p.SamplingRatio <= 0 {
		gridH = int(float32(math.Ceil(float64(roiH / float32(ph)))))
		gridW = int(float32(math.Ceil(float64(roiW / float32(pw)))))
	}
	count := float32(max(gridH*gridW, 1))
	hw := feat.H * feat.W
	out := make([]float32, feat.C*ph*pw)
	for c := 0; c < feat.C; c++ {
		in := feat.Data[c*hw : (c+1)*hw]
		for y := 0; y < ph; y++ {
			for x := 0; x < pw; x++ {
				var v float32
				for iy := 0; iy < gridH; iy++ {
					yy := float32(startH+float32(float32(y)*binH)) + float32(float32(float32(iy)+.5)*binH)/float32(gridH)
					for ix := 0; ix < gridW; ix++ {
						xx := float32(startW+float32(float32(x)*binW)) + float32(float32(float32(ix)+.5)*binW)/float32(gridW)
						q := bilinearPreCalc(yy, xx, feat.H, feat.W)
						t := float32(q.w1*in[q.p1]) + float32(q.w2*in[q.p2])
						t = t + float32(q.w3*in[q.p3])
						t = t + float32(q.w4*in[q.p4])
						v += t
					}
				}
				out[c*ph*pw+y*pw+x] = v / count
			}
		}
	}
	return out
}

func TestRoIAlignMatchesPerChannelTwin(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for trial := 0; trial < 40; trial++ {
		f := FeatureMap{C: 1 + rng.IntN(70), H: 1 + rng.IntN(30), W: 1 + rng.IntN(30)}
		f.Data = make([]float32, f.C*f.H*f.W)
		for i := range f.Data {
			f.Data[i] = float32(rng.NormFloat64())
		}
		p := RoIAlignParams{PooledH: 1 + rng.IntN(14), PooledW: 1 + rng.IntN(14), SpatialScale: []float32{1, 0.5, 0.25, 0.125}[rng.IntN(4)],
			SamplingRatio: rng.IntN(4), Aligned: rng.IntN(2) == 0}
		var boxes []float32
		for r := 0; r < 1+rng.IntN(6); r++ {
			// Boxes partly or wholly outside the map too.
			x0 := float32(rng.Float64()*1.4-0.2) * float32(f.W) / p.SpatialScale
			y0 := float32(rng.Float64()*1.4-0.2) * float32(f.H) / p.SpatialScale
			boxes = append(boxes, x0, y0, x0+float32(rng.Float64())*float32(f.W)/p.SpatialScale, y0+float32(rng.Float64())*float32(f.H)/p.SpatialScale)
		}
		got, err := RoIAlign(f, boxes, p)
		if err != nil {
			t.Fatal(err)
		}
		per := f.C * p.PooledH * p.PooledW
		for r := 0; r < len(boxes)/4; r++ {
			want := roiAlignPerChannel(f, boxes[4*r:4*r+4], p)
			for i, w := range want {
				if math.Float32bits(got[r*per+i]) != math.Float32bits(w) {
					t.Fatalf("trial %d box %d value %d: %v, per-channel twin %v (params %+v, map %dx%dx%d)", trial, r, i, got[r*per+i], w, p, f.C, f.H, f.W)
				}
			}
		}
	}
}
