package calib

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/flbq/flbq/solver"
)

// MergeKeys are the meta fields that must agree between shards.
var MergeKeys = []string{"model", "model_sha256", "image_ids", "seed", "granularity", "group_size", "mode", "rule", "anchors", "anchor_images", "layer_order", "distortion"}

// Merge joins the curves of shards of one calibration (flbq calibrate
// --shard i/n or --layers A:B): bits and the MergeKeys meta fields must be
// equal, no unit may appear twice, and unless partial is set every layer of
// the meta's layer_order must be present. Units come out in the model's
// layer order; meta seconds are summed.
func Merge(shards []*solver.Curves, names []string, partial bool) (*solver.Curves, error) {
	if len(shards) == 0 {
		return nil, fmt.Errorf("merge: no curves")
	}
	first := shards[0]
	out := &solver.Curves{Bits: append([]int(nil), first.Bits...), Meta: map[string]any{}}
	for k, v := range first.Meta {
		out.Meta[k] = v
	}
	delete(out.Meta, "shard")
	delete(out.Meta, "layers")
	var secs float64
	seen := map[solver.UnitID]string{}
	for i, c := range shards {
		if !reflect.DeepEqual(c.Bits, first.Bits) {
			return nil, fmt.Errorf("%s: bits %v differ from %s's %v", names[i], c.Bits, names[0], first.Bits)
		}
		for _, k := range MergeKeys {
			if !reflect.DeepEqual(c.Meta[k], first.Meta[k]) {
				return nil, fmt.Errorf("%s: meta %q differs from %s's: the shards come from different calibrations", names[i], k, names[0])
			}
		}
		if s, ok := c.Meta["seconds"].(float64); ok {
			secs += s
		}
		for _, u := range c.Units {
			if prev, dup := seen[u.UnitID]; dup {
				return nil, fmt.Errorf("%s: unit %s also in %s", names[i], u.UnitID, prev)
			}
			seen[u.UnitID] = names[i]
			out.Units = append(out.Units, u)
		}
	}
	order := map[string]int{}
	var layers []string
	if lo, ok := first.Meta["layer_order"].([]any); ok {
		for i, v := range lo {
			if s, ok := v.(string); ok {
				order[s] = i
				layers = append(layers, s)
			}
		}
	}
	if len(layers) > 0 {
		have := map[string]bool{}
		for _, u := range out.Units {
			if _, ok := order[u.Layer]; !ok {
				return nil, fmt.Errorf("unit %s: layer not in the meta's layer_order", u.UnitID)
			}
			have[u.Layer] = true
		}
		var missing []string
		for _, l := range layers {
			if !have[l] {
				missing = append(missing, l)
			}
		}
		if len(missing) > 0 && !partial {
			more := ""
			if len(missing) > 5 {
				more = fmt.Sprintf(" (and %d more)", len(missing)-5)
				missing = missing[:5]
			}
			return nil, fmt.Errorf("merge: no curves for layer(s) %s%s: a shard is missing (or pass --allow-partial)", strings.Join(missing, ", "), more)
		}
		sort.SliceStable(out.Units, func(a, b int) bool {
			ua, ub := out.Units[a], out.Units[b]
			if ua.Layer != ub.Layer {
				return order[ua.Layer] < order[ub.Layer]
			}
			return ua.Group < ub.Group
		})
	}
	out.Meta["seconds"] = secs
	out.Meta["merged_from"] = len(shards)
	return out, nil
}
