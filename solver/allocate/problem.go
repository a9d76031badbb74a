// Package allocate chooses a bit-width for every quantization unit under an
// average bit budget: F-LBQ-LG (Lagrangian relaxation with a binary search on
// λ), F-LBQ-DP (exact dynamic programming) and LG+fill (LG followed by a
// greedy spend of the budget LG leaves unused).
//
// The problem: minimise Σ_u D_u(b_u) subject to Σ_u n_u·b_u ≤ T·Σ_u n_u,
// where n_u is the unit's weight count and each b_u ranges over the measured
// bit-widths between the floor ⌈T − k⌉ and 8. Units matched by an override
// are fixed at the override's bit-width and still count in the budget.
package allocate

import (
	"errors"
	"fmt"
	"math"
	"path"
	"strconv"
	"strings"

	"github.com/flbq/flbq/solver"
)

// Options configure a Problem.
type Options struct {
	// TargetBits is the average bit budget per weight, in [1, 8].
	TargetBits float64
	// MinBitsBelow is the floor hyperparameter k: every unit gets at least
	// ⌈TargetBits − k⌉ bits (the paper uses 1 or 2).
	MinBitsBelow int
	// Overrides fix the bits of matching units; the last match wins.
	Overrides []Override
}

// DefaultMinBitsBelow is the paper's floor of two bits below the target.
const DefaultMinBitsBelow = 2

// Override fixes the bit-width of every unit whose layer name matches
// Pattern (path.Match syntax; a pattern containing '#' is matched against
// "layer#group" instead, so single groups can be pinned).
type Override struct {
	Pattern string
	Bits    int
}

func (o Override) String() string { return fmt.Sprintf("%s=%d", o.Pattern, o.Bits) }

// ParseOverride parses "pattern=bits".
func ParseOverride(s string) (Override, error) {
	i := strings.LastIndexByte(s, '=')
	if i <= 0 {
		return Override{}, fmt.Errorf("override %q: want pattern=bits", s)
	}
	b, err := strconv.Atoi(s[i+1:])
	if err != nil || b < solver.MinBits || b > solver.MaxBits {
		return Override{}, fmt.Errorf("override %q: bits must be an integer in %d..%d", s, solver.MinBits, solver.MaxBits)
	}
	if _, err := path.Match(s[:i], ""); err != nil {
		return Override{}, fmt.Errorf("override %q: bad pattern: %v", s, err)
	}
	return Override{Pattern: s[:i], Bits: b}, nil
}

func (o Override) matches(id solver.UnitID) bool {
	name := id.Layer
	if strings.Contains(o.Pattern, "#") {
		name = id.String()
	}
	ok, _ := path.Match(o.Pattern, name)
	return ok
}

// choice is one allowed bit-width of a unit with its distortion.
type choice struct {
	bits int
	dist float64
}

// Problem is a validated allocation problem, ready for any solver.
type Problem struct {
	Curves *solver.Curves
	Opts   Options
	// Floor is the smallest bit-width a non-overridden unit may take.
	Floor int
	// choices[u] lists unit u's allowed bit-widths, ascending.
	choices [][]choice
	weights []int64
	fixed   []bool
	// totalWeights = Σ n_u; budget = ⌊T·Σ n_u⌋ in weight·bits.
	totalWeights int64
	budget       int64
}

// ErrInfeasible reports a budget that the floor and overrides already exceed.
var ErrInfeasible = errors.New("infeasible budget")

// NewProblem validates the options against the curves.
func NewProblem(c *solver.Curves, o Options) (*Problem, error) {
	if !(o.TargetBits >= solver.MinBits && o.TargetBits <= solver.MaxBits) {
		return nil, fmt.Errorf("target bits %v is outside %d..%d", o.TargetBits, solver.MinBits, solver.MaxBits)
	}
	if o.MinBitsBelow < 0 || o.MinBitsBelow > solver.MaxBits {
		return nil, fmt.Errorf("min bits below %d is outside 0..%d", o.MinBitsBelow, solver.MaxBits)
	}
	if len(c.Units) == 0 {
		return nil, errors.New("curves have no units")
	}
	p := &Problem{
		Curves:  c,
		Opts:    o,
		Floor:   max(solver.MinBits, int(math.Ceil(o.TargetBits-float64(o.MinBitsBelow)-1e-9))),
		choices: make([][]choice, len(c.Units)),
		weights: make([]int64, len(c.Units)),
		fixed:   make([]bool, len(c.Units)),
	}
	used := make([]bool, len(o.Overrides))
	var minCost int64
	for u, cu := range c.Units {
		p.weights[u] = cu.Weights
		p.totalWeights += cu.Weights
		ov := -1
		for i, o := range o.Overrides {
			if o.matches(cu.UnitID) {
				ov = i
			}
		}
		if ov >= 0 {
			used[ov] = true
			b := o.Overrides[ov].Bits
			d, ok := c.Lookup(u, b)
			if !ok {
				return nil, fmt.Errorf("override %s: unit %s has no measured distortion at %d bits (curves have bits %v)", o.Overrides[ov], cu.UnitID, b, c.Bits)
			}
			p.choices[u] = []choice{{b, d}}
			p.fixed[u] = true
		} else {
			for i, b := range c.Bits {
				if b >= p.Floor {
					p.choices[u] = append(p.choices[u], choice{b, cu.Distortion[i]})
				}
			}
			if len(p.choices[u]) == 0 {
				return nil, fmt.Errorf("unit %s: no measured bit-width at or above the floor of %d bits (curves have bits %v)", cu.UnitID, p.Floor, c.Bits)
			}
		}
		minCost += cu.Weights * int64(p.choices[u][0].bits)
	}
	for i, ok := range used {
		if !ok {
			return nil, fmt.Errorf("override %s matches no unit", o.Overrides[i])
		}
	}
	// The budget in weight·bits; the tiny relative slack keeps a target
	// that a decimal like 3.3 cannot represent exactly from losing a bit.
	p.budget = int64(math.Floor(o.TargetBits * float64(p.totalWeights) * (1 + 1e-12)))
	if minCost > p.budget {
		return nil, fmt.Errorf("%w: the floor of %d bits and the overrides already need %.4f average bits, above the target %v",
			ErrInfeasible, p.Floor, float64(minCost)/float64(p.totalWeights), o.TargetBits)
	}
	return p, nil
}

// Result is a solver's allocation: bits per unit, in the curves' order.
type Result struct {
	Solver     string
	Bits       []int
	AvgBits    float64
	Distortion float64
	// Meta holds solver details (lambda, iterations, ...) and timings.
	Meta map[string]any
}

// evaluate fills AvgBits and Distortion from Bits.
func (p *Problem) evaluate(r *Result) {
	var wb int64
	r.Distortion = 0
	for u, b := range r.Bits {
		wb += p.weights[u] * int64(b)
		r.Distortion += p.dist(u, b)
	}
	r.AvgBits = float64(wb) / float64(p.totalWeights)
}

func (p *Problem) dist(u, b int) float64 {
	for _, ch := range p.choices[u] {
		if ch.bits == b {
			return ch.dist
		}
	}
	return math.NaN()
}

// cost returns Σ n_u·b_u in weight·bits.
func (p *Problem) cost(bits []int) int64 {
	var s int64
	for u, b := range bits {
		s += p.weights[u] * int64(b)
	}
	return s
}

// Allocation turns a result into the alloc.json content.
func (p *Problem) Allocation(r *Result) *solver.Allocation {
	a := &solver.Allocation{
		Solver:              r.Solver,
		TargetBits:          p.Opts.TargetBits,
		AvgBits:             r.AvgBits,
		PredictedDistortion: r.Distortion,
		Units:               make([]solver.AllocUnit, len(r.Bits)),
		Meta:                map[string]any{},
	}
	var channels int64
	for u, b := range r.Bits {
		cu := p.Curves.Units[u]
		a.Units[u] = solver.AllocUnit{UnitID: cu.UnitID, Channels: cu.Channels, Weights: cu.Weights, Bits: b}
		channels += int64(cu.Channels[1] - cu.Channels[0])
	}
	for k, v := range r.Meta {
		a.Meta[k] = v
	}
	a.Meta["floor"] = p.Floor
	a.Meta["min_bits_below"] = p.Opts.MinBitsBelow
	ovs := make([]string, len(p.Opts.Overrides))
	for i, o := range p.Opts.Overrides {
		ovs[i] = o.String()
	}
	a.Meta["overrides"] = ovs
	// Per output channel the packed format stores an fp32 scale and an
	// fp32 zero point: 64 bits that avg_bits does not include.
	a.Meta["overhead_bits"] = float64(channels) * OverheadBitsPerChannel / float64(p.totalWeights)
	return a
}

// OverheadBitsPerChannel is the storage of one output channel's scale and
// zero point (two float32) that avg_bits leaves out.
const OverheadBitsPerChannel = 64
