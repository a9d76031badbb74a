package allocate

import (
	"fmt"
	"time"
)

// SolveUniform is the baseline F-LBQ is compared with: every unit that is
// not overridden gets the same width — the widest measured one (at or
// above the floor) whose allocation fits the budget. For an integer target
// with no overrides that is the target itself; for T = 2.5 it is 2 bits.
func SolveUniform(p *Problem) (*Result, error) {
	start := time.Now()
	bits := make([]int, len(p.choices))
	for w := len(p.Curves.Bits) - 1; w >= 0; w-- {
		b := p.Curves.Bits[w]
		if b < p.Floor {
			break
		}
		for u, chs := range p.choices {
			bits[u] = chs[0].bits // overridden units have one choice
			if !p.fixed[u] {
				bits[u] = b
			}
		}
		if p.cost(bits) <= p.budget {
			r := &Result{Solver: "uniform", Bits: bits, Meta: map[string]any{"uniform_bits": b}}
			p.evaluate(r)
			r.Meta["seconds"] = time.Since(start).Seconds()
			return r, nil
		}
	}
	return nil, fmt.Errorf("%w: no uniform width between the floor of %d bits and 8 fits the target %v with the overrides",
		ErrInfeasible, p.Floor, p.Opts.TargetBits)
}
