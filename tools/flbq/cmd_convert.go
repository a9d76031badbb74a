package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/flbq/flbq/runtime/atomicfile"
	"github.com/flbq/flbq/tools/convert"
	"github.com/flbq/flbq/tools/torchckpt"
)

func init() {
	register(&cli.Command{
		Name:      "convert",
		Usage:     "a PyTorch checkpoint (.pth zip or legacy, detectron2 .pkl) to an flbq model file",
		ArgsUsage: "CKPT",
		Description: `Reads CKPT in Go (no Python; nothing in the file is executed: only the
   classes a state dict needs are allowed), takes its state dict (under
   "state_dict", "model" or the top level), maps the names of --from's
   layout onto flbq's, and writes --out (safetensors, F32, with
   flbq.config = --config plus "source"). The whole model is built from
   the result first: a missing, extra or mis-shaped tensor fails naming it,
   and nothing is written.

   --from mmdet: mmdetection 2.x's Swin Mask R-CNN (configs/swin, e.g.
   mask_rcnn_swin-t-p4-w7_fpn_1x_coco_*.pth); --from swin-official: the
   official Swin-Transformer-Object-Detection Mask R-CNN
   (mask_rcnn_swin_tiny_patch4_window7.pth). The architecture is read from
   the tensors, the class names from meta.CLASSES, and the inference
   settings are those of the published configs (mmcv resize, unrounded
   anchors, aligned adaptive RoIAlign, grid-sample mask pasting, ...; see
   docs/CHECKPOINTS.md); --config may replace any of them.

   --from torchvision: a torchvision MaskRCNN with flbq's Swin or ViT
   backbone (tools/refgen/flbq_models.py), names unchanged; --config states
   the architecture and settings (see tools/refgen/export_torchvision.py for
   the fields), since a state dict records none. Every setting it leaves
   out is named in a warning with the default used.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Usage: "the checkpoint's layout: mmdet, swin-official or torchvision", Required: true},
			&cli.StringFlag{Name: "config", Usage: "flbq.config JSON `FILE`: the architecture (torchvision), or keys replacing the inferred ones (mmdet, swin-official)"},
			&cli.StringFlag{Name: "out", Usage: "model `FILE` to write (.safetensors)", Required: true},
		},
		Action: runConvert,
	})
}

func runConvert(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("convert: want one checkpoint file (flbq convert --from mmdet --out M.safetensors CKPT)")
	}
	src, err := convert.ParseSource(c.String("from"))
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	var cfg []byte
	if f := c.String("config"); f != "" {
		if cfg, err = os.ReadFile(f); err != nil {
			return fmt.Errorf("--config: %w", err)
		}
	} else if src == convert.Torchvision {
		return errors.New("convert: --from torchvision needs --config: a state dict does not record the architecture")
	}
	path := c.Args().First()
	ck, err := torchckpt.Read(path)
	if err != nil {
		return err
	}
	warn := func(m string) { fmt.Fprintf(errWriter(c), "convert: warning: %s\n", m) }
	blob, err := convert.Convert(ck, convert.Options{From: src, Config: cfg, Origin: filepath.Base(path), Warn: warn})
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := atomicfile.WriteBytes(c.String("out"), blob); err != nil {
		return err
	}
	fmt.Fprintf(errWriter(c), "convert: %s (%s format, state dict at %q, %d tensors) -> %s\n",
		path, ck.Format, ck.Root, len(ck.Tensors), c.String("out"))
	return nil
}
