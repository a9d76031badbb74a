package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/flbq/flbq/runtime/imageio"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/runtime/tensor"
)

func init() {
	register(&cli.Command{
		Name:      "features",
		Usage:     "write a detector's preprocessed input, backbone and pyramid features",
		ArgsUsage: "IMAGE",
		Description: `Preprocesses IMAGE as torchvision's GeneralizedRCNNTransform (min_size,
   max_size, image_mean, image_std from the config; padded to a multiple of
   32), runs the fp32 backbone and feature pyramid, and writes float32 NCHW
   tensors to a safetensors file:
     input                      the preprocessed, padded batch [1,3,H,W]
     backbone.0 .. backbone.3   Swin stage outputs (after out_norms if any);
     backbone.0                 ViT: the encoder map after backbone.norm
     fpn.0 .. fpn.3, fpn.pool   the FPN / simple feature pyramid levels
   (backbone.* are the features F-LBQ measures distortion on). Compare them
   with your PyTorch model to check parity.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Usage: "model `FILE` (.safetensors)", Required: true},
			&cli.StringFlag{Name: "out", Usage: "output `FILE` (.safetensors)", Required: true},
		},
		Action: runFeatures,
	})
}

func runFeatures(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("features: want exactly one IMAGE, got %d", c.NArg())
	}
	m, err := model.Load(c.String("model"))
	if err != nil {
		return err
	}
	if m.Backbone == nil {
		return fmt.Errorf("features: %s is a classifier; features needs a detection model", c.String("model"))
	}
	img, err := imageio.Load(c.Args().First())
	if err != nil {
		return err
	}
	cfg := m.Config
	in := cfg.Transform().Apply(img)
	start := time.Now()
	bb, pyr := m.Features(in.Batch, nil)
	elapsed := time.Since(start)
	ts := []safetensors.Tensor{{Name: "input", Shape: in.Batch.Shape, F32: in.Batch.Data}}
	add := func(name string, t *tensor.Tensor) {
		ts = append(ts, safetensors.Tensor{Name: name, Shape: t.Shape, F32: t.Data})
	}
	for k, t := range bb {
		add("backbone."+strconv.Itoa(k), t)
	}
	for k, t := range pyr {
		add(model.PyramidNames[k], t)
	}
	md := map[string]string{
		"image":       c.Args().First(),
		"image_size":  fmt.Sprintf("[%d,%d]", in.Height, in.Width),
		"orig_size":   fmt.Sprintf("[%d,%d]", in.OrigHeight, in.OrigWidth),
		"flbq.config": string(cfg.JSON()),
	}
	if err := safetensors.Write(c.String("out"), ts, md); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "%s: input %v (image %dx%d), %d backbone and %d pyramid maps in %.3fs → %s\n",
		c.Args().First(), in.Batch.Shape, in.Height, in.Width, len(bb), len(pyr), elapsed.Seconds(), c.String("out"))
	return nil
}
