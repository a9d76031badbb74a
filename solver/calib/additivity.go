package calib

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/tensor"
	"github.com/flbq/flbq/solver"
	"github.com/flbq/flbq/solver/allocate"
)

// AllocationOverrides builds the fake-quant ops of a whole allocation: every
// listed unit's channels at its bits, one LayerOp per layer.
func (z *Quantizer) AllocationOverrides(bb model.Backbone, units []solver.AllocUnit) (nn.Overrides, error) {
	byName := map[string]*nn.Linear{}
	for _, l := range bb.QuantLayers() {
		byName[l.Name] = l.Layer
	}
	groups := map[string][]GroupBits{}
	var order []string
	for _, u := range units {
		l := byName[u.Layer]
		if l == nil {
			return nil, fmt.Errorf("unit %s: the model has no quantizable layer %q", u.UnitID, u.Layer)
		}
		if u.Weights != int64(u.Channels[1]-u.Channels[0])*int64(l.In) {
			return nil, fmt.Errorf("unit %s: %d weights do not match channels [%d, %d) of a layer with %d inputs", u.UnitID, u.Weights, u.Channels[0], u.Channels[1], l.In)
		}
		if _, ok := groups[u.Layer]; !ok {
			order = append(order, u.Layer)
		}
		groups[u.Layer] = append(groups[u.Layer], GroupBits{u.Channels[0], u.Channels[1], u.Bits})
	}
	ov := nn.Overrides{}
	for _, name := range order {
		op, err := z.Op(byName[name], groups[name])
		if err != nil {
			return nil, err
		}
		ov[name] = op
	}
	return ov, nil
}

// MeasureOverrides returns, for each set of overrides, the distortion
// mean over images of ‖F(x) − F_ov(x)‖²/numel on the batches. Each batch is
// run once in fp32 (caching block inputs) and every set restarts from the
// first block it changes; sets run concurrently on backend.Threads()
// goroutines.
func MeasureOverrides(ctx context.Context, bb model.Backbone, batches []Batch, ovs []nn.Overrides, progress func()) ([]float64, error) {
	blk := blockOf(bb)
	start := make([]int, len(ovs))
	for i, ov := range ovs {
		start[i] = len(bb.Blocks()) - 1
		for name := range ov {
			b, ok := blk[name]
			if !ok {
				return nil, fmt.Errorf("no quantizable layer %q", name)
			}
			start[i] = min(start[i], b)
		}
	}
	workers := backend.Threads()
	sums := make([]float64, len(ovs))
	nImages := 0
	for _, b := range batches {
		nImages += len(b.Images)
		inputs := make([]*tensor.Tensor, len(bb.Blocks()))
		ref := bb.ForwardFrom(0, b.X, nil, nil, inputs)
		var next atomic.Int64
		var wg sync.WaitGroup
		var stop atomic.Bool
		for w := 0; w < min(workers, len(ovs)); w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1) - 1)
					if i >= len(ovs) || stop.Load() {
						return
					}
					if ctx.Err() != nil {
						stop.Store(true)
						return
					}
					out := bb.ForwardFrom(start[i], inputs[start[i]], ref, ovs[i], nil)
					for _, v := range featureSSE(ref, out, len(b.Images)) {
						sums[i] += v
					}
					if progress != nil {
						progress()
					}
				}
			}()
		}
		wg.Wait()
		if stop.Load() || ctx.Err() != nil {
			return nil, ErrInterrupted
		}
	}
	for i := range sums {
		sums[i] /= float64(nImages)
	}
	return sums, nil
}

// AdditivityOptions configure CheckAdditivity.
type AdditivityOptions struct {
	// Random is the number of random allocations (default 12): each draws a
	// bit range [lo, hi] ⊂ 1..8 (1 ≤ hi − lo ≤ 3) and gives every unit a uniform bit-width in it.
	Random int
	// Budgets are the average bit-widths of the solver allocations
	// (default 2, 3, 4, 5, 6).
	Budgets []float64
	// Solver names the allocation solver (default "dp", falling back to
	// "lg" when DP's table would be too large).
	Solver string
	Seed   uint64
	// Progress, if set, is called with allocations measured and the total.
	Progress func(done, total int)
}

// AdditivityPoint is one allocation's predicted and measured distortion.
type AdditivityPoint struct {
	Name      string  `json:"name"` // "random-3", "dp@4"
	AvgBits   float64 `json:"avg_bits"`
	Predicted float64 `json:"predicted"` // Σ_u D_u(b_u) from the curves
	Measured  float64 `json:"measured"`  // all units quantized at once
}

// AdditivityReport summarises how well Σ_u D_u(b_u) predicts the real
// distortion of whole allocations: the assumption F-LBQ rests on.
type AdditivityReport struct {
	Points   []AdditivityPoint `json:"points"`
	Pearson  float64           `json:"pearson"`
	Spearman float64           `json:"spearman"`
	// Pearson of log predicted vs log measured (distortions span decades).
	PearsonLog float64 `json:"pearson_log"`
	// Ratio measured/predicted: median, min and max over the allocations.
	RatioMedian float64 `json:"ratio_median"`
	RatioMin    float64 `json:"ratio_min"`
	RatioMax    float64 `json:"ratio_max"`
}

// CheckAdditivity quantizes whole allocations at once (random ones and
// solver outputs at several budgets) and compares the measured distortion
// with the curves' prediction. The curves must cover every quantizable
// layer of bb (merge shards first).
func CheckAdditivity(ctx context.Context, bb model.Backbone, batches []Batch, c *solver.Curves, z *Quantizer, o AdditivityOptions) (*AdditivityReport, error) {
	if o.Random == 0 {
		o.Random = 12
	}
	if len(o.Budgets) == 0 {
		o.Budgets = []float64{2, 3, 4, 5, 6}
	}
	if o.Solver == "" {
		o.Solver = "dp"
	}
	have := map[string]bool{}
	for _, u := range c.Units {
		have[u.Layer] = true
	}
	for _, l := range bb.QuantLayers() {
		if !have[l.Name] {
			return nil, fmt.Errorf("the curves have no units of layer %s: additivity needs curves of the whole backbone (merge the shards first)", l.Name)
		}
	}
	var points []AdditivityPoint
	var allocs [][]solver.AllocUnit
	rng := rand.New(rand.NewPCG(o.Seed, 0xadd))
	for k := 0; k < o.Random; k++ {
		lo := 1 + rng.IntN(7)
		hi := min(8, lo+1+rng.IntN(3))
		units := make([]solver.AllocUnit, len(c.Units))
		for i, cu := range c.Units {
			b := lo + rng.IntN(hi-lo+1)
			if _, ok := c.Lookup(i, b); !ok {
				b = nearestBits(c.Bits, b)
			}
			units[i] = solver.AllocUnit{UnitID: cu.UnitID, Channels: cu.Channels, Weights: cu.Weights, Bits: b}
		}
		allocs = append(allocs, units)
		points = append(points, AdditivityPoint{Name: fmt.Sprintf("random-%d (bits %d..%d)", k, lo, hi)})
	}
	for _, t := range o.Budgets {
		p, err := allocate.NewProblem(c, allocate.Options{TargetBits: t, MinBitsBelow: allocate.DefaultMinBitsBelow})
		if err != nil {
			return nil, fmt.Errorf("budget %g: %w", t, err)
		}
		name := o.Solver
		r, err := allocate.Solve(p, name, 0.02, 2<<30)
		var tooLarge *allocate.ErrTooLarge
		if errors.As(err, &tooLarge) {
			name = "lg"
			r, err = allocate.Solve(p, name, 0.02, 0)
		}
		if err != nil {
			return nil, fmt.Errorf("budget %g: %w", t, err)
		}
		allocs = append(allocs, p.Allocation(r).Units)
		points = append(points, AdditivityPoint{Name: fmt.Sprintf("%s@%g", name, t)})
	}
	ovs := make([]nn.Overrides, len(allocs))
	for i, units := range allocs {
		ov, err := z.AllocationOverrides(bb, units)
		if err != nil {
			return nil, err
		}
		ovs[i] = ov
		points[i].AvgBits = solver.ComputeAvgBits(units)
		for j, u := range units {
			d, _ := c.Lookup(j, u.Bits)
			points[i].Predicted += d
		}
	}
	var done atomic.Int64
	total := len(ovs) * len(batches)
	prog := func() {
		if o.Progress != nil {
			o.Progress(int(done.Add(1)), total)
		}
	}
	meas, err := MeasureOverrides(ctx, bb, batches, ovs, prog)
	if err != nil {
		return nil, err
	}
	r := &AdditivityReport{Points: points}
	var pred, got, lp, lg, ratio []float64
	for i := range points {
		points[i].Measured = meas[i]
		pred = append(pred, points[i].Predicted)
		got = append(got, meas[i])
		lp = append(lp, math.Log(math.Max(points[i].Predicted, 1e-300)))
		lg = append(lg, math.Log(math.Max(meas[i], 1e-300)))
		if points[i].Predicted > 0 {
			ratio = append(ratio, meas[i]/points[i].Predicted)
		}
	}
	r.Pearson, r.Spearman, r.PearsonLog = Pearson(pred, got), Spearman(pred, got), Pearson(lp, lg)
	r.RatioMedian = median(ratio)
	if len(ratio) > 0 {
		sort.Float64s(ratio)
		r.RatioMin, r.RatioMax = ratio[0], ratio[len(ratio)-1]
	}
	return r, nil
}

func nearestBits(bits []int, b int) int {
	best := bits[0]
	for _, x := range bits {
		if abs(x-b) < abs(best-b) {
			best = x
		}
	}
	return best
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
