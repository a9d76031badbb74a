package allocate

import (
	"fmt"
	"testing"

	"github.com/flbq/flbq/tools/data/curvesynth"
)

// On realistic curves with thousands of units the average-bit steps are
// fine, so LG must meet the tolerance, and the ordering DP ≤ LG+fill ≤ LG
// must hold.
func TestSynthLargeProblems(t *testing.T) {
	for _, arch := range curvesynth.Archs {
		c, err := curvesynth.Curves(arch, 32, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, target := range []float64{2, 3, 4.5, 6} {
			p, err := NewProblem(c, Options{TargetBits: target, MinBitsBelow: 2})
			if err != nil {
				t.Fatal(err)
			}
			lg := SolveLG(p, DefaultEpsilon)
			fill := SolveLGFill(p, DefaultEpsilon)
			dp := mustDP(t, p)
			if lg.Meta["tolerance_met"] != true {
				t.Errorf("%s @%v: LG missed the tolerance: avg %v", arch, target, lg.AvgBits)
			}
			if fill.Distortion > lg.Distortion || p.cost(fill.Bits) > max(p.budget, p.cost(lg.Bits)) {
				t.Errorf("%s @%v: fill %v (avg %v) is worse than LG %v or over budget", arch, target, fill.Distortion, fill.AvgBits, lg.Distortion)
			}
			if dp.Distortion > fill.Distortion*(1+1e-12) && p.cost(fill.Bits) <= p.budget {
				t.Errorf("%s @%v: DP %v worse than LG+fill %v", arch, target, dp.Distortion, fill.Distortion)
			}
		}
	}
}

var benchCurves = map[string]int{"layer": 0, "g16": 16, "g32": 32, "g64": 64}

func benchSolver(b *testing.B, solve func(*Problem) *Result) {
	for _, arch := range curvesynth.Archs {
		for _, gran := range []string{"layer", "g16", "g32", "g64"} {
			c, err := curvesynth.Curves(arch, benchCurves[gran], 1)
			if err != nil {
				b.Fatal(err)
			}
			p, err := NewProblem(c, Options{TargetBits: 4, MinBitsBelow: 2})
			if err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("%s/%s/units=%d", arch, gran, len(c.Units)), func(b *testing.B) {
				b.ReportAllocs()
				var r *Result
				for b.Loop() {
					r = solve(p)
				}
				b.ReportMetric(r.Distortion, "distortion")
				b.ReportMetric(r.AvgBits, "avgbits")
			})
		}
	}
}

func BenchmarkLG(b *testing.B) {
	benchSolver(b, func(p *Problem) *Result { return SolveLG(p, DefaultEpsilon) })
}

func BenchmarkLGFill(b *testing.B) {
	benchSolver(b, func(p *Problem) *Result { return SolveLGFill(p, DefaultEpsilon) })
}

func BenchmarkDP(b *testing.B) {
	benchSolver(b, func(p *Problem) *Result {
		r, err := SolveDP(p, DefaultDPMaxBytes)
		if err != nil {
			b.Fatal(err)
		}
		return r
	})
}
