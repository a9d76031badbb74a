package allocate

import (
	"fmt"
	"math"
	"time"
)

// DefaultDPMaxBytes bounds the DP's choice table (one byte per unit and
// budget cell).
const DefaultDPMaxBytes int64 = 2 << 30

// ErrTooLarge reports a problem whose exact DP would exceed the memory limit.
type ErrTooLarge struct {
	Units, Cells int64
	Bytes, Limit int64
}

func (e *ErrTooLarge) Error() string {
	return fmt.Sprintf("the exact DP needs a %.2f GiB table (%d units × %d budget cells), above the %.2f GiB limit: use the lg solver, a coarser granularity, or raise the limit",
		float64(e.Bytes)/(1<<30), e.Units, e.Cells, float64(e.Limit)/(1<<30))
}

// SolveDP runs F-LBQ-DP, the exact optimum of min Σ D_u(b_u) subject to
// Σ n_u·b_u ≤ ⌊T·Σ n_u⌋.
//
// Exactness: every cost n_u·b_u is a multiple of g = gcd(n_u), so measuring
// the budget in units of g loses nothing — a knapsack over integer cells with
// no rounding. Costs count from each unit's cheapest allowed width, so the
// table only spans the budget above the floor. Ties go to fewer bits.
func SolveDP(p *Problem, maxBytes int64) (*Result, error) {
	start := time.Now()
	n := len(p.choices)
	g := int64(0)
	for _, w := range p.weights {
		g = gcd(g, w)
	}
	var base int64
	extra := make([][]int64, n) // extra[u][i]: cells above the cheapest choice
	var maxExtra int64
	for u, chs := range p.choices {
		base += p.weights[u] * int64(chs[0].bits)
		extra[u] = make([]int64, len(chs))
		for i, ch := range chs {
			extra[u][i] = p.weights[u] / g * int64(ch.bits-chs[0].bits)
		}
		maxExtra += extra[u][len(chs)-1]
	}
	capacity := (p.budget - base) / g // ≥ 0: NewProblem checked feasibility
	if capacity > maxExtra {
		capacity = maxExtra // the whole budget cannot be spent
	}

	// Row u of the choice table spans cells 0..min(capacity, Σ_{v≤u} maxExtra_v):
	// beyond that a prefix can't spend more, so its optimum stays flat.
	rowLen := make([]int64, n)
	var prefix, cells int64
	for u := range extra {
		prefix += extra[u][len(extra[u])-1]
		rowLen[u] = min(capacity, prefix) + 1
		cells += rowLen[u]
	}
	if cells > maxBytes {
		return nil, &ErrTooLarge{Units: int64(n), Cells: capacity + 1, Bytes: cells, Limit: maxBytes}
	}
	table := make([]uint8, cells)
	rows := make([][]uint8, n)
	off := int64(0)
	for u := range rows {
		rows[u] = table[off : off+rowLen[u] : off+rowLen[u]]
		off += rowLen[u]
	}

	// f[c] = least distortion of the units so far within c extra cells.
	f := make([]float64, capacity+1)
	next := make([]float64, capacity+1)
	prevLen := int64(1) // before any unit only cell 0 is distinct (f ≡ 0)
	for u, chs := range p.choices {
		m := rowLen[u]
		row := rows[u]
		cur := next[:m]
		for c := range cur {
			cur[c] = math.Inf(1)
		}
		for i, ch := range chs {
			e := extra[u][i]
			if e >= m {
				break
			}
			d := ch.dist
			split := min(m, e+prevLen)
			src := f[:split-e]
			dst, dstRow := cur[e:split], row[e:split]
			for c, fv := range src {
				if v := fv + d; v < dst[c] {
					dst[c] = v
					dstRow[c] = uint8(i)
				}
			}
			// Cells beyond the previous row's span reuse its last value.
			if v := f[prevLen-1] + d; split < m {
				for c := split; c < m; c++ {
					if v < cur[c] {
						cur[c] = v
						row[c] = uint8(i)
					}
				}
			}
		}
		f, next = next, f
		prevLen = m
	}

	bits := make([]int, n)
	c := capacity
	for u := n - 1; u >= 0; u-- {
		if c >= rowLen[u] {
			c = rowLen[u] - 1
		}
		i := rows[u][c]
		bits[u] = p.choices[u][i].bits
		c -= extra[u][i]
	}
	r := &Result{Solver: "dp", Bits: bits, Meta: map[string]any{}}
	p.evaluate(r)
	r.Meta["cell_weights"] = g
	r.Meta["cells"] = capacity + 1
	r.Meta["table_bytes"] = cells
	r.Meta["seconds"] = time.Since(start).Seconds()
	return r, nil
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
