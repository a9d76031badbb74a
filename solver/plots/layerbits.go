package plots

import (
	"fmt"
	"image/color"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"

	"github.com/flbq/flbq/solver"
)

// LayerBitsSeries is one allocation's line in a layer-bits figure.
type LayerBitsSeries struct {
	Label string
	Alloc *solver.Allocation
}

// LayerAverages returns the layers of a in order of first appearance and
// each layer's weight-averaged bit-width.
func LayerAverages(a *solver.Allocation) (layers []string, bits []float64) {
	idx := map[string]int{}
	var wb, w []float64
	for _, u := range a.Units {
		i, ok := idx[u.Layer]
		if !ok {
			i = len(layers)
			idx[u.Layer] = i
			layers = append(layers, u.Layer)
			wb, w = append(wb, 0), append(w, 0)
		}
		wb[i] += float64(u.Weights) * float64(u.Bits)
		w[i] += float64(u.Weights)
	}
	bits = make([]float64, len(layers))
	for i := range bits {
		bits[i] = wb[i] / w[i]
	}
	return layers, bits
}

// Highlight shades the layers Match selects (e.g. ViTDet's global-attention
// blocks among the windowed ones), with Label in the legend.
type Highlight struct {
	Label string
	Match func(layer string) bool
}

// LayerBits draws each allocation's per-layer average bit-width along the
// backbone (x: layer index in forward order, as listed in the first
// allocation), shading the layers of each highlight. All allocations must
// cover the same layers.
func LayerBits(path, title string, series []LayerBitsSeries, highlights ...Highlight) error {
	if _, err := format(path); err != nil {
		return err
	}
	if len(series) == 0 {
		return fmt.Errorf("plot %s: no allocation to draw", path)
	}
	ref, _ := LayerAverages(series[0].Alloc)
	pos := map[string]int{}
	for i, l := range ref {
		pos[l] = i
	}
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = fmt.Sprintf("layer along the backbone (0 = %s, %d = %s)", ref[0], len(ref)-1, ref[len(ref)-1])
	p.Y.Label.Text = "average bits of the layer"
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	for hi, h := range highlights {
		var vals plotter.Values
		any := false
		for _, l := range ref {
			v := 0.0
			if h.Match(l) {
				v, any = solver.MaxBits+0.5, true
			}
			vals = append(vals, v)
		}
		if !any {
			continue
		}
		bars, err := plotter.NewBarChart(vals, vg.Points(4))
		if err != nil {
			return fmt.Errorf("plot %s: %w", path, err)
		}
		bars.LineStyle.Width = 0
		bars.Color = color.Gray{Y: uint8(225 - 20*hi)}
		p.Add(bars)
		p.Legend.Add(h.Label, bars)
	}
	var lines []any
	for _, s := range series {
		layers, bits := LayerAverages(s.Alloc)
		if len(layers) != len(ref) {
			return fmt.Errorf("plot %s: %s has %d layers, %s has %d", path, s.Label, len(layers), series[0].Label, len(ref))
		}
		xy := make(plotter.XYs, len(layers))
		for i, l := range layers {
			j, ok := pos[l]
			if !ok {
				return fmt.Errorf("plot %s: %s has layer %q that %s lacks", path, s.Label, l, series[0].Label)
			}
			xy[j] = plotter.XY{X: float64(j), Y: bits[i]}
		}
		lines = append(lines, fmt.Sprintf("%s (%.2f bits)", s.Label, s.Alloc.AvgBits), xy)
	}
	if err := plotutil.AddLinePoints(p, lines...); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	p.Y.Min, p.Y.Max = 0, solver.MaxBits+0.5
	return save(p, path, 8*vg.Inch, 4*vg.Inch)
}
