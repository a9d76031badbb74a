package main

import (
	"errors"
	"fmt"
	_ "image/jpeg" // DecodeConfig pre-flight
	_ "image/png"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/flbq/flbq/runtime/atomicfile"
	"github.com/flbq/flbq/runtime/coco"
	"github.com/flbq/flbq/runtime/imageio"
	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/tools/pipeline"
)

func init() {
	register(&cli.Command{
		Name:      "detect",
		Usage:     "run the Mask R-CNN detector on images: COCO results JSON and PNG overlays",
		ArgsUsage: "IMAGE...",
		Description: `Runs a Mask R-CNN (backbone, heads and settings from --model's safetensors
   file; a packed quantized model — the weights.bin of a package flbq
   generate wrote — runs on the integer kernels exactly as its Go package
   does) on JPEG/PNG images and writes the detections as a COCO results
   JSON list (to --out, or stdout): image_id, category_id, bbox [x, y, w, h]
   in original-image pixels, score and segmentation as compressed RLE.
   An image without detections adds nothing; no detections at all is "[]".

   image_id: with --images-json (a COCO instances file, e.g. the --gt of
   flbq eval-results) the id of the image whose file_name matches the
   argument's base name; otherwise the file stems when all are numeric
   (000000039769.jpg -> 39769) and distinct; otherwise the argument's
   position, 1-based. category_id: the config's category_ids, else the label.

   --draw writes PNG overlays (boxes, class names, scores, translucent
   masks). With one image, --draw is the output file; with several, or
   when it names a directory or ends in "/", it is a directory (created if
   missing) receiving STEM.png per image.

   Before any detection runs, every input is checked (readable, a
   JPEG/PNG, non-empty, at most the pixel limit) and every output location
   must be writable; files are replaced atomically, so a failure never
   leaves a partial file. Images above --max-pixels (100000000) are refused.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "detector `FILE`: a model (.safetensors with flbq.config) or a packed quantized model (a generated package's weights.bin)", Required: true},
			&cli.Float64Flag{Name: "score-thresh", Value: 0.5, Usage: "keep detections with score > `T`"},
			&cli.IntFlag{Name: "max-dets", Usage: "detections per image (default: the model's, 100)"},
			&cli.StringFlag{Name: "out", Usage: "COCO results `FILE` (default: stdout)"},
			&cli.StringFlag{Name: "draw", Usage: "overlay PNG `PATH` (a directory for several images)"},
			&cli.StringFlag{Name: "images-json", Aliases: []string{"gt"}, Usage: "COCO instances `FILE` giving image ids by file name"},
			&cli.BoolFlag{Name: "no-masks", Usage: "boxes only (no segmentation)"},
			&cli.Int64Flag{Name: "max-pixels", Value: maskrcnn.DefaultMaxPixels, Usage: "refuse images with more `PIXELS`"},
		},
		Action: runDetect,
	})
}

func runDetect(c *cli.Context) error {
	paths := c.Args().Slice()
	if len(paths) == 0 {
		return errors.New("detect: no images given (flbq detect --model M.safetensors IMAGE...)")
	}
	thr := c.Float64("score-thresh")
	if thr != thr || thr < 0 || thr >= 1 {
		return fmt.Errorf("detect: --score-thresh %v must be in [0, 1)", thr)
	}
	maxPix := c.Int64("max-pixels")
	// Pre-flight: inputs.
	for _, p := range paths {
		if err := pipeline.CheckImage(p, maxPix); err != nil {
			return err
		}
	}
	ids, err := imageIDs(paths, c.String("images-json"))
	if err != nil {
		return err
	}
	// Pre-flight: outputs.
	out := c.String("out")
	if out != "" {
		if err := checkWritableDir(filepath.Dir(out)); err != nil {
			return fmt.Errorf("--out %s: %w", out, err)
		}
	}
	draws, err := drawPaths(c.String("draw"), paths)
	if err != nil {
		return err
	}
	t0 := time.Now()
	d, err := pipeline.LoadDetector(c.String("model"), "", "")
	if err != nil {
		return err
	}
	d = d.WithOptions(maskrcnn.Options{ScoreThresh: thr, DetectionsPerImage: c.Int("max-dets"), MaxPixels: maxPix, NoMasks: c.Bool("no-masks")})
	stderr := errWriter(c)
	var bar *progressbar.ProgressBar
	if f, ok := stderr.(*os.File); ok && len(paths) > 1 && term.IsTerminal(int(f.Fd())) {
		bar = progressbar.NewOptions(len(paths), progressbar.OptionSetWriter(f), progressbar.OptionSetDescription("detecting"),
			progressbar.OptionClearOnFinish(), progressbar.OptionShowCount(), progressbar.OptionThrottle(100*time.Millisecond))
	}
	results := []coco.Result{}
	t1 := time.Now()
	ndet := 0
	for i, p := range paths {
		img, err := imageio.Load(p)
		if err != nil {
			return err
		}
		o, err := d.DetectRGB(img)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		ndet += len(o.Detections)
		results = append(results, pipeline.Results(ids[i], o.Detections)...)
		if draws != nil {
			if err := atomicfile.Write(draws[i], func(w io.Writer) error { return drawDetections(w, img, o.Detections) }); err != nil {
				return fmt.Errorf("--draw %s: %w", draws[i], err)
			}
		}
		if bar != nil {
			bar.Add(1)
		}
	}
	if bar != nil {
		bar.Finish()
	}
	t2 := time.Now()
	if out == "" {
		if err := coco.EncodeResults(c.App.Writer, results); err != nil {
			return err
		}
	} else if err := coco.WriteResults(out, results); err != nil {
		return fmt.Errorf("--out %s: %w", out, err)
	}
	fmt.Fprintf(stderr, "detect: %d images, %d detections; load %.2fs, detect %.2fs (%.2fs/image)\n",
		len(paths), ndet, t1.Sub(t0).Seconds(), t2.Sub(t1).Seconds(), t2.Sub(t1).Seconds()/float64(len(paths)))
	return nil
}

// checkWritableDir verifies that files can be created in dir.
func checkWritableDir(dir string) error {
	f, err := os.CreateTemp(dir, ".flbq-detect-*")
	if err != nil {
		return fmt.Errorf("cannot write there: %w", err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// imageIDs implements the image_id rule documented in the command's help.
func imageIDs(paths []string, imagesJSON string) ([]int64, error) {
	ids := make([]int64, len(paths))
	if imagesJSON != "" {
		ds, err := coco.ReadDataset(imagesJSON)
		if err != nil {
			return nil, err
		}
		byName := map[string]int64{}
		for _, im := range ds.Images {
			byName[filepath.Base(im.FileName)] = im.ID
		}
		for i, p := range paths {
			id, ok := byName[filepath.Base(p)]
			if !ok {
				return nil, fmt.Errorf("%s: no image with file_name %q in %s", p, filepath.Base(p), imagesJSON)
			}
			ids[i] = id
		}
		return ids, nil
	}
	seen := map[int64]bool{}
	numeric := true
	for i, p := range paths {
		stem := strings.TrimSuffix(filepath.Base(p), filepath.Ext(p))
		id, err := strconv.ParseInt(stem, 10, 64)
		if err != nil || id < 0 || seen[id] {
			numeric = false
			break
		}
		seen[id] = true
		ids[i] = id
	}
	if !numeric {
		for i := range ids {
			ids[i] = int64(i + 1)
		}
	}
	return ids, nil
}

// drawPaths implements --draw's naming rule; nil without --draw.
func drawPaths(draw string, paths []string) ([]string, error) {
	if draw == "" {
		return nil, nil
	}
	st, err := os.Stat(draw)
	isDir := (err == nil && st.IsDir()) || strings.HasSuffix(draw, "/") || strings.HasSuffix(draw, string(filepath.Separator)) || len(paths) > 1
	if !isDir {
		if err := checkWritableDir(filepath.Dir(draw)); err != nil {
			return nil, fmt.Errorf("--draw %s: %w", draw, err)
		}
		return []string{draw}, nil
	}
	if err := os.MkdirAll(draw, 0o755); err != nil {
		return nil, fmt.Errorf("--draw: %w", err)
	}
	if err := checkWritableDir(draw); err != nil {
		return nil, fmt.Errorf("--draw %s: %w", draw, err)
	}
	out := make([]string, len(paths))
	seen := map[string]string{}
	for i, p := range paths {
		stem := strings.TrimSuffix(filepath.Base(p), filepath.Ext(p))
		if prev, ok := seen[stem]; ok {
			return nil, fmt.Errorf("--draw: %s and %s would both be drawn to %s.png", prev, p, stem)
		}
		seen[stem] = p
		out[i] = filepath.Join(draw, stem+".png")
	}
	return out, nil
}
