package main

import (
	"fmt"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/flbq/flbq/gen/modelpkg"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/solver"
)

func init() {
	register(&cli.Command{
		Name:  "generate",
		Usage: "write the Go package of a quantized detector from a model and an allocation",
		Description: `Packs the backbone's quantized layers at the allocation's bit-widths (bit-packed for
   the kernels of runtime/kernels), the feature pyramid and heads at 8 bits, and every
   other tensor as is, into DIR/weights.bin, and emits DIR/doc.go (with a go:generate
   line that reproduces the package) and DIR/model.go (the embedded blob, the table of
   quantized layers with their shapes and bit-width runs, and New()). An app imports
   the package and calls New() to get a detector; see tools/examples/detect.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "detector `FILE` (.safetensors with flbq.config)", Required: true},
			&cli.StringFlag{Name: "alloc", Usage: "allocation `FILE` (flbq.alloc/v1) for this model", Required: true},
			&cli.StringFlag{Name: "pkg", Usage: "Go package `NAME`", Required: true},
			&cli.StringFlag{Name: "out", Usage: "package `DIR` (created; only files flbq generated there are replaced)", Required: true},
			&cli.StringFlag{Name: "rule", Value: "mse", Usage: "weight scale rule of the backbone, as used to calibrate: mse or minmax"},
			&cli.StringFlag{Name: "heads", Value: "int8", Usage: "pyramid and head weights: int8 (8-bit uniform, per-channel scales, on the integer kernels; int4..int7: fewer bits) or fp32 (as in --model)"},
		},
		Action: func(c *cli.Context) error {
			rule, err := qformat.ParseRule(c.String("rule"))
			if err != nil {
				return err
			}
			src, err := safetensors.Open(c.String("model"))
			if err != nil {
				return err
			}
			a, err := solver.ReadAllocFile(c.String("alloc"))
			if err != nil {
				return err
			}
			out := c.String("out")
			rel := func(p string) string {
				// go:generate runs in the package directory.
				abs, err1 := filepath.Abs(p)
				dir, err2 := filepath.Abs(out)
				if r, err3 := filepath.Rel(dir, abs); err1 == nil && err2 == nil && err3 == nil {
					return filepath.ToSlash(r)
				}
				return p
			}
			heads, err := modelpkg.ParseHeads(c.String("heads"))
			if err != nil {
				return fmt.Errorf("--heads: %w", err)
			}
			o := modelpkg.Options{Pkg: c.String("pkg"), ModelArg: rel(c.String("model")), AllocArg: rel(c.String("alloc")), Rule: rule, Heads: heads}
			files, err := modelpkg.Write(out, src, a, o)
			if err != nil {
				return fmt.Errorf("generate %s from %s and %s: %w", out, c.String("model"), c.String("alloc"), err)
			}
			fmt.Fprintf(c.App.Writer, "wrote package %s in %s: %v (%s, %.4f average bits)\n", o.Pkg, out, files, a.Solver, a.AvgBits)
			return nil
		},
	})
}
