package allocate

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/flbq/flbq/solver"
)

// randomCurves makes a small problem: unit sizes share a random factor so
// the DP's gcd is non-trivial, and curves are decreasing, noisy,
// non-convex or non-monotone depending on kind.
func randomCurves(rng *rand.Rand, units int, bits []int) *solver.Curves {
	c := &solver.Curves{Bits: bits}
	f := int64(1 + rng.IntN(5))
	for u := 0; u < units; u++ {
		ch := 1 + rng.IntN(4)
		k := int64(1+rng.IntN(6)) * f
		d := make([]float64, len(bits))
		base := math.Exp(rng.NormFloat64() * 2)
		for i, b := range bits {
			d[i] = base * math.Pow(4, -float64(b))
		}
		switch rng.IntN(3) {
		case 1: // noisy: may be non-monotone
			for i := range d {
				d[i] *= 1 + 0.8*rng.Float64()
			}
		case 2: // arbitrary values: non-convex, non-monotone
			for i := range d {
				d[i] = rng.Float64() * base
			}
		}
		c.Units = append(c.Units, solver.CurveUnit{
			UnitID:     solver.UnitID{Layer: fmt.Sprintf("blocks.%d.fc", u%3), Group: u},
			Channels:   [2]int{0, ch},
			Weights:    int64(ch) * k,
			Distortion: d,
		})
	}
	return c
}

// bruteForce enumerates every allocation within the allowed choices.
func bruteForce(p *Problem) (best []int, bestD float64, ok bool) {
	n := len(p.choices)
	idx := make([]int, n)
	bits := make([]int, n)
	bestD = math.Inf(1)
	for {
		var cost int64
		var d float64
		for u, i := range idx {
			bits[u] = p.choices[u][i].bits
			cost += p.weights[u] * int64(bits[u])
			d += p.choices[u][i].dist
		}
		if cost <= p.budget && (!ok || d < bestD-1e-15*math.Abs(bestD)) {
			best, bestD, ok = append([]int(nil), bits...), d, true
		}
		u := 0
		for ; u < n; u++ {
			idx[u]++
			if idx[u] < len(p.choices[u]) {
				break
			}
			idx[u] = 0
		}
		if u == n {
			return
		}
	}
}

func TestDPMatchesBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	allBits := []int{1, 2, 3, 4, 5, 6, 7, 8}
	checked := 0
	for trial := 0; trial < 400; trial++ {
		units := 1 + rng.IntN(6)
		bits := allBits
		if trial%3 == 0 {
			bits = []int{2, 3, 4, 6, 8}
		}
		c := randomCurves(rng, units, bits)
		o := Options{TargetBits: 1 + 7*rng.Float64(), MinBitsBelow: 1 + rng.IntN(3)}
		if trial%5 == 0 {
			o.Overrides = []Override{{Pattern: "blocks.0.*", Bits: bits[rng.IntN(len(bits))]}}
		}
		p, err := NewProblem(c, o)
		if err != nil {
			if errors.Is(err, ErrInfeasible) || o.Overrides != nil {
				continue // e.g. the override exceeds the budget or matches nothing
			}
			t.Fatalf("trial %d: %v", trial, err)
		}
		want, wantD, ok := bruteForce(p)
		if !ok {
			t.Fatalf("trial %d: brute force found no feasible allocation for a feasible problem", trial)
		}
		r, err := SolveDP(p, DefaultDPMaxBytes)
		if err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		if p.cost(r.Bits) > p.budget {
			t.Fatalf("trial %d: DP exceeds the budget: cost %d > %d", trial, p.cost(r.Bits), p.budget)
		}
		if math.Abs(r.Distortion-wantD) > 1e-9*math.Max(1, wantD) {
			t.Fatalf("trial %d: DP distortion %v (bits %v), brute force %v (bits %v)", trial, r.Distortion, r.Bits, wantD, want)
		}
		checkRespects(t, p, r)
		for _, s := range []func() *Result{func() *Result { return SolveLG(p, DefaultEpsilon) }, func() *Result { return SolveLGFill(p, DefaultEpsilon) }} {
			lg := s()
			checkRespects(t, p, lg)
			if lg.AvgBits > o.TargetBits+DefaultEpsilon+1e-12 {
				t.Fatalf("trial %d: %s avg bits %v exceeds target %v by more than ε", trial, lg.Solver, lg.AvgBits, o.TargetBits)
			}
			// Within the budget, nothing beats the exact optimum.
			if p.cost(lg.Bits) <= p.budget && lg.Distortion < wantD-1e-9*math.Max(1, wantD) {
				t.Fatalf("trial %d: %s distortion %v beats the optimum %v", trial, lg.Solver, lg.Distortion, wantD)
			}
			if lg.Solver == "lg" {
				// A Lagrangian minimiser is exactly optimal for the budget
				// it spends: the DP at that budget can do no better.
				at := *p
				at.budget = p.cost(lg.Bits)
				if opt := mustDP(t, &at); math.Abs(opt.Distortion-lg.Distortion) > 1e-9*math.Max(1, opt.Distortion) {
					t.Fatalf("trial %d: LG distortion %v (bits %v) is not optimal for its own cost %d: DP gives %v (bits %v)",
						trial, lg.Distortion, lg.Bits, at.budget, opt.Distortion, opt.Bits)
				}
			}
			if lg.Meta["tolerance_met"] == false && p.cost(lg.Bits) > p.budget {
				t.Fatalf("trial %d: %s missed the tolerance and exceeds the budget", trial, lg.Solver)
			}
		}
		checked++
	}
	if checked < 250 {
		t.Fatalf("only %d of 400 random problems were checked", checked)
	}
}

// checkRespects verifies floor, ceiling and overrides.
func checkRespects(t *testing.T, p *Problem, r *Result) {
	t.Helper()
	for u, b := range r.Bits {
		id := p.Curves.Units[u].UnitID
		ov := -1
		for i, o := range p.Opts.Overrides {
			if o.matches(id) {
				ov = i
			}
		}
		switch {
		case ov >= 0 && b != p.Opts.Overrides[ov].Bits:
			t.Fatalf("%s: unit %s has %d bits, override says %d", r.Solver, id, b, p.Opts.Overrides[ov].Bits)
		case ov < 0 && (b < p.Floor || b > solver.MaxBits):
			t.Fatalf("%s: unit %s has %d bits, outside floor %d..8", r.Solver, id, b, p.Floor)
		}
	}
}

func TestLGHandCase(t *testing.T) {
	// Two equal-size units; unit a gains 100 from 2→3 bits, unit b gains 1.
	// With room for one extra bit on one unit, any sane solver upgrades a.
	c := &solver.Curves{Bits: []int{2, 3}, Units: []solver.CurveUnit{
		{UnitID: solver.UnitID{Layer: "a"}, Channels: [2]int{0, 1}, Weights: 10, Distortion: []float64{101, 1}},
		{UnitID: solver.UnitID{Layer: "b"}, Channels: [2]int{0, 1}, Weights: 10, Distortion: []float64{2, 1}},
	}}
	p, err := NewProblem(c, Options{TargetBits: 2.5, MinBitsBelow: 1})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*Result{SolveLG(p, 0.02), mustDP(t, p)} {
		if r.Bits[0] != 3 || r.Bits[1] != 2 || r.AvgBits != 2.5 || r.Distortion != 3 {
			t.Fatalf("%s: bits %v avg %v distortion %v; want [3 2], 2.5, 3", r.Solver, r.Bits, r.AvgBits, r.Distortion)
		}
	}
}

func TestLGReportsUnreachableTolerance(t *testing.T) {
	// One unit: avg bits can only be 2 or 4, so target 3 ± 0.02 is
	// unreachable; LG must return the 2-bit allocation within budget.
	c := &solver.Curves{Bits: []int{2, 4}, Units: []solver.CurveUnit{
		{UnitID: solver.UnitID{Layer: "a"}, Channels: [2]int{0, 1}, Weights: 8, Distortion: []float64{5, 1}},
	}}
	p, err := NewProblem(c, Options{TargetBits: 3, MinBitsBelow: 2})
	if err != nil {
		t.Fatal(err)
	}
	r := SolveLG(p, 0.02)
	if r.Bits[0] != 2 || r.Meta["tolerance_met"] != false {
		t.Fatalf("bits %v tolerance_met %v; want [2] and false", r.Bits, r.Meta["tolerance_met"])
	}
}

func mustDP(t *testing.T, p *Problem) *Result {
	t.Helper()
	r, err := SolveDP(p, DefaultDPMaxBytes)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDPBudgetMonotone(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	c := randomCurves(rng, 40, []int{1, 2, 3, 4, 5, 6, 7, 8})
	prev := math.Inf(1)
	for tb := 1.0; tb <= 8; tb += 0.125 {
		p, err := NewProblem(c, Options{TargetBits: tb, MinBitsBelow: 8})
		if err != nil {
			t.Fatal(err)
		}
		r := mustDP(t, p)
		if r.Distortion > prev+1e-12 {
			t.Fatalf("target %v: distortion %v rose above %v at a smaller budget", tb, r.Distortion, prev)
		}
		if r.AvgBits > tb+1e-12 {
			t.Fatalf("target %v: avg bits %v over budget", tb, r.AvgBits)
		}
		prev = r.Distortion
	}
}

func TestProblemErrors(t *testing.T) {
	c := &solver.Curves{Bits: []int{2, 4, 8}, Units: []solver.CurveUnit{
		{UnitID: solver.UnitID{Layer: "patch_embed.proj"}, Channels: [2]int{0, 1}, Weights: 8, Distortion: []float64{5, 1, 0}},
		{UnitID: solver.UnitID{Layer: "blocks.0.fc1"}, Channels: [2]int{0, 1}, Weights: 8, Distortion: []float64{5, 1, 0}},
	}}
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{TargetBits: 0.5}, "target bits 0.5 is outside 1..8"},
		{Options{TargetBits: 9}, "target bits 9 is outside 1..8"},
		{Options{TargetBits: 4, MinBitsBelow: -1}, "min bits below -1"},
		{Options{TargetBits: 4, Overrides: []Override{{"nope.*", 8}}}, "override nope.*=8 matches no unit"},
		{Options{TargetBits: 4, Overrides: []Override{{"patch_embed.*", 3}}}, "no measured distortion at 3 bits"},
		{Options{TargetBits: 3, MinBitsBelow: 2, Overrides: []Override{{"*", 8}}}, "infeasible budget"},
		{Options{TargetBits: 8, MinBitsBelow: 0, Overrides: nil}, ""},
		{Options{TargetBits: 7, MinBitsBelow: 0}, ""},
	} {
		_, err := NewProblem(c, tc.o)
		if tc.want == "" {
			if tc.o.TargetBits == 7 {
				// floor 7 leaves only 8 measured bits: 8 > 7 budget.
				if err == nil || !errors.Is(err, ErrInfeasible) {
					t.Errorf("%+v: got %v, want infeasible", tc.o, err)
				}
			} else if err != nil {
				t.Errorf("%+v: %v", tc.o, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: error %v, want it to contain %q", tc.o, err, tc.want)
		}
	}
}

func TestOverrideGroupPattern(t *testing.T) {
	c := &solver.Curves{Bits: []int{2, 4, 8}, Units: []solver.CurveUnit{
		{UnitID: solver.UnitID{Layer: "fc", Group: 0}, Channels: [2]int{0, 1}, Weights: 8, Distortion: []float64{5, 1, 0}},
		{UnitID: solver.UnitID{Layer: "fc", Group: 1}, Channels: [2]int{1, 2}, Weights: 8, Distortion: []float64{5, 1, 0}},
	}}
	p, err := NewProblem(c, Options{TargetBits: 5, MinBitsBelow: 3, Overrides: []Override{{"fc#1", 2}}})
	if err != nil {
		t.Fatal(err)
	}
	r := mustDP(t, p)
	if r.Bits[1] != 2 || r.Bits[0] != 8 {
		t.Fatalf("bits %v; want group 1 pinned at 2 and group 0 given the rest (8)", r.Bits)
	}
}

func TestParseOverride(t *testing.T) {
	o, err := ParseOverride("backbone.patch_embed*=8")
	if err != nil || o.Pattern != "backbone.patch_embed*" || o.Bits != 8 {
		t.Fatalf("got %+v, %v", o, err)
	}
	for _, bad := range []string{"x", "=8", "x=0", "x=9", "x=a", "[=4"} {
		if _, err := ParseOverride(bad); err == nil {
			t.Errorf("ParseOverride(%q) accepted", bad)
		}
	}
}

func TestDPMemoryLimit(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	c := randomCurves(rng, 50, []int{1, 2, 3, 4, 5, 6, 7, 8})
	p, err := NewProblem(c, Options{TargetBits: 4, MinBitsBelow: 3})
	if err != nil {
		t.Fatal(err)
	}
	_, err = SolveDP(p, 10)
	var tl *ErrTooLarge
	if !errors.As(err, &tl) || !strings.Contains(err.Error(), "use the lg solver") {
		t.Fatalf("error %v; want ErrTooLarge suggesting lg", err)
	}
}

func TestUnknownSolver(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	p, err := NewProblem(randomCurves(rng, 3, []int{2, 4}), Options{TargetBits: 3, MinBitsBelow: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Solve(p, "greedy", 0.02, DefaultDPMaxBytes); err == nil || !strings.Contains(err.Error(), `unknown solver "greedy"`) {
		t.Fatalf("got %v", err)
	}
}

func TestUniform(t *testing.T) {
	c := &solver.Curves{Bits: []int{2, 3, 4, 8}, Units: []solver.CurveUnit{
		{UnitID: solver.UnitID{Layer: "embed"}, Channels: [2]int{0, 1}, Weights: 10, Distortion: []float64{4, 3, 2, 1}},
		{UnitID: solver.UnitID{Layer: "fc"}, Channels: [2]int{0, 1}, Weights: 30, Distortion: []float64{4, 3, 2, 1}},
	}}
	for _, tc := range []struct {
		target float64
		ovs    []Override
		want   []int
	}{
		{4, nil, []int{4, 4}},
		{3.5, nil, []int{3, 3}},
		// embed pinned at 8 (80 bit·weights) leaves 3.5·40−80 = 60 for fc: 2 bits.
		{3.5, []Override{{"embed", 8}}, []int{8, 2}},
	} {
		p, err := NewProblem(c, Options{TargetBits: tc.target, MinBitsBelow: 2, Overrides: tc.ovs})
		if err != nil {
			t.Fatal(err)
		}
		r, err := SolveUniform(p)
		if err != nil {
			t.Fatal(err)
		}
		if r.Bits[0] != tc.want[0] || r.Bits[1] != tc.want[1] {
			t.Errorf("target %v overrides %v: bits %v, want %v", tc.target, tc.ovs, r.Bits, tc.want)
		}
	}
	// 8-bit embed leaves 60 for fc at target 3.5 — with floor 3 nothing fits.
	p, err := NewProblem(c, Options{TargetBits: 3.5, MinBitsBelow: 1, Overrides: []Override{{"embed", 8}}})
	if err == nil {
		if _, err := SolveUniform(p); err == nil {
			t.Fatal("uniform ignored the budget")
		}
	}
}
