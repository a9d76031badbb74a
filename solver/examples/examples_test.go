package examples

import (
	"bytes"
	"testing"

	"github.com/flbq/flbq/solver"
	"github.com/flbq/flbq/tools/data/curvesynth"
)

func TestBundledCurvesAreReproducible(t *testing.T) {
	c, err := curvesynth.Curves("swin-t", 32, 1)
	if err != nil {
		t.Fatal(err)
	}
	want, err := solver.MarshalCurves(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(SwinTG32, want) {
		t.Fatal("swin-t-g32.curves.json differs from `flbq curves synth --arch swin-t --group-size 32 --seed 1`: regenerate it")
	}
	if _, err := solver.ParseCurves(SwinTG32); err != nil {
		t.Fatal(err)
	}
}
