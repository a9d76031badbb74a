package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/flbq/flbq/solver"
	"github.com/flbq/flbq/solver/allocate"
	"github.com/flbq/flbq/solver/examples"
)

func init() {
	register(&cli.Command{
		Name:  "demo",
		Usage: "the main job on the bundled default: solve the bundled Swin-T curves with every solver",
		Action: func(c *cli.Context) error {
			curves, err := solver.ParseCurves(examples.SwinTG32)
			if err != nil {
				return fmt.Errorf("%s: %w", examples.SwinTG32Name, err)
			}
			w := c.App.Writer
			fmt.Fprintf(w, "%s: %d units (Swin-T, 32-channel groups), %d weights\n\n", examples.SwinTG32Name, len(curves.Units), curves.TotalWeights())
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "target\tsolver\tavg bits\tdistortion\tvs DP\ttime\t")
			for _, target := range []float64{2, 3, 4, 5, 6} {
				p, err := allocate.NewProblem(curves, allocate.Options{TargetBits: target, MinBitsBelow: allocate.DefaultMinBitsBelow})
				if err != nil {
					return err
				}
				dp, err := allocate.SolveDP(p, allocate.DefaultDPMaxBytes)
				if err != nil {
					return err
				}
				for _, r := range []*allocate.Result{allocate.SolveLG(p, allocate.DefaultEpsilon), allocate.SolveLGFill(p, allocate.DefaultEpsilon), dp} {
					fmt.Fprintf(tw, "%g\t%s\t%.4f\t%.6g\t%+.2f%%\t%s\t\n", target, r.Solver, r.AvgBits, r.Distortion,
						100*(r.Distortion/dp.Distortion-1), fmtSeconds(r.Meta["seconds"]))
				}
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintln(w, "\nDP is the exact optimum within the budget; LG may exceed the target by up to ε = 0.02 bits.")
			return nil
		},
	})
}
