package calib

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/qformat"
)

// Unit is one quantization unit: output channels [Lo, Hi) of layer
// Layers[Layer] (a whole layer at layer granularity).
type Unit struct {
	Layer  int // index into the backbone's QuantLayers
	Group  int
	Lo, Hi int
}

// LayerUnits splits a layer with out output channels into groups of
// groupSize channels (the last group smaller when groupSize does not divide
// out); groupSize 0 gives one unit for the whole layer.
func LayerUnits(layer, out, groupSize int) []Unit {
	if groupSize <= 0 || groupSize >= out {
		return []Unit{{Layer: layer, Group: 0, Lo: 0, Hi: out}}
	}
	var us []Unit
	for g, lo := 0, 0; lo < out; g, lo = g+1, lo+groupSize {
		us = append(us, Unit{Layer: layer, Group: g, Lo: lo, Hi: min(lo+groupSize, out)})
	}
	return us
}

// CheckGroupSize validates --group-size: a positive multiple of the kernel
// tile (qformat.TileN = 16 channels), since a group shares one bit-width
// in the packed format.
func CheckGroupSize(gs int) error {
	if gs <= 0 || gs%qformat.TileN != 0 {
		return fmt.Errorf("group size %d: want a positive multiple of %d (the kernel tile)", gs, qformat.TileN)
	}
	return nil
}

// ParseLayerRange parses "A:B" (layer indices in forward order, half-open,
// either end optional, negative counting from the end) for n layers.
func ParseLayerRange(s string, n int) ([]int, error) {
	a, b, ok := strings.Cut(s, ":")
	if !ok {
		return nil, fmt.Errorf("--layers %q: want A:B (half-open layer index range, e.g. 0:12)", s)
	}
	lo, hi := 0, n
	parse := func(t string, def int) (int, error) {
		if t == "" {
			return def, nil
		}
		v, err := strconv.Atoi(t)
		if err != nil {
			return 0, fmt.Errorf("--layers %q: %q is not an integer", s, t)
		}
		if v < 0 {
			v += n
		}
		return v, nil
	}
	var err error
	if lo, err = parse(a, 0); err != nil {
		return nil, err
	}
	if hi, err = parse(b, n); err != nil {
		return nil, err
	}
	if lo < 0 || hi > n || lo >= hi {
		return nil, fmt.Errorf("--layers %q: empty or outside the model's %d quantizable layers", s, n)
	}
	out := make([]int, 0, hi-lo)
	for i := lo; i < hi; i++ {
		out = append(out, i)
	}
	return out, nil
}

// ParseShard parses "i/n" (0 ≤ i < n) and returns the layers of shard i:
// every n-th layer starting at i, which balances shallow (expensive in
// exact mode) and deep layers across shards.
func ParseShard(s string, layers []int) ([]int, int, int, error) {
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n <= 0 || i < 0 || i >= n {
		return nil, 0, 0, fmt.Errorf("--shard %q: want i/n with 0 <= i < n", s)
	}
	var out []int
	for k := i; k < len(layers); k += n {
		out = append(out, layers[k])
	}
	if len(out) == 0 {
		return nil, 0, 0, fmt.Errorf("--shard %s: no layers (only %d to share)", s, len(layers))
	}
	return out, i, n, nil
}

// blockOf maps every quantizable layer to the index of the block holding it.
func blockOf(bb model.Backbone) map[string]int {
	m := map[string]int{}
	for i, b := range bb.Blocks() {
		for _, l := range b.Linears {
			m[l.Name] = i
		}
	}
	return m
}
