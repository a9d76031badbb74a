package main

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/urfave/cli/v2"

	"github.com/flbq/flbq/solver"
	"github.com/flbq/flbq/solver/plots"
)

func init() {
	register(&cli.Command{
		Name:  "report",
		Usage: "figures from allocation files: per-layer bits along the backbone, rate–distortion",
		Description: `Writes DIR/layer-bits.{png,svg}: each allocation's weight-averaged bit-width per
   layer along the backbone (the paper's Fig. 1). With --sweep (the CSV of
   'flbq allocate --sweep'), also DIR/rate-distortion.{png,svg}.`,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "alloc", Usage: "allocation `FILE` (repeatable; all of the same model)", Required: true},
			&cli.StringFlag{Name: "sweep", Usage: "rate–distortion `CSV` from flbq allocate --sweep"},
			&cli.StringFlag{Name: "out", Usage: "output `DIR` (created if missing)", Required: true},
		},
		Action: func(c *cli.Context) error {
			var series []plots.LayerBitsSeries
			for _, p := range c.StringSlice("alloc") {
				a, err := solver.ReadAllocFile(p)
				if err != nil {
					return err
				}
				series = append(series, plots.LayerBitsSeries{Label: fmt.Sprintf("%s @%g", a.Solver, a.TargetBits), Alloc: a})
			}
			var rd []plots.Point
			if s := c.String("sweep"); s != "" {
				var err error
				if rd, err = readSweep(s); err != nil {
					return err
				}
			}
			dir := c.String("out")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return err
			}
			for _, ext := range []string{"png", "svg"} {
				p := filepath.Join(dir, "layer-bits."+ext)
				if err := plots.LayerBits(p, "average bits per layer", series); err != nil {
					return err
				}
				fmt.Fprintf(c.App.Writer, "wrote %s\n", p)
				if rd != nil {
					p := filepath.Join(dir, "rate-distortion."+ext)
					if err := plots.RateDistortion(p, "rate–distortion", "predicted distortion", rd); err != nil {
						return err
					}
					fmt.Fprintf(c.App.Writer, "wrote %s\n", p)
				}
			}
			return nil
		},
	})
}

// readSweep reads the CSV written by `flbq allocate --sweep`.
func readSweep(path string) ([]plots.Point, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	header, err := r.Read()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[h] = i
	}
	for _, need := range []string{"solver", "avg_bits", "predicted_distortion"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("%s: no %q column", path, need)
		}
	}
	var pts []plots.Point
	for line := 2; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		bits, err1 := strconv.ParseFloat(rec[col["avg_bits"]], 64)
		dist, err2 := strconv.ParseFloat(rec[col["predicted_distortion"]], 64)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("%s line %d: avg_bits and predicted_distortion must be numbers", path, line)
		}
		pts = append(pts, plots.Point{Solver: rec[col["solver"]], AvgBits: bits, Distortion: dist})
	}
	if len(pts) == 0 {
		return nil, fmt.Errorf("%s: no rows", path)
	}
	return pts, nil
}
