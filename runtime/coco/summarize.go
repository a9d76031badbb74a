package coco

import (
	"fmt"
	"strings"
)

// summaryDef is one line of COCOeval.summarize().
type summaryDef struct {
	ap      bool
	iouThr  float64 // 0: all thresholds
	area    string
	maxDets int // index into MaxDets
}

var summaryDefs = [12]summaryDef{
	{true, 0, "all", 2}, {true, .5, "all", 2}, {true, .75, "all", 2},
	{true, 0, "small", 2}, {true, 0, "medium", 2}, {true, 0, "large", 2},
	{false, 0, "all", 0}, {false, 0, "all", 1}, {false, 0, "all", 2},
	{false, 0, "small", 2}, {false, 0, "medium", 2}, {false, 0, "large", 2},
}

// StatNames are short names of the 12 stats, in order.
var StatNames = [12]string{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"}

func (e *Eval) summarize() {
	for i, s := range summaryDefs {
		e.Stats[i] = e.summaryValue(s)
	}
}

// summaryValue is _summarize: the mean of the selected entries that are
// > -1 (NumPy's pairwise sum, then a division), or -1 if there are none.
func (e *Eval) summaryValue(s summaryDef) float64 {
	p := &e.Params
	T, R, K := len(p.IoUThrs), len(p.RecThrs), len(p.CatIDs)
	var ts []int
	for t, thr := range p.IoUThrs {
		// np.where(iouThr == p.iouThrs): an exact float comparison.
		if s.iouThr == 0 || thr == s.iouThr {
			ts = append(ts, t)
		}
	}
	a := -1
	for i, l := range p.AreaLbl {
		if l == s.area {
			a = i
		}
	}
	m := s.maxDets
	var vals []float64
	for _, t := range ts {
		if s.ap {
			for r := 0; r < R; r++ {
				for k := 0; k < K; k++ {
					if v := e.PrecisionAt(t, r, k, a, m); v > -1 {
						vals = append(vals, v)
					}
				}
			}
		} else {
			for k := 0; k < K; k++ {
				if v := e.RecallAt(t, k, a, m); v > -1 {
					vals = append(vals, v)
				}
			}
		}
	}
	_ = T
	if len(vals) == 0 {
		return -1
	}
	return pairwiseSum(vals) / float64(len(vals))
}

// pairwiseSum is NumPy's pairwise summation of float64 (the add.reduce
// inner loop), so means agree with np.mean to the last bit.
func pairwiseSum(a []float64) float64 {
	n := len(a)
	switch {
	case n < 8:
		res := 0.0
		for _, v := range a {
			res += v
		}
		return res
	case n <= 128:
		var r [8]float64
		copy(r[:], a[:8])
		i := 8
		for ; i < n-n%8; i += 8 {
			for j := 0; j < 8; j++ {
				r[j] += a[i+j]
			}
		}
		res := ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
		for ; i < n; i++ {
			res += a[i]
		}
		return res
	}
	n2 := n / 2
	n2 -= n2 % 8
	return pairwiseSum(a[:n2]) + pairwiseSum(a[n2:])
}

// Summary is the text COCOeval.summarize() prints: 12 lines in
// pycocotools' layout.
func (e *Eval) Summary() string {
	var b strings.Builder
	for i, s := range summaryDefs {
		title, typ := "Average Recall", "(AR)"
		if s.ap {
			title, typ = "Average Precision", "(AP)"
		}
		iou := fmt.Sprintf("%0.2f:%0.2f", e.IoUThrs[0], e.IoUThrs[len(e.IoUThrs)-1])
		if s.iouThr != 0 {
			iou = fmt.Sprintf("%0.2f", s.iouThr)
		}
		fmt.Fprintf(&b, " %-18s %s @[ IoU=%-9s | area=%6s | maxDets=%3d ] = %0.3f\n",
			title, typ, iou, s.area, e.MaxDets[s.maxDets], e.Stats[i])
	}
	return b.String()
}

// CategoryResult is AP and AR@100 of one category (area all, 100
// detections); -1 when the category has no ground truth.
type CategoryResult struct {
	CategoryID int64
	AP, AR100  float64
}

// PerCategory returns AP and AR@100 for every category, in id order.
func (e *Eval) PerCategory() []CategoryResult {
	p := &e.Params
	T, R := len(p.IoUThrs), len(p.RecThrs)
	m := len(p.MaxDets) - 1
	out := make([]CategoryResult, len(p.CatIDs))
	for k, id := range p.CatIDs {
		var ap, ar []float64
		for t := 0; t < T; t++ {
			for r := 0; r < R; r++ {
				if v := e.PrecisionAt(t, r, k, 0, m); v > -1 {
					ap = append(ap, v)
				}
			}
			if v := e.RecallAt(t, k, 0, m); v > -1 {
				ar = append(ar, v)
			}
		}
		out[k] = CategoryResult{CategoryID: id, AP: meanOrMinus1(ap), AR100: meanOrMinus1(ar)}
	}
	return out
}

func meanOrMinus1(v []float64) float64 {
	if len(v) == 0 {
		return -1
	}
	return pairwiseSum(v) / float64(len(v))
}
