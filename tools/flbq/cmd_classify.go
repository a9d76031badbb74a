package main

import (
	"fmt"
	"math"
	"sort"

	"github.com/urfave/cli/v2"

	"github.com/flbq/flbq/runtime/imageio"
	"github.com/flbq/flbq/runtime/model"
)

func init() {
	register(&cli.Command{
		Name:      "classify",
		Usage:     "top-5 classes of images with a ViT classifier",
		ArgsUsage: "IMAGE...",
		Description: `Runs a torchvision VisionTransformer classifier (family "vit", task
   "classification") on JPEG/PNG images, preprocessed as torchvision's
   ImageClassification preset (resize_size, crop_size, image_mean, image_std
   from the model's config), and prints the top-5 classes with softmax
   probabilities (class names from the config's "categories" if present).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "model `FILE` (.safetensors)", Required: true},
			&cli.IntFlag{Name: "top", Value: 5, Usage: "how many classes to print"},
		},
		Action: runClassify,
	})
}

func runClassify(c *cli.Context) error {
	if c.NArg() == 0 {
		return fmt.Errorf("classify: no images given")
	}
	m, err := model.Load(c.String("model"))
	if err != nil {
		return err
	}
	if m.Classifier == nil {
		return fmt.Errorf("classify: %s is a %s %s model, not a classifier", c.String("model"), m.Config.Family, m.Config.Task)
	}
	cfg := m.Config
	for _, path := range c.Args().Slice() {
		img, err := imageio.Load(path)
		if err != nil {
			return err
		}
		x, err := imageio.Classification(img, cfg.ResizeSize, cfg.CropSize, cfg.ImageMean, cfg.ImageStd)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		logits := m.Classifier.Forward(x, nil).Data
		mx := math.Inf(-1)
		for _, v := range logits {
			mx = math.Max(mx, float64(v))
		}
		prob := make([]float64, len(logits))
		var s float64
		for i, v := range logits {
			prob[i] = math.Exp(float64(v) - mx)
			s += prob[i]
		}
		idx := make([]int, len(prob))
		for i := range idx {
			idx[i] = i
			prob[i] /= s
		}
		sort.SliceStable(idx, func(a, b int) bool { return prob[idx[a]] > prob[idx[b]] })
		fmt.Fprintf(c.App.Writer, "%s\n", path)
		for r := 0; r < c.Int("top") && r < len(idx); r++ {
			k := idx[r]
			label := fmt.Sprintf("class %d", k)
			if k < len(cfg.Categories) {
				label = cfg.Categories[k]
			}
			fmt.Fprintf(c.App.Writer, "  %2d. %-30s %7.4f  (%d)\n", r+1, label, prob[k], k)
		}
	}
	return nil
}
