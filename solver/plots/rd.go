// Package plots draws the figures users compare allocations with, using
// gonum/plot: rate–distortion curves and per-layer bit-widths along the
// backbone (the paper's Fig. 1). Every file is written atomically; the format
// follows the extension (.png, .svg or .pdf).
package plots

import (
	"bytes"
	"fmt"
	"path/filepath"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/flbq/flbq/runtime/atomicfile"
)

// Point is one solved target.
type Point struct {
	Solver     string
	AvgBits    float64
	Distortion float64
}

// RateDistortion draws distortion (log scale) against average bits, one
// line per solver; yLabel says which distortion (predicted or measured).
func RateDistortion(path, title, yLabel string, pts []Point) error {
	if _, err := format(path); err != nil {
		return err
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "average bits per weight"
	p.Y.Label.Text = yLabel + " (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Add(plotter.NewGrid())
	p.Legend.Top = true

	bySolver := map[string]plotter.XYs{}
	for _, pt := range pts {
		if pt.Distortion <= 0 {
			continue // a log axis cannot show zero
		}
		bySolver[pt.Solver] = append(bySolver[pt.Solver], plotter.XY{X: pt.AvgBits, Y: pt.Distortion})
	}
	names := make([]string, 0, len(bySolver))
	for s := range bySolver {
		names = append(names, s)
	}
	sort.Strings(names)
	var lines []any
	for _, s := range names {
		xy := bySolver[s]
		sort.Slice(xy, func(i, j int) bool { return xy[i].X < xy[j].X })
		lines = append(lines, s, xy)
	}
	if len(lines) == 0 {
		return fmt.Errorf("plot %s: no point with a positive distortion", path)
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	// One distinct value gives a zero-height range, which gonum pads by ±1
	// (below zero on a log axis); span a factor of 2 around it instead.
	if p.Y.Min == p.Y.Max {
		p.Y.Min, p.Y.Max = p.Y.Min/2, p.Y.Max*2
	}
	if p.X.Min == p.X.Max {
		p.X.Min, p.X.Max = p.X.Min-0.5, p.X.Max+0.5
	}
	return save(p, path, 6*vg.Inch, 4*vg.Inch)
}

// format returns the file format the extension of path names.
func format(path string) (string, error) {
	ext := strings.TrimPrefix(strings.ToLower(filepath.Ext(path)), ".")
	switch ext {
	case "png", "svg", "pdf":
		return ext, nil
	}
	return "", fmt.Errorf("plot %s: want a .png, .svg or .pdf file", path)
}

// save renders p and writes it atomically. gonum/plot panics on some
// degenerate data (a non-positive log range); that becomes an error.
func save(p *plot.Plot, path string, w, h vg.Length) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("plot %s: %v", path, r)
		}
	}()
	ext, err := format(path)
	if err != nil {
		return err
	}
	wt, err := p.WriterTo(w, h, ext)
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	var buf bytes.Buffer
	if _, err := wt.WriteTo(&buf); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return atomicfile.WriteBytes(path, buf.Bytes())
}
