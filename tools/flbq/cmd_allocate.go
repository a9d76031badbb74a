package main

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/flbq/flbq/runtime/atomicfile"
	"github.com/flbq/flbq/solver"
	"github.com/flbq/flbq/solver/allocate"
	"github.com/flbq/flbq/solver/plots"
)

func init() {
	register(&cli.Command{
		Name:  "allocate",
		Usage: "choose a bit-width per unit under an average-bit budget (F-LBQ-LG or F-LBQ-DP)",
		Description: `Reads error curves (curves.json) and writes an allocation (alloc.json).

   --solver lg       F-LBQ-LG: binary search of λ = 2^t, t ∈ [-100, 0], until the
                     average bits are within --epsilon of the target.
   --solver dp       F-LBQ-DP: the exact optimum under the budget.
   --solver lg+fill  LG, then the unused budget spent greedily.
   --solver uniform  the baseline: one width for every unit, the widest that fits.

   With --sweep lo:hi:step it solves every target in the range with every
   solver and writes the rate–distortion table as CSV to --out instead.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "curves", Usage: "error curves `FILE` (flbq.curves/v1)", Required: true},
			&cli.Float64Flag{Name: "target-bits", Usage: "average bits per weight, 1..8"},
			&cli.StringFlag{Name: "solver", Value: "lg", Usage: "lg, dp, lg+fill or uniform"},
			&cli.IntFlag{Name: "min-bits-below", Value: allocate.DefaultMinBitsBelow, Usage: "floor: every unit gets at least ⌈target − K⌉ bits"},
			&cli.Float64Flag{Name: "epsilon", Value: allocate.DefaultEpsilon, Usage: "LG tolerance on the achieved average bits"},
			&cli.StringSliceFlag{Name: "override", Usage: "fix bits of matching layers, `PATTERN=BITS` (path.Match; 'layer#group' pins a group; repeatable, last match wins)"},
			&cli.Float64Flag{Name: "dp-max-gib", Value: float64(allocate.DefaultDPMaxBytes) / (1 << 30), Usage: "memory limit of the DP's table in GiB"},
			&cli.StringFlag{Name: "sweep", Usage: "solve targets `LO:HI:STEP` with every solver; --out gets a CSV table"},
			&cli.StringFlag{Name: "plot", Usage: "with --sweep, also draw distortion against bits to `FILE` (.png, .svg, .pdf)"},
			&cli.StringFlag{Name: "out", Usage: "output `FILE`: alloc.json, or the CSV with --sweep", Required: true},
		},
		Action: runAllocate,
	})
}

func runAllocate(c *cli.Context) error {
	curves, err := solver.ReadCurvesFile(c.String("curves"))
	if err != nil {
		return err
	}
	var ovs []allocate.Override
	for _, s := range c.StringSlice("override") {
		o, err := allocate.ParseOverride(s)
		if err != nil {
			return err
		}
		ovs = append(ovs, o)
	}
	maxBytes := int64(c.Float64("dp-max-gib") * (1 << 30))
	eps := c.Float64("epsilon")
	if !(eps > 0) {
		return fmt.Errorf("--epsilon %v must be positive", eps)
	}
	opts := allocate.Options{MinBitsBelow: c.Int("min-bits-below"), Overrides: ovs}
	if s := c.String("sweep"); s != "" {
		if c.IsSet("target-bits") || c.IsSet("solver") {
			return errors.New("--sweep solves every target with every solver: drop --target-bits and --solver")
		}
		targets, err := parseSweep(s)
		if err != nil {
			return err
		}
		return sweep(c.App.Writer, curves, opts, targets, eps, maxBytes, c.String("out"), c.String("plot"))
	}
	if c.IsSet("plot") {
		return errors.New("--plot goes with --sweep")
	}
	if !c.IsSet("target-bits") {
		return errors.New("--target-bits is required (or use --sweep)")
	}
	opts.TargetBits = c.Float64("target-bits")
	p, err := allocate.NewProblem(curves, opts)
	if err != nil {
		return err
	}
	r, err := allocate.Solve(p, c.String("solver"), eps, maxBytes)
	if err != nil {
		return err
	}
	if err := solver.WriteAllocFile(c.String("out"), p.Allocation(r)); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "%s\n", describe(p, r))
	fmt.Fprintf(c.App.Writer, "wrote %s (%d units)\n", c.String("out"), len(r.Bits))
	return nil
}

// describe is the one-line summary of a result.
func describe(p *allocate.Problem, r *allocate.Result) string {
	s := fmt.Sprintf("%-7s avg %.4f bits (target %g, floor %d)  predicted distortion %.6g  %s",
		r.Solver, r.AvgBits, p.Opts.TargetBits, p.Floor, r.Distortion, fmtSeconds(r.Meta["seconds"]))
	if it, ok := r.Meta["iterations"]; ok {
		s += fmt.Sprintf("  λ=2^%.3f, %v iterations", r.Meta["lambda_exponent"], it)
		if r.Meta["tolerance_met"] == false {
			s += fmt.Sprintf(" (ε=%g not reachable: closest within budget)", r.Meta["epsilon"])
		}
	}
	return s
}

func fmtSeconds(v any) string {
	s, _ := v.(float64)
	return time.Duration(s * float64(time.Second)).Round(time.Microsecond).String()
}

// parseSweep parses "lo:hi:step" into the list of targets.
func parseSweep(s string) ([]float64, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return nil, fmt.Errorf("--sweep %q: want LO:HI:STEP", s)
	}
	var v [3]float64
	for i, p := range parts {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil {
			return nil, fmt.Errorf("--sweep %q: %q is not a number", s, p)
		}
		v[i] = f
	}
	lo, hi, step := v[0], v[1], v[2]
	if !(lo >= solver.MinBits && hi <= solver.MaxBits && lo <= hi && step > 0) || (hi-lo)/step > 1000 {
		return nil, fmt.Errorf("--sweep %q: want 1 ≤ LO ≤ HI ≤ 8 and STEP > 0 giving at most 1000 targets", s)
	}
	var out []float64
	for i := 0; ; i++ {
		t := lo + float64(i)*step
		if t > hi+1e-9 {
			break
		}
		out = append(out, t)
	}
	return out, nil
}

// sweep solves every target with every solver and writes the table.
func sweep(w io.Writer, curves *solver.Curves, opts allocate.Options, targets []float64, eps float64, maxBytes int64, out, plotPath string) error {
	var rows strings.Builder
	var pts []plots.Point
	rows.WriteString("target_bits,solver,avg_bits,predicted_distortion,seconds,tolerance_met\n")
	for _, t := range targets {
		o := opts
		o.TargetBits = t
		p, err := allocate.NewProblem(curves, o)
		if err != nil {
			return fmt.Errorf("target %g: %w", t, err)
		}
		for _, name := range allocate.Solvers {
			r, err := allocate.Solve(p, name, eps, maxBytes)
			if err != nil {
				return fmt.Errorf("target %g: %w", t, err)
			}
			met := ""
			if v, ok := r.Meta["tolerance_met"]; ok {
				met = fmt.Sprint(v)
			}
			fmt.Fprintf(&rows, "%g,%s,%.6f,%.9g,%.6f,%s\n", t, name, r.AvgBits, r.Distortion, r.Meta["seconds"], met)
			fmt.Fprintln(w, describe(p, r))
			pts = append(pts, plots.Point{Solver: name, AvgBits: r.AvgBits, Distortion: r.Distortion})
		}
	}
	if plotPath != "" {
		title := fmt.Sprintf("rate–distortion, %d units, floor target−%d", len(curves.Units), opts.MinBitsBelow)
		if err := plots.RateDistortion(plotPath, title, "predicted distortion", pts); err != nil {
			return err
		}
		fmt.Fprintf(w, "wrote %s\n", plotPath)
	}
	if err := atomicfile.WriteBytes(out, []byte(rows.String())); err != nil {
		return err
	}
	fmt.Fprintf(w, "wrote %s (%d targets × %d solvers)\n", out, len(targets), len(allocate.Solvers))
	return nil
}
