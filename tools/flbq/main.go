// Command flbq is the F-LBQ toolchain: calibrate error curves, allocate
// bit-widths, generate quantized kernels and run the quantized detector.
//
// Each subcommand lives in its own file and registers itself with
// register(), so the stages stay independent.
package main

import (
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/urfave/cli/v2"

	"github.com/flbq/flbq/runtime/backend"
)

// version is overridden at link time (-ldflags "-X main.version=...").
var version = "0.1.0-dev"

var commands []*cli.Command

// register adds a command; every command that runs something gets the
// --threads flag.
func register(c *cli.Command) {
	withThreads(c)
	commands = append(commands, c)
}

// withThreads gives c (or each of its subcommands) the one thread setting,
// --threads, which means the same in every command: the goroutines every
// kernel, stage, calibration and evaluation may use (backend.SetThreads).
func withThreads(c *cli.Command) {
	for _, s := range c.Subcommands {
		withThreads(s)
	}
	if c.Action == nil {
		return
	}
	c.Flags = append(c.Flags, &cli.IntFlag{Name: "threads", Usage: "goroutines for every kernel and stage (default: $" + backend.EnvThreads + ", else all CPUs)"})
	before := c.Before
	c.Before = func(ctx *cli.Context) error {
		if ctx.IsSet("threads") {
			n := ctx.Int("threads")
			if n < 0 {
				return fmt.Errorf("--threads %d: want a positive number of goroutines, or 0 for all CPUs", n)
			}
			backend.SetThreads(n)
		}
		if before != nil {
			return before(ctx)
		}
		return nil
	}
}

// newApp builds the command tree writing to stdout and stderr: every
// command prints through c.App.Writer and c.App.ErrWriter (errWriter), so
// that run is the whole program and tests run it as a function.
func newApp(stdout, stderr io.Writer) *cli.App {
	cmds := append([]*cli.Command(nil), commands...)
	sort.Slice(cmds, func(i, j int) bool { return cmds[i].Name < cmds[j].Name })
	return &cli.App{
		Writer:    stdout,
		ErrWriter: stderr,
		Name:      "flbq",
		Usage:     "fine-grained low-bit quantization of ViT/Swin Mask R-CNN detectors",
		Version:   version,
		Commands:  cmds,
		// A mistyped FLBQ_CPU or FLBQ_THREADS fails every command.
		Before: func(*cli.Context) error { return backend.EnvError() },
		// Errors are printed once, by main, as one line.
		ExitErrHandler: func(*cli.Context, error) {},
		Suggest:        true,
	}
}

// run runs the command line args (without the program name).
func run(args []string, stdout, stderr io.Writer) error {
	return newApp(stdout, stderr).Run(append([]string{"flbq"}, args...))
}

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "flbq: %v\n", err)
		os.Exit(1)
	}
}
