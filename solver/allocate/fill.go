package allocate

import (
	"fmt"
	"time"
)

// SolveLGFill runs F-LBQ-LG and then spends the budget it left unused:
// repeatedly take the upgrade (one unit to any higher allowed width) with
// the largest distortion saved per weight·bit that still fits the budget.
// LG's allocation sits on the convex hull with up to ε of budget to spare;
// the fill turns that slack into lower distortion without ever exceeding
// the budget. If LG ended above the target (allowed by ε), there is nothing
// to spend and the result is LG's.
func SolveLGFill(p *Problem, eps float64) *Result {
	start := time.Now()
	r := SolveLG(p, eps)
	bits := append([]int(nil), r.Bits...)
	left := p.budget - p.cost(bits)
	moves := 0
	for left > 0 {
		bestU, bestB, bestGain := -1, 0, 0.0
		for u, chs := range p.choices {
			cur := p.dist(u, bits[u])
			for _, ch := range chs {
				if ch.bits <= bits[u] {
					continue
				}
				dc := p.weights[u] * int64(ch.bits-bits[u])
				if dc > left {
					break
				}
				if gain := (cur - ch.dist) / float64(dc); gain > bestGain {
					bestU, bestB, bestGain = u, ch.bits, gain
				}
			}
		}
		if bestU < 0 {
			break
		}
		left -= p.weights[bestU] * int64(bestB-bits[bestU])
		bits[bestU] = bestB
		moves++
	}
	out := &Result{Solver: "lg+fill", Bits: bits, Meta: r.Meta}
	p.evaluate(out)
	out.Meta["fill_moves"] = moves
	out.Meta["lg_distortion"] = r.Distortion
	out.Meta["lg_avg_bits"] = r.AvgBits
	out.Meta["seconds"] = time.Since(start).Seconds()
	return out
}

// Solve dispatches by solver name: "lg", "dp", "lg+fill" or "uniform".
func Solve(p *Problem, name string, eps float64, dpMaxBytes int64) (*Result, error) {
	switch name {
	case "lg":
		return SolveLG(p, eps), nil
	case "lg+fill":
		return SolveLGFill(p, eps), nil
	case "dp":
		return SolveDP(p, dpMaxBytes)
	case "uniform":
		return SolveUniform(p)
	}
	return nil, &UnknownSolverError{name}
}

// Solvers lists the solver names Solve accepts.
var Solvers = []string{"lg", "dp", "lg+fill", "uniform"}

// UnknownSolverError names a solver Solve does not know.
type UnknownSolverError struct{ Name string }

func (e *UnknownSolverError) Error() string {
	return fmt.Sprintf("unknown solver %q (want lg, dp, lg+fill or uniform)", e.Name)
}
