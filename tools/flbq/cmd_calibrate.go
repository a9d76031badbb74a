package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"

	"github.com/flbq/flbq/runtime/atomicfile"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/solver"
	"github.com/flbq/flbq/solver/calib"
)

func init() {
	register(&cli.Command{
		Name:  "calibrate",
		Usage: "measure F-LBQ error curves (curves.json) on calibration images",
		Description: `Draws --calib-size images (uniformly at random with --seed) from a COCO
   instances file, preprocesses them exactly as detection inference does and
   measures, for every unit (a group of --group-size output channels of a
   backbone linear layer, or a whole layer) and every bit-width,

     D_u(b) = mean over images of ||F(x) - F_{u,b}(x)||^2 / numel(F(x))

   with F the backbone outputs and F_{u,b} the backbone with only unit u
   through the int8 kernel at b bits.

   --calib-mode exact  the definition, re-running only the blocks after the unit.
   --calib-mode fast   layer-output error energies (all images) scaled by exact
                 layer (q/k/v segment) distortions at --anchors bits,
                 measured on the first --anchor-images images (see
                 solver/calib).

   Ctrl-C saves progress to --checkpoint (default OUT.ckpt); rerunning the
   same command resumes. --layers A:B and --shard i/n compute a subset;
   join the shards with 'flbq curves merge'.

   --check-additivity quantizes whole allocations (random ones and DP
   outputs at several budgets) and compares their measured distortion with
   the curves' sum (of --curves, or of curves computed first).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "detector `FILE` (.safetensors)", Required: true},
			&cli.StringFlag{Name: "data", Usage: "COCO instances `JSON` of the training set", Required: true},
			&cli.StringFlag{Name: "images", Usage: "image `DIR` (file_name is relative to it)", Required: true},
			&cli.IntFlag{Name: "calib-size", Value: 64, Usage: "calibration images"},
			&cli.Uint64Flag{Name: "seed", Value: 0, Usage: "seed of the image draw"},
			&cli.StringFlag{Name: "granularity", Value: "group", Usage: "group or layer"},
			&cli.IntFlag{Name: "group-size", Value: 32, Usage: "output channels per unit (a multiple of 16)"},
			&cli.StringFlag{Name: "calib-mode", Aliases: []string{"mode"}, Value: "exact", Usage: "exact or fast (as demo and results name it; --mode is an alias)"},
			&cli.StringFlag{Name: "rule", Value: "mse", Usage: "weight scale rule: mse (clipping search) or minmax"},
			&cli.StringFlag{Name: "bits", Value: "1:8", Usage: "measured bit-widths, `LIST` (1,2,4) or range (1:8)"},
			&cli.StringFlag{Name: "anchors", Value: "2,4", Usage: "fast mode: exact layer-level bit-widths"},
			&cli.IntFlag{Name: "anchor-images", Value: calib.DefaultAnchorImages, Usage: "fast mode: images the anchors are measured on (the first ones, whole batches; 0: all)"},
			&cli.IntFlag{Name: "batch", Value: 8, Usage: "images per forward batch (equal sizes only, at most 1 M pixels)"},
			&cli.StringFlag{Name: "layers", Usage: "only layers `A:B` (forward order, half-open)"},
			&cli.StringFlag{Name: "shard", Usage: "only shard `i/n` of the layers (every n-th from i)"},
			&cli.StringFlag{Name: "out", Usage: "curves `FILE` to write"},
			&cli.StringFlag{Name: "checkpoint", Usage: "checkpoint `FILE` (default OUT.ckpt; 'none' disables)"},
			&cli.DurationFlag{Name: "checkpoint-every", Value: 30 * time.Second, Usage: "checkpoint interval"},
			&cli.BoolFlag{Name: "check-additivity", Usage: "measure whole allocations against the curves' prediction"},
			&cli.StringFlag{Name: "curves", Usage: "with --check-additivity: existing curves `FILE` (else computed first)"},
			&cli.IntFlag{Name: "random", Value: 12, Usage: "with --check-additivity: random allocations"},
			&cli.StringFlag{Name: "budgets", Value: "2,3,4,5,6", Usage: "with --check-additivity: DP budgets (average bits)"},
			&cli.StringFlag{Name: "report", Usage: "with --check-additivity: also write the report as JSON `FILE`"},
			&cli.BoolFlag{Name: "quiet", Usage: "no progress bar"},
		},
		Action: runCalibrate,
	})
}

func parseInts(flag, s string) ([]int, error) {
	if a, b, ok := strings.Cut(s, ":"); ok {
		lo, err1 := strconv.Atoi(a)
		hi, err2 := strconv.Atoi(b)
		if err1 != nil || err2 != nil || lo > hi {
			return nil, fmt.Errorf("--%s %q: want LO:HI or a comma-separated list", flag, s)
		}
		var out []int
		for v := lo; v <= hi; v++ {
			out = append(out, v)
		}
		return out, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return nil, fmt.Errorf("--%s %q: want LO:HI or a comma-separated list", flag, s)
		}
		out = append(out, v)
	}
	return out, nil
}

func newBar(c *cli.Context, desc string) func(done, total int) {
	// A bar only helps on a terminal; in a log it is one update per line.
	f := terminal(errWriter(c))
	if c.Bool("quiet") || f == nil {
		return nil
	}
	var bar *progressbar.ProgressBar
	return func(done, total int) {
		if bar == nil {
			bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(f),
				progressbar.OptionSetDescription(desc), progressbar.OptionShowCount(),
				progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish(),
				progressbar.OptionThrottle(200*time.Millisecond))
		}
		_ = bar.Set(done)
	}
}

func runCalibrate(c *cli.Context) error {
	if c.Args().Len() > 0 {
		return fmt.Errorf("unexpected arguments %q", c.Args().Slice())
	}
	rule, err := qformat.ParseRule(c.String("rule"))
	if err != nil {
		return err
	}
	bits, err := parseInts("bits", c.String("bits"))
	if err != nil {
		return err
	}
	anchors, err := parseInts("anchors", c.String("anchors"))
	if err != nil {
		return err
	}
	anchorImages := c.Int("anchor-images")
	switch {
	case anchorImages < 0:
		return fmt.Errorf("--anchor-images %d: want a positive number of images, or 0 for all", anchorImages)
	case anchorImages == 0:
		anchorImages = -1 // RunConfig: all images
	}
	out := c.String("out")
	additivity := c.Bool("check-additivity")
	if out == "" && !(additivity && c.String("curves") != "") {
		return fmt.Errorf("--out is required (the curves file to write)")
	}
	ckpt := c.String("checkpoint")
	switch {
	case ckpt == "none":
		ckpt = ""
	case ckpt == "" && out != "":
		ckpt = out + ".ckpt"
	}
	rc := &calib.RunConfig{
		Model: c.String("model"), Data: c.String("data"), Images: c.String("images"),
		CalibSize: c.Int("calib-size"), Seed: c.Uint64("seed"),
		Granularity: c.String("granularity"), GroupSize: c.Int("group-size"), Mode: c.String("calib-mode"),
		Rule: rule, Bits: bits, Anchors: anchors, AnchorImages: anchorImages, Batch: c.Int("batch"),
		Layers: c.String("layers"), Shard: c.String("shard"),
		Checkpoint: ckpt, SaveEvery: c.Duration("checkpoint-every"),
		Warn:     func(m string) { fmt.Fprintf(errWriter(c), "flbq: warning: %s\n", m) },
		Progress: newBar(c, "calibrating"),
		Resumed: func(done, _ int) {
			fmt.Fprintf(errWriter(c), "flbq: resuming from %s (%d tasks done)\n", ckpt, done)
		},
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p, err := calib.Prepare(rc)
	if err != nil {
		return err
	}
	w := c.App.Writer
	var curves *solver.Curves
	if additivity && c.String("curves") != "" {
		if curves, err = solver.ReadCurvesFile(c.String("curves")); err != nil {
			return err
		}
	} else {
		res, err := calib.RunPrepared(ctx, rc, p)
		if err != nil {
			return err
		}
		curves = res.Curves
		if err := solver.WriteCurvesFile(out, curves); err != nil {
			return err
		}
		fmt.Fprintf(w, "wrote %s: %d units × %d bit-widths, %s mode, %d images, %.1fs\n",
			out, len(curves.Units), len(curves.Bits), curves.Meta["mode"], len(p.Images), res.Seconds)
	}
	if !additivity {
		return nil
	}
	budgets, err := parseFloats("budgets", c.String("budgets"))
	if err != nil {
		return err
	}
	rep, err := calib.CheckAdditivity(ctx, p.Model.Backbone, p.Batches, curves, calib.NewQuantizer(rule),
		calib.AdditivityOptions{Random: c.Int("random"), Budgets: budgets, Seed: c.Uint64("seed"), Progress: newBar(c, "allocations")})
	if err != nil {
		return err
	}
	printAdditivity(w, rep)
	if r := c.String("report"); r != "" {
		js, err := json.MarshalIndent(rep, "", " ")
		if err != nil {
			return err
		}
		return atomicfile.WriteBytes(r, append(js, '\n'))
	}
	return nil
}

func parseFloats(flag, s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || v < 1 || v > 8 {
			return nil, fmt.Errorf("--%s %q: want comma-separated average bit-widths in 1..8", flag, s)
		}
		out = append(out, v)
	}
	return out, nil
}

func printAdditivity(w io.Writer, r *calib.AdditivityReport) {
	fmt.Fprintf(w, "%-26s %8s %12s %12s %7s\n", "allocation", "avg bits", "predicted", "measured", "ratio")
	for _, p := range r.Points {
		fmt.Fprintf(w, "%-26s %8.3f %12.5g %12.5g %7.3f\n", p.Name, p.AvgBits, p.Predicted, p.Measured, p.Measured/p.Predicted)
	}
	fmt.Fprintf(w, "additivity over %d allocations: Pearson %.4f, Spearman %.4f, Pearson(log) %.4f; measured/predicted median %.3f (%.3f..%.3f)\n",
		len(r.Points), r.Pearson, r.Spearman, r.PearsonLog, r.RatioMedian, r.RatioMin, r.RatioMax)
}
