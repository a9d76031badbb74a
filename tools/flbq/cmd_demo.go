package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/flbq/flbq/gen/modelpkg"
	"github.com/flbq/flbq/runtime/atomicfile"
	"github.com/flbq/flbq/runtime/coco"
	"github.com/flbq/flbq/runtime/imageio"
	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/solver"
	"github.com/flbq/flbq/tools/data/shapes"
	"github.com/flbq/flbq/tools/pipeline"
)

// BundledModel is the trained default detector (tools/models/README.md).
const BundledModel = "tools/models/shapes-swin-t32.safetensors"

func init() {
	register(&cli.Command{
		Name:  "demo",
		Usage: "the main job on the bundled model: calibrate → allocate → generate → quantized detection → COCO AP",
		Description: `On the bundled Swin Mask R-CNN trained on the procedural shapes dataset:
   1. regenerates its training set (flbq data shapes --n TRAIN --seed 1) and a
      held-out set (--n VAL --seed 2) under --work;
   2. calibrates error curves on --calib-size training images (fast mode);
   3. allocates --target-bits average bits with F-LBQ-LG and F-LBQ-DP (and the
      uniform baseline);
   4. packs each allocation for the kernels (the blob a generated package
      embeds) and writes the DP one as a Go package under --work;
   5. runs fp32 and every quantized detector on the held-out images, and
      prints box/mask AP (pycocotools-exact), model size and speed;
   6. writes an overlay of the DP-quantized detections to --out.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "model", Value: BundledModel, Usage: "detector `FILE`"},
			&cli.StringFlag{Name: "work", Usage: "working `DIR` for data, curves, allocations, package (default: a temporary directory, removed)"},
			&cli.StringFlag{Name: "out", Value: "demo-out", Usage: "`DIR` for the overlay PNG and the results JSON"},
			&cli.IntFlag{Name: "calib-size", Value: 64},
			&cli.StringFlag{Name: "calib-mode", Value: "fast", Usage: "fast or exact"},
			&cli.Float64Flag{Name: "target-bits", Value: 4},
			&cli.StringFlag{Name: "heads", Value: "int8", Usage: "pyramid and head weights of the quantized detectors: int8 (int4..int7: fewer bits, same kernels) or fp32"},
		}, dataFlags()...),
		Action: runDemo,
	})
}

// dataFlags are the dataset flags of demo and results: COCO instances files
// and image directories (--train for calibration, --val for evaluation), as
// flbq calibrate and flbq eval name them, or by default the procedural
// shapes sets the bundled models were trained and held out on.
func dataFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "train", Usage: "COCO instances `FILE` to calibrate on (default: the shapes training set, regenerated)"},
		&cli.StringFlag{Name: "train-images", Usage: "`DIR` --train's file names are relative to"},
		&cli.StringFlag{Name: "val", Usage: "COCO instances `FILE` to evaluate on (default: held-out shapes images)"},
		&cli.StringFlag{Name: "val-images", Usage: "`DIR` --val's file names are relative to"},
		&cli.IntFlag{Name: "shapes-train", Value: 2000, Usage: "shapes training images to regenerate without --train (the bundled models saw 2000)"},
		&cli.IntFlag{Name: "shapes-val", Value: 100, Usage: "held-out shapes images to generate without --val"},
	}
}

// split is a dataset on disk: a COCO instances file and its image directory.
type split = pipeline.Split

// demoSets returns the calibration and evaluation sets (see dataFlags).
func demoSets(c *cli.Context, work string) (train, val split, valDS *coco.Dataset, err error) {
	pick := func(flag, imagesFlag, dir, about string, n int, seed uint64) (split, error) {
		if f := c.String(flag); f != "" {
			if c.String(imagesFlag) == "" {
				return split{}, fmt.Errorf("--%s %s: give its image directory with --%s", flag, f, imagesFlag)
			}
			return split{Instances: f, Images: c.String(imagesFlag), About: f}, nil
		}
		if c.String(imagesFlag) != "" {
			return split{}, fmt.Errorf("--%s without --%s", imagesFlag, flag)
		}
		if _, err := shapes.Generate(shapes.Options{N: n, Seed: seed, Size: 192, Out: dir}); err != nil {
			return split{}, err
		}
		return split{Instances: filepath.Join(dir, shapes.InstancesFile), Images: filepath.Join(dir, shapes.ImagesDir),
			About: fmt.Sprintf("%d images of `flbq data shapes --seed %d --size 192`", n, seed) + about}, nil
	}
	if train, err = pick("train", "train-images", filepath.Join(work, "train"), "", c.Int("shapes-train"), 1); err != nil {
		return
	}
	if val, err = pick("val", "val-images", filepath.Join(work, "val"), " (held out)", c.Int("shapes-val"), 2); err != nil {
		return
	}
	valDS, err = coco.ReadDataset(val.Instances)
	return
}

type demoVariant struct {
	name  string
	alloc *solver.Allocation // nil for fp32
	det   *maskrcnn.Detector
	bytes int64 // weights as stored
	pipeline.Score
}

func runDemo(c *cli.Context) error {
	w := c.App.Writer
	start := time.Now()
	modelPath := c.String("model")
	if _, err := os.Stat(modelPath); err != nil {
		return fmt.Errorf("model %s: %w (run from the repository root or pass --model)", modelPath, err)
	}
	work, cleanup, err := workDir(c, "flbq-demo-")
	if err != nil {
		return err
	}
	defer cleanup()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	step := func(format string, args ...any) {
		fmt.Fprintf(w, "[%5.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}

	// 1. Data: by default exactly as the model was trained and held out.
	train, valSet, val, err := demoSets(c, work)
	if err != nil {
		return err
	}
	step("data: calibrating on %s, evaluating on %s", train.About, valSet.About)

	// 2. Calibration (kept in --work: a rerun reuses the curves).
	step("calibrate: %d training images, %s mode, 32-channel groups", c.Int("calib-size"), c.String("calib-mode"))
	t0 := time.Now()
	curves, reused, err := pipeline.Calibrate(ctx, pipeline.CalibrateOptions{
		Model: modelPath, Train: train, Size: c.Int("calib-size"), Mode: c.String("calib-mode"), Granularity: "group", GroupSize: 32,
		Rule: qformat.MSE, Cache: filepath.Join(work, "curves.json"),
		Warn: func(m string) { fmt.Fprintf(errWriter(c), "flbq: warning: %s\n", m) },
	})
	if err != nil {
		return err
	}
	how := fmt.Sprintf("in %.1fs", time.Since(t0).Seconds())
	if reused {
		how = "reused from " + filepath.Join(work, "curves.json")
	}
	step("calibrate: %d units × %d bit-widths %s", len(curves.Units), len(curves.Bits), how)

	// 3. Allocation.
	heads, err := modelpkg.ParseHeads(c.String("heads"))
	if err != nil {
		return fmt.Errorf("--heads: %w", err)
	}
	src, err := safetensors.Open(modelPath)
	if err != nil {
		return err
	}
	fp32, err := maskrcnn.Load(modelPath)
	if err != nil {
		return err
	}
	fi, _ := os.Stat(modelPath)
	variants := []*demoVariant{{name: "fp32", det: fp32, bytes: fi.Size()}}
	for _, name := range []string{"uniform", "lg", "dp"} {
		a, r, err := pipeline.Allocate(curves, name, c.Float64("target-bits"))
		if err != nil {
			return err
		}
		if err := solver.WriteAllocFile(filepath.Join(work, name+".alloc.json"), a); err != nil {
			return err
		}
		step("allocate %-7s avg %.3f bits, predicted distortion %.4g", name, r.AvgBits, r.Distortion)
		// 4. Pack as the generated package does, and load onto the kernels.
		blob, det, err := pipeline.Quantize(src, a, qformat.MSE, heads)
		if err != nil {
			return err
		}
		variants = append(variants, &demoVariant{name: fmt.Sprintf("%s %.2f bits", name, r.AvgBits), alloc: a, det: det, bytes: int64(len(blob))})
		if name == "dp" {
			pkgDir := filepath.Join(work, "shapesswin")
			files, err := modelpkg.Write(pkgDir, src, a, modelpkg.Options{Pkg: "shapesswin", ModelArg: modelPath, AllocArg: "../dp.alloc.json", Rule: qformat.MSE, Heads: heads})
			if err != nil {
				return err
			}
			step("generate: Go package shapesswin in %s %v", pkgDir, files)
		}
	}

	// 5. Detection and COCO AP on the held-out images.
	for _, v := range variants {
		if v.Score, err = pipeline.Evaluate(v.det, val, valSet.Images); err != nil {
			return err
		}
		step("detect %-16s box AP %.3f  mask AP %.3f  %.1f ms/image (backbone %.1f ms)", v.name, v.Box, v.Mask, v.MsPerImage, v.MsBackbone)
	}

	// 6. Overlay of the DP-quantized detector on the first held-out image.
	if err := os.MkdirAll(c.String("out"), 0o755); err != nil {
		return err
	}
	overlay := filepath.Join(c.String("out"), "overlay.png")
	if err := demoOverlay(variants[len(variants)-1].det, filepath.Join(valSet.Images, filepath.FromSlash(val.Images[0].FileName)), overlay); err != nil {
		return err
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "detector\tweights\tbox AP\tmask AP\tbackbone ms\tdetector ms\t")
	for _, v := range variants {
		fmt.Fprintf(tw, "%s\t%.2f MB\t%.3f\t%.3f\t%.1f\t%.1f\t\n", v.name, float64(v.bytes)/1e6, v.Box, v.Mask, v.MsBackbone, v.MsPerImage)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nheld-out: %d images; times are medians per image; weights: the file as stored (fp32: the\n"+
		"f16 safetensors; quantized: the generated package's blob: packed backbone + 8-bit heads).\n"+
		"Overlay: %s. Total %.1fs.\n", len(val.Images), overlay, time.Since(start).Seconds())
	return nil
}

func demoOverlay(d *maskrcnn.Detector, imgPath, out string) error {
	img, err := imageio.Load(imgPath)
	if err != nil {
		return err
	}
	// Draw what a user would keep: scores above 0.5.
	res, err := d.WithOptions(maskrcnn.Options{ScoreThresh: 0.5}).DetectRGB(img)
	if err != nil {
		return err
	}
	return atomicfile.Write(out, func(w io.Writer) error { return drawDetections(w, img, res.Detections) })
}

// workDir returns --work, or a temporary directory that cleanup removes.
func workDir(c *cli.Context, prefix string) (dir string, cleanup func(), err error) {
	if dir = c.String("work"); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", nil, fmt.Errorf("--work: %w", err)
		}
		return dir, func() {}, nil
	}
	if dir, err = os.MkdirTemp("", prefix); err != nil {
		return "", nil, err
	}
	return dir, func() { os.RemoveAll(dir) }, nil
}
