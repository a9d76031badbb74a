package allocate

import (
	"math"
	"time"
)

// DefaultEpsilon is the paper's tolerance on the achieved average bits.
const DefaultEpsilon = 0.02

// LG exponent range: λ = 2^t, t ∈ [LambdaMinExp, LambdaMaxExp].
const (
	LambdaMinExp = -100
	LambdaMaxExp = 0
	lgMaxIters   = 64
)

// The hulls: unit u's lower convex hull in the normalised (cost,
// distortion) plane holds the only bit-widths min_b D(b) + λ·n·b can pick
// for some λ ≥ 0. They are stored flat for speed: hullBits[off[u]:off[u+1]]
// are the hull's bit-widths, ascending, and hullSlopes at the same offsets
// the distortion saved per unit of cost by moving from each point to the
// next (strictly decreasing; the last entry of each unit is unused).
type lgState struct {
	p          *Problem
	off        []int
	hullBits   []uint8
	hullSlopes []float64 // in (D, c) units; divide by maxSlope to normalise
	maxSlope   float64
	// scale converts a normalised λ back to raw units:
	// λ_raw (distortion per weight·bit) = λ · scale.
	scale float64
}

// Normalisation. With c_u(b) = n_u·b / Σn (the unit's share of the average
// bits) and d_u(b) = D_u(b) / S, where S is the steepest hull slope of any
// unit in (D, c) units, every hull slope lies in (0, 1]. So λ = 2^0 puts
// every unit at its cheapest hull point, and λ = 2^-100 takes every step that
// saves more than 2^-100 of the steepest one — all that can matter in float64.
func newLGState(p *Problem) *lgState {
	n := 0
	for _, chs := range p.choices {
		n += len(chs)
	}
	s := &lgState{p: p, off: make([]int, 1, len(p.choices)+1), hullBits: make([]uint8, 0, n), hullSlopes: make([]float64, 0, n)}
	tw := float64(p.totalWeights)
	var idx []int
	for u, chs := range p.choices {
		idx = lowerHull(chs, idx[:0])
		w := float64(p.weights[u]) / tw
		for j, i := range idx {
			s.hullBits = append(s.hullBits, uint8(chs[i].bits))
			slope := 0.0
			if j+1 < len(idx) {
				next := chs[idx[j+1]]
				slope = (chs[i].dist - next.dist) / (w * float64(next.bits-chs[i].bits))
			}
			s.hullSlopes = append(s.hullSlopes, slope)
			if slope > s.maxSlope {
				s.maxSlope = slope
			}
		}
		s.off = append(s.off, len(s.hullBits))
	}
	if s.maxSlope == 0 {
		s.maxSlope = 1 // every curve is flat: any λ picks the cheapest bits
	}
	s.scale = s.maxSlope / tw
	return s
}

// lowerHull appends to idx the indices of the lower convex hull of
// (bits, D(bits)) from the cheapest point to the point of least distortion
// (points beyond it cost more and distort more, so no λ ≥ 0 picks them).
// Non-monotone and non-convex curves are thereby replaced by their convex
// minorant, as the Lagrangian sees them.
func lowerHull(chs []choice, idx []int) []int {
	best := 0
	for i, ch := range chs {
		if ch.dist < chs[best].dist {
			best = i
		}
	}
	idx = append(idx, 0)
	for i := 1; i <= best; i++ {
		if chs[i].dist >= chs[idx[len(idx)-1]].dist {
			continue // no cheaper in distortion than a cheaper point
		}
		for len(idx) >= 2 {
			a, b := chs[idx[len(idx)-2]], chs[idx[len(idx)-1]]
			// Drop b if it lies on or above the segment a→chs[i].
			cross := float64(b.bits-a.bits)*(chs[i].dist-a.dist) - float64(chs[i].bits-a.bits)*(b.dist-a.dist)
			if cross > 0 {
				break
			}
			idx = idx[:len(idx)-1]
		}
		idx = append(idx, i)
	}
	return idx
}

// probe fills bits with the allocation for λ and returns its cost. Each
// unit advances along its hull while the next step saves more than λ, so
// ties go to the lower bit-width.
func (s *lgState) probe(lambda float64, bits []int) int64 {
	lambda *= s.maxSlope // compare against unnormalised slopes
	var c int64
	for u := range bits {
		i, end := s.off[u], s.off[u+1]-1
		for i < end && s.hullSlopes[i] > lambda {
			i++
		}
		bits[u] = int(s.hullBits[i])
		c += s.p.weights[u] * int64(bits[u])
	}
	return c
}

// SolveLG runs F-LBQ-LG: a binary search on t, λ = 2^t, t ∈ [-100, 0],
// until the average bits are within eps of the target. t is searched
// continuously, so every power-of-two grid point the paper probes is covered.
// When the jumps of the step function avg_bits(λ) make the tolerance
// unreachable, it returns the closest allocation within the budget and
// sets Meta["tolerance_met"] = false.
func SolveLG(p *Problem, eps float64) *Result {
	start := time.Now()
	s := newLGState(p)
	tw := float64(p.totalWeights)
	target := p.Opts.TargetBits
	bits := make([]int, len(p.choices))
	best := make([]int, len(p.choices))
	bestT, bestAvg := math.NaN(), -1.0
	met := false
	iters := 0
	lo, hi := float64(LambdaMinExp), float64(LambdaMaxExp)
	try := func(t float64) float64 {
		iters++
		cost := s.probe(math.Exp2(t), bits)
		avg := float64(cost) / tw
		within := math.Abs(avg-target) <= eps
		// Keep the first allocation within tolerance, else the richest
		// one that stays inside the budget.
		if within || (cost <= p.budget && avg > bestAvg) {
			copy(best, bits)
			bestT, bestAvg = t, avg
			met = within
		}
		return avg
	}
	// The end points first: λ = 2^-100 may already fit the budget.
	if avg := try(lo); !met && avg > target {
		try(hi)
		for !met && iters < lgMaxIters && hi-lo > 1e-12 {
			mid := (lo + hi) / 2
			if try(mid) > target {
				lo = mid
			} else {
				hi = mid
			}
		}
	}
	r := &Result{Solver: "lg", Bits: best, Meta: map[string]any{}}
	p.evaluate(r)
	r.Meta["lambda"] = math.Exp2(bestT)
	r.Meta["lambda_exponent"] = bestT
	r.Meta["lambda_raw"] = math.Exp2(bestT) * s.scale
	r.Meta["iterations"] = iters
	r.Meta["epsilon"] = eps
	r.Meta["tolerance_met"] = met
	r.Meta["seconds"] = time.Since(start).Seconds()
	return r
}
