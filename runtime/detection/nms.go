package detection

import (
	"fmt"
	"math"
	"sort"

	"github.com/flbq/flbq/runtime/nn"
)

// greaterNaNFirst orders a before b in a descending sort the way torch's
// CPU sort does: NaN is treated as larger than every number.
func greaterNaNFirst(a, b float32) bool {
	an, bn := a != a, b != b
	if an || bn {
		return an && !bn
	}
	return a > b
}

// ArgsortDesc returns indices sorting scores in descending order, stably
// (equal scores keep their input order), NaN first: torch's
// scores.sort(stable=True, descending=True) on CPU.
func ArgsortDesc(scores []float32) []int {
	idx := make([]int, len(scores))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return greaterNaNFirst(scores[idx[a]], scores[idx[b]]) })
	return idx
}

// TopK returns the indices of the k largest scores in descending order
// (k is clamped to len(scores)). Ties are broken by the lower index.
func TopK(scores []float32, k int) []int {
	if k > len(scores) {
		k = len(scores)
	}
	if k <= 0 {
		return []int{}
	}
	idx := ArgsortDesc(scores)
	return idx[:k:k]
}

// NMS is torchvision.ops.nms on CPU: boxes (n×4, x1y1x2y2) are visited in
// descending score order (stable); a box is suppressed when its IoU with a
// kept box is strictly greater than iouThreshold. IoU is computed in
// float32 exactly as torchvision's kernel and compared in float64. The
// result holds indices into boxes, in descending score order.
func NMS(boxes, scores []float32, iouThreshold float64) ([]int, error) {
	n, err := checkBoxes("boxes", boxes)
	if err != nil {
		return nil, err
	}
	if len(scores) != n {
		return nil, fmt.Errorf("detection: nms: %d scores for %d boxes", len(scores), n)
	}
	return nmsSorted(boxes, ArgsortDesc(scores), iouThreshold), nil
}

func nmsSorted(boxes []float32, order []int, thr float64) []int {
	n := len(order)
	keep := make([]int, 0, n)
	if n == 0 {
		return keep
	}
	// Boxes and areas gathered in visiting order (structure of arrays) so
	// the inner loop streams through memory; the arithmetic is unchanged.
	buf := make([]float32, 5*n)
	x1, y1, x2, y2, area := buf[:n], buf[n:2*n], buf[2*n:3*n], buf[3*n:4*n], buf[4*n:]
	finite := true // no NaN coordinate
	for k, i := range order {
		b := boxes[4*i : 4*i+4]
		x1[k], y1[k], x2[k], y2[k] = b[0], b[1], b[2], b[3]
		area[k] = float32((b[2] - b[0]) * (b[3] - b[1]))
		finite = finite && b[0] == b[0] && b[1] == b[1] && b[2] == b[2] && b[3] == b[3]
	}
	suppressed := make([]bool, n)
	for a := 0; a < n; a++ {
		if suppressed[a] {
			continue
		}
		keep = append(keep, order[a])
		ix1, iy1, ix2, iy2, iarea := x1[a], y1[a], x2[a], y2[a], area[a]
		sx1 := x1[a+1:]
		sy1 := y1[a+1 : a+1+len(sx1)]
		sx2 := x2[a+1 : a+1+len(sx1)]
		sy2 := y2[a+1 : a+1+len(sx1)]
		sar := area[a+1 : a+1+len(sx1)]
		sup := suppressed[a+1 : a+1+len(sx1)]
		if finite {
			// Without NaNs the builtin min/max (branch-free) give what
			// std::min/std::max give, up to the sign of a zero, which
			// no difference below can see; the overlaps of already
			// suppressed boxes are computed too, as that costs less than
			// the branch.
			for j := range sx1 {
				w := max(0, min(ix2, sx2[j])-max(ix1, sx1[j]))
				h := max(0, min(iy2, sy2[j])-max(iy1, sy1[j]))
				inter := float32(w * h)
				ovr := inter / (float32(iarea+sar[j]) - inter)
				if float64(ovr) > thr {
					sup[j] = true
				}
			}
			continue
		}
		for j := range sx1 {
			if sup[j] {
				continue
			}
			xx1 := fmax(ix1, sx1[j])
			yy1 := fmax(iy1, sy1[j])
			xx2 := fmin(ix2, sx2[j])
			yy2 := fmin(iy2, sy2[j])
			w := fmax(0, xx2-xx1)
			h := fmax(0, yy2-yy1)
			inter := float32(w * h)
			ovr := inter / (float32(iarea+sar[j]) - inter)
			if float64(ovr) > thr {
				sup[j] = true
			}
		}
	}
	return keep
}

// fmax/fmin follow std::max/std::min: std::max(a, b) returns a unless a < b.
func fmax(a, b float32) float32 {
	if a < b {
		return b
	}
	return a
}

func fmin(a, b float32) float32 {
	if b < a {
		return b
	}
	return a
}

// BatchedNMS is torchvision.ops.batched_nms: NMS independently per
// category idxs[i]. Like torchvision on CPU it uses the coordinate-offset
// trick (boxes shifted by idx·(max coordinate + 1), in float32) when
// 4·n <= 4000 and per-category NMS ("vanilla") above that; both return
// indices sorted by descending score, ties in input order.
func BatchedNMS(boxes, scores []float32, idxs []int, iouThreshold float64) ([]int, error) {
	n, err := checkBoxes("boxes", boxes)
	if err != nil {
		return nil, err
	}
	if len(scores) != n || len(idxs) != n {
		return nil, fmt.Errorf("detection: batched_nms: %d boxes, %d scores, %d category ids", n, len(scores), len(idxs))
	}
	if n == 0 {
		return []int{}, nil
	}
	if 4*n > 4000 {
		return batchedNMSVanilla(boxes, scores, idxs, iouThreshold), nil
	}
	return batchedNMSCoordinateTrick(boxes, scores, idxs, iouThreshold), nil
}

func batchedNMSCoordinateTrick(boxes, scores []float32, idxs []int, thr float64) []int {
	maxC := float32(math.Inf(-1))
	for _, v := range boxes {
		if v != v {
			maxC = v
			break
		}
		if v > maxC {
			maxC = v
		}
	}
	shifted := make([]float32, len(boxes))
	for i := range idxs {
		off := float32(float32(idxs[i]) * (maxC + 1))
		for c := 0; c < 4; c++ {
			shifted[4*i+c] = boxes[4*i+c] + off
		}
	}
	return nmsSorted(shifted, ArgsortDesc(scores), thr)
}

func batchedNMSVanilla(boxes, scores []float32, idxs []int, thr float64) []int {
	groups := map[int][]int{}
	var classes []int
	for i, c := range idxs {
		if _, ok := groups[c]; !ok {
			classes = append(classes, c)
		}
		groups[c] = append(groups[c], i)
	}
	sort.Ints(classes)
	keepMask := make([]bool, len(idxs))
	// Categories are independent (disjoint index sets): run them in parallel.
	nn.ParallelFor(len(classes), 1, func(lo, hi int) {
		for _, c := range classes[lo:hi] {
			cur := groups[c]
			b := GatherBoxes(boxes, cur)
			s := gather32(scores, cur)
			for _, k := range nmsSorted(b, ArgsortDesc(s), thr) {
				keepMask[cur[k]] = true
			}
		}
	})
	var keep []int
	for i, k := range keepMask {
		if k {
			keep = append(keep, i)
		}
	}
	ks := gather32(scores, keep)
	order := ArgsortDesc(ks)
	return gatherInt(keep, order)
}
