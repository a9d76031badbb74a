package detection

import (
	"testing"
)

// CropMasks returns the same masks as full-image pasting, and Trace sees
// every stage in order.
func TestCropMasksMatchFull(t *testing.T) {
	g := loadPipelineGolden(t)
	for _, c := range g.Cases {
		feats, heads, cfg, geo := replayCase(t, &g, c)
		full, err := Run(feats, geo, heads, cfg)
		if err != nil {
			t.Fatal(err)
		}
		var stages []Stage
		cfg.CropMasks = true
		cfg.Trace = func(s Stage) { stages = append(stages, s) }
		crop, err := Run(feats, geo, heads, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if len(stages) != 4 || stages[0] != StageRPN || stages[1] != StageRoIHeads || stages[2] != StageMasks || stages[3] != StageDone {
			t.Errorf("stages %v", stages)
		}
		if crop.Masks != nil || len(crop.MaskCrops) != full.Len() {
			t.Fatalf("%d crops for %d detections", len(crop.MaskCrops), full.Len())
		}
		hw := geo.OrigH * geo.OrigW
		for i, m := range crop.MaskCrops {
			if len(m.Pix) != (m.X1-m.X0)*(m.Y1-m.Y0) {
				t.Fatalf("mask %d: %d pixels for rect %v", i, len(m.Pix), m)
			}
			for p := 0; p < hw; p++ {
				y, x := p/geo.OrigW, p%geo.OrigW
				var v uint8
				if x >= m.X0 && x < m.X1 && y >= m.Y0 && y < m.Y1 {
					v = m.Pix[(y-m.Y0)*(m.X1-m.X0)+x-m.X0]
				}
				if v != full.Masks[i*hw+p] {
					t.Fatalf("mask %d differs at (%d,%d)", i, x, y)
				}
			}
		}
	}
}

func TestPasteMaskRegionOutside(t *testing.T) {
	mask := make([]float32, 4)
	for i := range mask {
		mask[i] = 1
	}
	r, err := PasteMaskRegion(nil, 10, 10, mask, 2, []float32{20, 20, 30, 30}, 1)
	if err != nil || !r.Empty() {
		t.Errorf("box outside the image: %+v, %v", r, err)
	}
	r, err = PasteMaskRegion(nil, 10, 10, mask, 2, []float32{8, 8, 12, 12}, 1)
	// The box expands by (M+2)/M = 2 around its centre (10, 10): 6..14.
	if err != nil || r.X0 != 6 || r.Y0 != 6 || r.X1 != 10 || r.Y1 != 10 || len(r.Probs) != (r.X1-r.X0)*(r.Y1-r.Y0) {
		t.Errorf("box over the corner: %+v, %v", r, err)
	}
	if _, err := PasteMaskRegion(nil, 10, 10, mask, 3, []float32{0, 0, 1, 1}, 1); err == nil {
		t.Error("wrong mask size: no error")
	}
}
