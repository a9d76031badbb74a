// Command detect shows what linking a generated model means for an app:
// import the package `flbq generate` wrote for the bundled shapes detector
// (generated/shapesswin), call New once, detect.
//
//	go run ./tools/examples/detect IMAGE...
//
// It links runtime/ and generated/ code only — no generator, no CLI.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/flbq/flbq/generated/shapesswin"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: detect IMAGE...")
		os.Exit(2)
	}
	if err := run(os.Stdout, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "detect:", err)
		os.Exit(1)
	}
}

// minScore is the lowest score printed.
const minScore = 0.5

func run(w io.Writer, images []string) error {
	d, err := shapesswin.New()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "model: %s at %.2f average bits (%d quantized layers, heads at %d bits)\n",
		d.Meta.Solver, d.Meta.AvgBits, len(d.Meta.Layers), d.Meta.HeadBits)
	for _, p := range images {
		dets, err := d.DetectFile(p)
		if err != nil {
			return err
		}
		n := 0
		for _, det := range dets {
			if det.Score >= minScore {
				n++
			}
		}
		fmt.Fprintf(w, "%s: %d detections with score >= %.1f\n", p, n, minScore)
		for _, det := range dets {
			if det.Score >= minScore {
				fmt.Fprintf(w, "  %-10s %.3f  box [%.1f %.1f %.1f %.1f]\n", det.ClassName, det.Score, det.Box[0], det.Box[1], det.Box[2], det.Box[3])
			}
		}
	}
	return nil
}
