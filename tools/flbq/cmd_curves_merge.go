package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/flbq/flbq/solver"
	"github.com/flbq/flbq/solver/calib"
)

// The merge subcommand joins the "curves" command registered in
// cmd_curves.go (this file's init runs after that one: Go runs a package's
// init functions in file-name order). Without a "curves" command it
// registers as "merge-curves".
func init() {
	merge := &cli.Command{
		Name:      "merge",
		Usage:     "join the curves of calibration shards (flbq calibrate --shard i/n or --layers A:B)",
		ArgsUsage: "SHARD.json...",
		Description: `Checks that every shard comes from the same calibration (model digest,
   images, seed, granularity, group size, mode, rule, bits) and that no unit
   appears twice, and writes the units in the model's layer order. A missing
   layer is an error unless --allow-partial.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "out", Usage: "merged curves `FILE`", Required: true},
			&cli.BoolFlag{Name: "allow-partial", Usage: "write even if some layers have no curves"},
		},
		Action: func(c *cli.Context) error {
			files := c.Args().Slice()
			if len(files) == 0 {
				return fmt.Errorf("no shard files given")
			}
			var shards []*solver.Curves
			for _, f := range files {
				cv, err := solver.ReadCurvesFile(f)
				if err != nil {
					return err
				}
				shards = append(shards, cv)
			}
			m, err := calib.Merge(shards, files, c.Bool("allow-partial"))
			if err != nil {
				return err
			}
			if err := solver.WriteCurvesFile(c.String("out"), m); err != nil {
				return err
			}
			fmt.Fprintf(c.App.Writer, "wrote %s: %d units from %d shards\n", c.String("out"), len(m.Units), len(files))
			return nil
		},
	}
	for _, cmd := range commands {
		if cmd.Name == "curves" {
			cmd.Subcommands = append(cmd.Subcommands, merge)
			return
		}
	}
	merge.Name = "merge-curves"
	register(merge)
}
