package qmodel_test

import (
	"math"
	"math/rand"
	"testing"

	"github.com/flbq/flbq/generated/shapesswin"
	"github.com/flbq/flbq/generated/tinyswin"
	"github.com/flbq/flbq/runtime/kernels"
	"github.com/flbq/flbq/runtime/qmodel"
)

// The generated entry points must compute exactly what the generic
// kernels.QLinear path computes, on every tier this CPU runs, for row
// counts on both sides of the fused/unpacked and one/many-thread cutoffs.
// The fixture package covers K = 16 (half a padded block) and six row
// counts; the bundled package its 51 real layers at two (one block of
// fused rows, one split across threads).
func TestEntryPointsMatchGenericPath(t *testing.T) {
	tiny, err := tinyswin.New()
	if err != nil {
		t.Fatal(err)
	}
	bundled, err := shapesswin.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, pkg := range []struct {
		m      *qmodel.Model
		layers []qmodel.Layer
		rows   []int
	}{
		{tiny, tinyswin.Layers, []int{1, 7, 16, 17, 300, 1100}},
		{bundled, shapesswin.Layers, []int{5, 300}},
	} {
		entriesMatchGeneric(t, pkg.m, pkg.layers, pkg.rows)
	}
}

func entriesMatchGeneric(t *testing.T, m *qmodel.Model, layers []qmodel.Layer, rows []int) {
	r := rand.New(rand.NewSource(1))
	defer kernels.SetTier("auto")
	for _, tier := range kernels.Tiers() {
		if err := kernels.SetTier(tier); err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			lin := m.Model.Linear(l.Name)
			for _, M := range rows {
				x := make([]float32, M*l.K)
				for i := range x {
					x[i] = float32(r.NormFloat64())
				}
				want := make([]float32, M*l.N)
				got := make([]float32, M*l.N)
				if err := m.SetSpecialised(false); err != nil {
					t.Fatal(err)
				}
				lin.Impl.Forward(want, x, M)
				if err := m.SetSpecialised(true); err != nil {
					t.Fatal(err)
				}
				lin.Impl.Forward(got, x, M)
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("%s, tier %s, M=%d: output %d is %g, the generic path gives %g", l.Name, tier, M, i, got[i], want[i])
					}
				}
			}
		}
	}
}

func TestLoadSpecialisedNeedsEveryEntry(t *testing.T) {
	entries := map[string]qmodel.Entry{}
	for k, v := range tinyswin.Entries {
		entries[k] = v
	}
	delete(entries, tinyswin.Layers[3].Name)
	if _, err := qmodel.LoadSpecialised(nil, tinyswin.Layers, entries); err == nil {
		t.Fatal("missing entry point accepted")
	}
}
