package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/flbq/flbq/gen/modelpkg"
	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/coco"
	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/tools/pipeline"
)

func init() {
	register(&cli.Command{
		Name:  "eval",
		Usage: "detect and score a COCO dataset in one pass: sharded, resumable, all cores",
		Description: `Runs the detector (--model) on every image of --val (a COCO instances
   file; file_name relative to --images), then scores box and mask AP as
   pycocotools' COCOeval does and prints the 12 numbers of each.

   It uses --threads goroutines across images (one thread per image, the
   efficient split), streams each finished image to OUT/progress.jsonl,
   and at the end writes OUT/results.json (COCO results, image order of
   --val) and OUT/eval.json (fingerprint: model and instances SHA-256 and
   the options; shard; image ids; the 12 numbers) atomically. Interrupted,
   the same command resumes where it stopped; with other inputs or options
   it refuses, naming what differs. Every image is checked before any
   detection runs.

   --alloc evaluates the quantized detector: --model packed with that
   allocation (backbone units at their bits, heads at 8 bits) on the
   integer kernels, as flbq generate packs it.

   --shard i/n evaluates every n-th image starting at the i-th (0-based),
   on as many machines as you like; then "flbq eval merge" joins the shard
   directories, checks they belong together, and scores the union: the
   same files and numbers as one unsharded run.`,
		// Not marked Required: urfave/cli would then demand them of
		// "eval merge" too; pipeline.Eval names any that is missing.
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "detector `FILE`: a model (.safetensors) or a packed quantized model (weights.bin)"},
			&cli.StringFlag{Name: "alloc", Usage: "quantize --model with this allocation `FILE` first (packed as flbq generate packs it)"},
			&cli.StringFlag{Name: "heads", Value: "int8", Usage: "with --alloc: pyramid and head weights int8 (int4..int7: fewer bits) or fp32"},
			&cli.StringFlag{Name: "val", Usage: "COCO instances `FILE` of the images to evaluate"},
			&cli.StringFlag{Name: "images", Usage: "`DIR` the instances' file_name values are relative to"},
			&cli.StringFlag{Name: "out", Usage: "output `DIR` (a rerun resumes there)"},
			&cli.StringFlag{Name: "shard", Value: "0/1", Usage: "evaluate shard `i/n`: every n-th image from the i-th"},
			&cli.Float64Flag{Name: "score-thresh", Value: -1, Usage: "keep detections scoring above `T` (default: the model's, 0.05)"},
			&cli.IntFlag{Name: "max-dets", Usage: "detections per image (default: the model's, 100)"},
			&cli.BoolFlag{Name: "no-masks", Usage: "boxes only (no segm)"},
			&cli.Int64Flag{Name: "max-pixels", Value: maskrcnn.DefaultMaxPixels, Usage: "refuse images with more `PIXELS`"},
		},
		Action: runEvalDataset,
		Subcommands: []*cli.Command{{
			Name:      "merge",
			Usage:     "join the shard directories of one flbq eval and score the union",
			ArgsUsage: "SHARD_DIR...",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "val", Usage: "the COCO instances `FILE` the shards evaluated", Required: true},
				&cli.StringFlag{Name: "out", Usage: "output `DIR`", Required: true},
			},
			Action: runEvalMerge,
		}},
	})
}

func runEvalDataset(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("eval: unexpected arguments %q (did you mean flbq eval merge?)", c.Args().Slice())
	}
	shard, err := pipeline.ParseShard(c.String("shard"))
	if err != nil {
		return fmt.Errorf("--shard: %w", err)
	}
	opt := pipeline.EvalOptions{
		Model: c.String("model"), Alloc: c.String("alloc"), Heads: modelpkg.Heads(c.String("heads")), Val: c.String("val"), Images: c.String("images"), Out: c.String("out"),
		Shard: shard, ScoreThresh: c.Float64("score-thresh"), MaxDets: c.Int("max-dets"),
		NoMasks: c.Bool("no-masks"), MaxPixels: c.Int64("max-pixels"),
	}
	stderr := errWriter(c)
	var bar *progressbar.ProgressBar
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		opt.Progress = func(done, total int) {
			if bar == nil {
				bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(f), progressbar.OptionSetDescription("detecting"),
					progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("img"),
					progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(200*time.Millisecond))
			}
			bar.Set(done)
		}
	}
	t0 := time.Now()
	rep, err := pipeline.Eval(opt)
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		return err
	}
	dt := time.Since(t0)
	switch {
	case rep.AlreadyDone:
		fmt.Fprintf(stderr, "eval: %s already holds this finished evaluation\n", opt.Out)
	case rep.Detected > 0:
		fmt.Fprintf(stderr, "eval: shard %s, %d images (%d resumed), %d detections; %.2fs, %.3f images/s on %d threads\n",
			rep.Manifest.Shard, len(rep.Manifest.ImageIDs), rep.Resumed, rep.Manifest.Detections, dt.Seconds(),
			float64(rep.Detected)/dt.Seconds(), backend.Threads())
	}
	return printEvals(c.App.Writer, rep)
}

func runEvalMerge(c *cli.Context) error {
	if c.NArg() == 0 {
		return errors.New("eval merge: no shard directories given")
	}
	rep, err := pipeline.Merge(c.String("out"), c.String("val"), c.Args().Slice())
	if err != nil {
		return err
	}
	fmt.Fprintf(errWriter(c), "eval merge: %d shards, %d images, %d detections -> %s\n",
		c.NArg(), len(rep.Manifest.ImageIDs), rep.Manifest.Detections, c.String("out"))
	return printEvals(c.App.Writer, rep)
}

// printEvals prints COCOeval's summary per IoU type (whole sets only).
func printEvals(w io.Writer, rep *pipeline.EvalReport) error {
	if rep.Evals == nil {
		_, err := fmt.Fprintf(w, "shard %s done: merge the shards (flbq eval merge) to score them\n", rep.Manifest.Shard)
		return err
	}
	for _, t := range []coco.IoUType{coco.BBox, coco.Segm} {
		e, ok := rep.Evals[t]
		if !ok {
			continue
		}
		if _, err := fmt.Fprintf(w, "# iouType=%s\n%s", t, e.Summary()); err != nil {
			return err
		}
	}
	return nil
}

// errWriter is where a command's messages and progress go (run's stderr).
func errWriter(c *cli.Context) io.Writer {
	if c.App.ErrWriter != nil {
		return c.App.ErrWriter
	}
	return io.Discard
}

// terminal returns w as a terminal file, for progress bars, or nil.
func terminal(w io.Writer) *os.File {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return f
	}
	return nil
}
