package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"

	"github.com/flbq/flbq/runtime/coco"
	"github.com/flbq/flbq/tools/data/cocosynth"
	"github.com/flbq/flbq/tools/data/shapes"
)

func init() {
	register(&cli.Command{
		Name:  "data",
		Usage: "datasets",
		Subcommands: []*cli.Command{{
			Name:  "shapes",
			Usage: "generate the procedural shapes dataset (COCO instances, RGB PNG images)",
			Description: `Renders --n images of --size×--size pixels with 1–5 circles, rectangles
   and triangles each (random colours, sizes, rotations, occlusion) on
   textured noisy backgrounds, and writes

     DIR/images/NNNNNN.png   the images (ids 1..n)
     DIR/instances.json      COCO instances: categories circle=1,
                             rectangle=2, triangle=3; exact instance masks
     DIR/train.json,         with --split val=F: the images split (by the
     DIR/val.json            seed) into a 1-F / F partition

   The output is byte-identical for the same flags, whatever --threads.`,
			Flags: []cli.Flag{
				&cli.IntFlag{Name: "n", Value: 2000, Usage: "number of images"},
				&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "random seed"},
				&cli.IntFlag{Name: "size", Value: 192, Usage: "image width and height in pixels"},
				&cli.StringFlag{Name: "out", Usage: "output `DIR`", Required: true},
				&cli.StringFlag{Name: "masks", Value: "rle", Usage: "mask format: rle, or polygon (masks with holes stay RLE)"},
				&cli.StringFlag{Name: "split", Usage: "also write train.json and val.json, `val=F` (0 < F < 1)"},
			},
			Action: runDataShapes,
		}, {
			Name:  "synth-coco",
			Usage: "synthetic COCO ground truth and detections for benchmarking eval-results",
			Description: `Writes DIR/gt.json (COCO instances: 80 categories, about 7 polygon objects
   per image of small, medium and large sizes, 1% crowd regions as RLE) and
   DIR/results.json (--dets detections per image with "bbox", "score" and a
   compressed-RLE "segmentation": jittered copies of the objects, duplicates
   and false positives). Deterministic for a given --seed.`,
			Flags: []cli.Flag{
				&cli.IntFlag{Name: "n", Value: 5000, Usage: "number of images (as in data shapes; --images is a directory elsewhere)"},
				&cli.IntFlag{Name: "dets", Value: 100, Usage: "detections per image"},
				&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "random seed"},
				&cli.StringFlag{Name: "out", Usage: "output `DIR`", Required: true},
			},
			Action: runDataSynthCOCO,
		}},
	})
}

func runDataSynthCOCO(c *cli.Context) error {
	n, k := c.Int("n"), c.Int("dets")
	if n <= 0 || n > 1_000_000 || k < 0 || k > 10_000 {
		return fmt.Errorf("--images %d --dets %d: want 1..1000000 images and 0..10000 detections per image", n, k)
	}
	out := c.String("out")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	t0 := time.Now()
	gt, dets := cocosynth.Generate(cocosynth.Options{Images: n, DetsPerImage: k, Seed: c.Uint64("seed")})
	if err := coco.WriteDataset(filepath.Join(out, "gt.json"), gt); err != nil {
		return err
	}
	if err := coco.WriteResults(filepath.Join(out, "results.json"), dets); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "wrote %d images, %d objects, %d detections to %s in %.1fs\n",
		len(gt.Images), len(gt.Annotations), len(dets), out, time.Since(t0).Seconds())
	return nil
}

func parseSplit(s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	k, v, ok := strings.Cut(s, "=")
	if !ok || strings.TrimSpace(k) != "val" {
		return 0, fmt.Errorf("--split %q: want val=F, e.g. val=0.2", s)
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || !(f > 0 && f < 1) {
		return 0, fmt.Errorf("--split %q: the val fraction must be a number in (0, 1)", s)
	}
	return f, nil
}

func runDataShapes(c *cli.Context) error {
	if c.Args().Len() > 0 {
		return fmt.Errorf("unexpected arguments %q", c.Args().Slice())
	}
	val, err := parseSplit(c.String("split"))
	if err != nil {
		return err
	}
	o := shapes.Options{
		N: c.Int("n"), Seed: c.Uint64("seed"), Size: c.Int("size"), Out: c.String("out"),
		Masks: shapes.MaskFormat(c.String("masks")), ValFraction: val,
	}
	var bar *progressbar.ProgressBar
	if f := terminal(errWriter(c)); f != nil && o.N >= 200 {
		bar = progressbar.NewOptions(o.N, progressbar.OptionSetWriter(f),
			progressbar.OptionSetDescription("rendering"), progressbar.OptionClearOnFinish(),
			progressbar.OptionThrottle(100*time.Millisecond))
		o.Progress = func(done, _ int) { bar.Set(done) }
	}
	t0 := time.Now()
	d, err := shapes.Generate(o)
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "wrote %d images, %d objects to %s in %.1fs\n", len(d.Images), len(d.Annotations), o.Out, time.Since(t0).Seconds())
	return nil
}
