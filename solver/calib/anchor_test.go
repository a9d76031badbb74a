package calib

import (
	"context"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/flbq/flbq/runtime/qformat"
)

// TestAnchorImages checks fast mode's anchor subset: anchors are measured
// on the first batches only, energies on every batch. Fast curves are
// linear in the mean energies for a fixed sensitivity, so with batch 0 as
// the anchor batch, the curves of batches {0, 1, 2} follow from the runs
// on {0, 1}, {0, 2} and {0} alone: 6·D₀₁₂ = 4·D₀₁ + 4·D₀₂ − 2·D₀
// (without the structural channel weights, which depend on every image).
func TestAnchorImages(t *testing.T) {
	m := fixture(t, "vitdet_tiny")
	batches := MakeBatches(calibInputs(t, m, 6, false), 2)
	if len(batches) != 3 {
		t.Fatalf("%d batches, want 3", len(batches))
	}
	run := func(bs []Batch, anchorImages int) ([][]float64, *State) {
		st := NewState()
		res, err := Measure(context.Background(), m.Backbone, bs, Options{Mode: Fast, GroupSize: 32, Rule: qformat.MinMax, AnchorImages: anchorImages, Unweighted: true}, st)
		if err != nil {
			t.Fatal(err)
		}
		var d [][]float64
		for _, u := range res.Curves.Units {
			d = append(d, u.Distortion)
		}
		return d, st
	}
	all, _ := run(batches, 0)
	if same, _ := run(batches, 6); !reflect.DeepEqual(same, all) {
		t.Error("anchors on all 6 images differ from AnchorImages 0")
	}
	d012, st := run(batches, 2)
	for k := range st.Done {
		if k[:2] == "a/" && k[2] != '0' {
			t.Errorf("anchor task %s outside the anchor batch 0", k)
		}
	}
	if reflect.DeepEqual(d012, all) {
		t.Error("anchors on 2 images gave the curves of anchors on all 6")
	}
	d01, _ := run(batches[:2], 2)
	d02, _ := run([]Batch{batches[0], batches[2]}, 2)
	d0, _ := run(batches[:1], 0)
	var worst float64
	for u := range d012 {
		for b := range d012[u] {
			want := (4*d01[u][b] + 4*d02[u][b] - 2*d0[u][b]) / 6
			if r := math.Abs(d012[u][b]-want) / math.Max(want, 1e-30); r > worst {
				worst = r
			}
		}
	}
	if worst > 1e-9 {
		t.Errorf("anchor-subset curves off the energy-linearity reference by %.3g (relative)", worst)
	}
	if _, n := AnchorBatches(batches, 3); n != 4 {
		t.Errorf("3 anchor images rounded up to %d, want 4 (whole batches of 2)", n)
	}
}

// TestAnchorImagesCheckpoints checks that batches without anchor tasks
// still save their progress on the checkpoint interval.
func TestAnchorImagesCheckpoints(t *testing.T) {
	m := fixture(t, "vitdet_tiny")
	batches := MakeBatches(calibInputs(t, m, 6, false), 2)
	var last *State
	o := Options{Mode: Fast, GroupSize: 32, Rule: qformat.MinMax, AnchorImages: 2, SaveEvery: time.Nanosecond,
		Save: func(s *State) error { last = s; return nil }}
	if _, err := Measure(context.Background(), m.Backbone, batches, o, NewState()); err != nil {
		t.Fatal(err)
	}
	if last == nil || !last.Done[statsKey(2)] {
		t.Error("the energies of the last batch (no anchors) were never saved")
	}
}
