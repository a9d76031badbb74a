package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/flbq/flbq/solver"
	"github.com/flbq/flbq/tools/data/curvesynth"
)

func init() {
	register(&cli.Command{
		Name:  "curves",
		Usage: "make or inspect error curves",
		Subcommands: []*cli.Command{{
			Name:  "synth",
			Usage: "realistic synthetic curves with the true layer shapes of Swin-T or ViT-B",
			Description: `The distortion model is documented in package tools/data/curvesynth: uniform
   quantization noise ∝ K·range²/(2^b−1)² scaled by a per-layer sensitivity,
   log-normal group ranges with outlier groups, and measurement noise.`,
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "arch", Usage: strings.Join(curvesynth.Archs, " or "), Required: true},
				&cli.IntFlag{Name: "group-size", Value: 32, Usage: "output channels per unit (a multiple of 16); 0 for whole layers"},
				&cli.StringFlag{Name: "granularity", Value: "group", Usage: "group or layer (layer ignores --group-size)"},
				&cli.Uint64Flag{Name: "seed", Value: 1},
				&cli.StringFlag{Name: "out", Usage: "curves `FILE` to write", Required: true},
			},
			Action: func(c *cli.Context) error {
				gs := c.Int("group-size")
				switch c.String("granularity") {
				case "layer":
					gs = 0
				case "group":
				default:
					return fmt.Errorf("--granularity %q: want group or layer", c.String("granularity"))
				}
				cv, err := curvesynth.Curves(c.String("arch"), gs, c.Uint64("seed"))
				if err != nil {
					return err
				}
				if err := solver.WriteCurvesFile(c.String("out"), cv); err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "wrote %s: %d units, %d weights\n", c.String("out"), len(cv.Units), cv.TotalWeights())
				return nil
			},
		}},
	})
}
