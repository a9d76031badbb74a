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

   --from torchvision: a torchvision MaskRCNN with flbq's Swin or ViT
   backbone (tools/refgen/flbq_models.py), names unchanged; --config states
   the architecture and settings (see tools/refgen/export_torchvision.py for
   the fields), since a state dict records none.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "from", Usage: "the checkpoint's layout: torchvision", Required: true},
			&cli.StringFlag{Name: "config", Usage: "flbq.config JSON `FILE` of the architecture", Required: true},
			&cli.StringFlag{Name: "out", Usage: "model `FILE` to write (.safetensors)", Required: true},
		},
		Action: runConvert,
	})
}

func runConvert(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("convert: want one checkpoint file (flbq convert --from torchvision --config C.json --out M.safetensors CKPT)")
	}
	src, err := convert.ParseSource(c.String("from"))
	if err != nil {
		return fmt.Errorf("--from: %w", err)
	}
	cfg, err := os.ReadFile(c.String("config"))
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	path := c.Args().First()
	ck, err := torchckpt.Read(path)
	if err != nil {
		return err
	}
	blob, err := convert.Convert(ck, convert.Options{From: src, Config: cfg, Origin: filepath.Base(path)})
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
