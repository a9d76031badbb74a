package allocate

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// lagrangianAllocations enumerates, independently of the hull code, every
// allocation argmin_b D_u(b) + λ·n_u·b (ties to fewer bits) for λ > 0: the
// choice changes only at pairwise slopes, so probing between them finds all.
func lagrangianAllocations(p *Problem) [][]int {
	var cuts []float64
	for u, chs := range p.choices {
		for i := range chs {
			for j := i + 1; j < len(chs); j++ {
				s := (chs[i].dist - chs[j].dist) / (float64(p.weights[u]) * float64(chs[j].bits-chs[i].bits))
				if s > 0 {
					cuts = append(cuts, s)
				}
			}
		}
	}
	sort.Float64s(cuts)
	probes := []float64{1} // with no positive slope every λ > 0 agrees
	if len(cuts) > 0 {
		probes = probes[:0]
		probes = append(probes, cuts[0]/2, cuts[len(cuts)-1]*2)
	}
	for i := 1; i < len(cuts); i++ {
		if cuts[i] > cuts[i-1]*(1+1e-9) {
			probes = append(probes, math.Sqrt(cuts[i]*cuts[i-1]))
		}
	}
	var out [][]int
	for _, l := range probes {
		bits := make([]int, len(p.choices))
		for u, chs := range p.choices {
			best := 0
			for i, ch := range chs {
				if ch.dist+l*float64(p.weights[u])*float64(ch.bits) < chs[best].dist+l*float64(p.weights[u])*float64(chs[best].bits) {
					best = i
				}
			}
			bits[u] = chs[best].bits
		}
		out = append(out, bits)
	}
	return out
}

// TestLGFindsTheLagrangianPoint checks the search itself: if some λ gives
// an allocation within ε of the target, LG must find one; otherwise it must
// return the richest Lagrangian allocation inside the budget.
func TestLGFindsTheLagrangianPoint(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for trial := 0; trial < 300; trial++ {
		c := randomCurves(rng, 1+rng.IntN(12), []int{1, 2, 3, 4, 5, 6, 7, 8})
		p, err := NewProblem(c, Options{TargetBits: 1 + 7*rng.Float64(), MinBitsBelow: 1 + rng.IntN(3)})
		if err != nil {
			continue
		}
		eps := []float64{0.02, 0.2}[trial%2]
		reachable := false
		richest := -1.0
		for _, bits := range lagrangianAllocations(p) {
			avg := float64(p.cost(bits)) / float64(p.totalWeights)
			if math.Abs(avg-p.Opts.TargetBits) <= eps {
				reachable = true
			}
			if p.cost(bits) <= p.budget {
				richest = math.Max(richest, avg)
			}
		}
		r := SolveLG(p, eps)
		met := r.Meta["tolerance_met"].(bool)
		switch {
		case met != (math.Abs(r.AvgBits-p.Opts.TargetBits) <= eps):
			t.Fatalf("trial %d: tolerance_met=%v but avg %v target %v ε %v", trial, met, r.AvgBits, p.Opts.TargetBits, eps)
		case reachable && !met:
			t.Fatalf("trial %d: a λ reaches the target %v ± %v but LG returned avg %v", trial, p.Opts.TargetBits, eps, r.AvgBits)
		case !reachable && math.Abs(r.AvgBits-richest) > 1e-12:
			t.Fatalf("trial %d: target unreachable; LG avg %v, richest in-budget Lagrangian allocation %v", trial, r.AvgBits, richest)
		}
	}
}
