// Command flbq is the F-LBQ toolchain: calibrate error curves, allocate
// bit-widths, generate quantized kernels and run the quantized detector.
//
// Each subcommand lives in its own file and registers itself with
// register(), so the stages stay independent.
package main

import (
	"fmt"
	"os"
	"sort"

	"github.com/urfave/cli/v2"
)

// version is overridden at link time (-ldflags "-X main.version=...").
var version = "0.1.0-dev"

var commands []*cli.Command

func register(c *cli.Command) { commands = append(commands, c) }

func newApp() *cli.App {
	cmds := append([]*cli.Command(nil), commands...)
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].Name < cmds[j].Name })
	return &cli.App{
		Name:     "flbq",
		Usage:    "fine-grained low-bit quantization of ViT/Swin Mask R-CNN detectors",
		Version:  version,
		Commands: cmds,
		// Errors are printed once, by main, as one line.
		ExitErrHandler: func(*cli.Context, error) {},
		Suggest:        true,
	}
}

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "flbq: %v\n", err)
		os.Exit(1)
	}
}
