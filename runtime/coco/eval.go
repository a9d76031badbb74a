package coco

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/cocomask"
)

// IoUType selects box or mask evaluation.
type IoUType int

const (
	BBox IoUType = iota // box AP ("bbox")
	Segm                // mask AP ("segm")
)

func (t IoUType) String() string {
	if t == Segm {
		return "segm"
	}
	return "bbox"
}

// ParseIoUType reads "bbox" or "segm".
func ParseIoUType(s string) (IoUType, error) {
	switch s {
	case "bbox":
		return BBox, nil
	case "segm":
		return Segm, nil
	}
	return 0, fmt.Errorf("unknown iou type %q (want bbox or segm)", s)
}

// Params are COCOeval's parameters. DefaultParams gives pycocotools'
// defaults, which Evaluate uses.
type Params struct {
	IoUThrs  []float64    // T = 10: linspace(0.5, 0.95, 10)
	RecThrs  []float64    // R = 101: linspace(0, 1, 101)
	AreaRng  [][2]float64 // all, small, medium, large (both ends inclusive)
	AreaLbl  []string
	MaxDets  []int // 1, 10, 100 (ascending)
	ImgIDs   []int64
	CatIDs   []int64
	IoUType  IoUType
	useCats  bool
	segmArea bool
}

// linspace is numpy.linspace(start, stop, num) in float64, computed at
// run time exactly as NumPy does: i*step + start, the last value = stop.
func linspace(start, stop float64, num int) []float64 {
	y := make([]float64, num)
	step := (stop - start) / float64(num-1)
	for i := range y {
		y[i] = float64(float64(i)*step) + start
	}
	y[num-1] = stop
	return y
}

var (
	iouLo, iouHi = 0.5, 0.95 // variables: keep the arithmetic at run time
	recLo, recHi = 0.0, 1.0
)

// DefaultParams returns pycocotools' default parameters for iouType
// (image and category ids are filled in by Evaluate).
func DefaultParams(iouType IoUType) Params {
	return Params{
		IoUThrs: linspace(iouLo, iouHi, 10),
		RecThrs: linspace(recLo, recHi, 101),
		AreaRng: [][2]float64{{0, 1e10}, {0, 32 * 32}, {32 * 32, 96 * 96}, {96 * 96, 1e10}},
		AreaLbl: []string{"all", "small", "medium", "large"},
		MaxDets: []int{1, 10, 100},
		IoUType: iouType,
	}
}

// Options tune Evaluate; the zero value is fine.
type Options struct {
	// Progress, if set, is called (from any goroutine, serially) with the
	// number of (image, category) pairs evaluated so far and the total.
	Progress func(done, total int)
}

// Eval holds the accumulated evaluation (COCOeval.eval) and the summary.
type Eval struct {
	Params
	// Precision is [T][R][K][A][M] and Recall [T][K][A][M], row-major;
	// -1 where a category has no ground truth in that area range.
	Precision []float64
	Recall    []float64
	// Stats are the 12 numbers of COCOeval.summarize().
	Stats [12]float64
	// SkippedDets counts detections whose category is not in the ground
	// truth's categories (pycocotools leaves them out silently).
	SkippedDets int
}

// PrecisionAt returns precision[t][r][k][a][m].
func (e *Eval) PrecisionAt(t, r, k, a, m int) float64 {
	R, K, A, M := len(e.RecThrs), len(e.CatIDs), len(e.AreaRng), len(e.MaxDets)
	return e.Precision[(((t*R+r)*K+k)*A+a)*M+m]
}

// RecallAt returns recall[t][k][a][m].
func (e *Eval) RecallAt(t, k, a, m int) float64 {
	K, A, M := len(e.CatIDs), len(e.AreaRng), len(e.MaxDets)
	return e.Recall[((t*K+k)*A+a)*M+m]
}

// evalPair is evaluateImg's result for one (image, category) pair, for
// every area range.
type evalPair struct {
	k      int32
	scores []float64 // dtScores: top maxDet, by descending score
	state  []uint8   // [A][T][D]: stFP, stTP or stIgnore
	npig   []int32   // [A] non-ignored ground truths
}

const (
	stFP uint8 = iota
	stTP
	stIgnore
)

type pairRef struct {
	k, i   int32
	gt, dt []int32 // indices into Annotations / dets, in file order
}

type keyIdx struct {
	key int64
	idx int32
}

// Evaluate runs COCOeval (evaluate, accumulate, summarize) with default
// parameters on ground truth gt and detections dets.
//
// Detections are prepared as pycocotools' loadRes does: a detection's
// area is w·h of its "bbox" for iouType bbox; for segm it is the pixel
// area of its mask (detectron2's convention, which removes "bbox" before
// loadRes). A detection without a mask is evaluated in segm as the
// rectangle of its box (area w·h); one without a box gets the bounding
// box of its mask (area = mask area). Detections on images absent from
// gt are an error; those of categories absent from gt are skipped.
func Evaluate(gt *Dataset, dets []Result, iouType IoUType, opt Options) (*Eval, error) {
	p := DefaultParams(iouType)
	imgIdx := make(map[int64]int32, len(gt.Images))
	imgs := make([]int, 0, len(gt.Images)) // indices into gt.Images, by id
	for i, im := range gt.Images {
		if _, dup := imgIdx[im.ID]; dup {
			continue
		}
		imgIdx[im.ID] = 0
		imgs = append(imgs, i)
	}
	slices.SortFunc(imgs, func(a, b int) int { return cmp.Compare(gt.Images[a].ID, gt.Images[b].ID) })
	for n, i := range imgs {
		p.ImgIDs = append(p.ImgIDs, gt.Images[i].ID)
		imgIdx[gt.Images[i].ID] = int32(n)
	}
	catIdx := make(map[int64]int32, len(gt.Categories))
	for _, c := range gt.Categories {
		catIdx[c.ID] = 0
	}
	for id := range catIdx {
		p.CatIDs = append(p.CatIDs, id)
	}
	slices.Sort(p.CatIDs)
	for n, id := range p.CatIDs {
		catIdx[id] = int32(n)
	}
	nI := int64(len(p.ImgIDs))

	// Group ground truth and detections by (category, image), keeping
	// file order inside a group.
	gk := make([]keyIdx, 0, len(gt.Annotations))
	for n := range gt.Annotations {
		a := &gt.Annotations[n]
		i, ok1 := imgIdx[a.ImageID]
		k, ok2 := catIdx[a.CategoryID]
		if !ok1 || !ok2 {
			continue // Validate rejects these; pycocotools ignores them
		}
		gk = append(gk, keyIdx{int64(k)*nI + int64(i), int32(n)})
	}
	e := &Eval{Params: p}
	dk := make([]keyIdx, 0, len(dets))
	for n := range dets {
		d := &dets[n]
		i, ok := imgIdx[d.ImageID]
		if !ok {
			return nil, fmt.Errorf("results[%d]: image_id %d is not in the ground truth", n, d.ImageID)
		}
		k, ok := catIdx[d.CategoryID]
		if !ok {
			e.SkippedDets++
			continue
		}
		dk = append(dk, keyIdx{int64(k)*nI + int64(i), int32(n)})
	}
	// A stable sort by key: ties keep file order (idx ascending).
	byKey := func(a, b keyIdx) int {
		if c := cmp.Compare(a.key, b.key); c != 0 {
			return c
		}
		return cmp.Compare(a.idx, b.idx)
	}
	slices.SortFunc(gk, byKey)
	slices.SortFunc(dk, byKey)
	var pairs []pairRef
	for g, d := 0, 0; g < len(gk) || d < len(dk); {
		key := int64(1 << 62)
		if g < len(gk) {
			key = gk[g].key
		}
		if d < len(dk) && dk[d].key < key {
			key = dk[d].key
		}
		pr := pairRef{k: int32(key / nI), i: int32(key % nI)}
		for ; g < len(gk) && gk[g].key == key; g++ {
			pr.gt = append(pr.gt, gk[g].idx)
		}
		for ; d < len(dk) && dk[d].key == key; d++ {
			pr.dt = append(pr.dt, dk[d].idx)
		}
		pairs = append(pairs, pr)
	}

	res, err := evaluatePairs(gt, dets, imgs, pairs, &p, opt)
	if err != nil {
		return nil, err
	}
	e.accumulate(res, opt)
	e.summarize()
	return e, nil
}

// pairError is an error attached to the entry that caused it, so the
// first one in file order is reported whatever the scheduling.
type pairError struct {
	order int64
	err   error
}

func evaluatePairs(gt *Dataset, dets []Result, imgs []int, pairs []pairRef, p *Params, opt Options) ([]evalPair, error) {
	res := make([]evalPair, len(pairs))
	workers := backend.Threads()
	var next, done atomic.Int64
	var mu sync.Mutex
	var firstErr *pairError
	var wg sync.WaitGroup
	const chunk = 64
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ev := newPairEvaluator(gt, dets, imgs, p)
			for {
				lo := int(next.Add(chunk)) - chunk
				if lo >= len(pairs) {
					return
				}
				hi := min(lo+chunk, len(pairs))
				for n := lo; n < hi; n++ {
					if pe := ev.run(&pairs[n], &res[n]); pe != nil {
						mu.Lock()
						if firstErr == nil || pe.order < firstErr.order {
							firstErr = pe
						}
						mu.Unlock()
					}
				}
				d := done.Add(int64(hi - lo))
				if opt.Progress != nil {
					mu.Lock()
					opt.Progress(int(d), len(pairs))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr.err
	}
	return res, nil
}

// pairEvaluator holds one worker's scratch space.
type pairEvaluator struct {
	gt   *Dataset
	dets []Result
	imgs []int
	p    *Params

	order    []int32
	dBox     []cocomask.Box
	dArea    []float64
	dMask    []cocomask.RLE
	gBox     []cocomask.Box
	gMask    []cocomask.RLE
	gCrowd   []bool
	gArea    []float64
	gID      []int64
	ious     []float64
	gIg      []bool
	gOrd     []int
	gMatched []bool
	dMatched []bool // matched gt id != 0
	dIg      []bool
}

func newPairEvaluator(gt *Dataset, dets []Result, imgs []int, p *Params) *pairEvaluator {
	return &pairEvaluator{gt: gt, dets: dets, imgs: imgs, p: p}
}

func (ev *pairEvaluator) run(pr *pairRef, out *evalPair) *pairError {
	p := ev.p
	maxDet := p.MaxDets[len(p.MaxDets)-1]
	img := &ev.gt.Images[ev.imgs[pr.i]]
	out.k = pr.k

	// Detections: stable sort by descending score, keep maxDet.
	ev.order = append(ev.order[:0], pr.dt...)
	// mergesort on -score: stable, so ties keep file order (ascending
	// index), which the tie-break makes explicit for an unstable sort.
	slices.SortFunc(ev.order, func(a, b int32) int {
		if c := cmp.Compare(ev.dets[b].Score, ev.dets[a].Score); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	if p.IoUType == Segm {
		// Check every mask of the pair, even those past maxDet.
		for _, n := range ev.order[min(maxDet, len(ev.order)):] {
			if d := &ev.dets[n]; d.Segmentation.Kind != SegNone {
				if _, err := d.Segmentation.ToRLE(img.Height, img.Width); err != nil {
					return &pairError{order: 1<<40 + int64(n), err: fmt.Errorf("results[%d]: segmentation: %w", n, err)}
				}
			}
		}
	}
	if len(ev.order) > maxDet {
		ev.order = ev.order[:maxDet]
	}
	D := len(ev.order)
	ev.dBox = ev.dBox[:0]
	ev.dArea = ev.dArea[:0]
	ev.dMask = ev.dMask[:0]
	out.scores = make([]float64, D)
	for j, n := range ev.order {
		d := &ev.dets[n]
		out.scores[j] = d.Score
		var box cocomask.Box
		var area float64
		var mask cocomask.RLE
		needMask := p.IoUType == Segm || !d.HasBBox
		if needMask {
			var err error
			if d.Segmentation.Kind != SegNone {
				mask, err = d.Segmentation.ToRLE(img.Height, img.Width)
				if err != nil {
					return &pairError{order: 1<<40 + int64(n), err: fmt.Errorf("results[%d]: segmentation: %w", n, err)}
				}
				area = float64(mask.Area())
				if d.HasBBox {
					box = d.BBox
				} else {
					box = mask.ToBbox()
				}
			} else {
				// loadRes: the box becomes a rectangle polygon.
				x1, x2, y1, y2 := d.BBox[0], d.BBox[0]+d.BBox[2], d.BBox[1], d.BBox[1]+d.BBox[3]
				mask, err = cocomask.FrPoly([]float64{x1, y1, x1, y2, x2, y2, x2, y1}, img.Height, img.Width)
				if err != nil {
					return &pairError{order: 1<<40 + int64(n), err: fmt.Errorf("results[%d]: bbox: %w", n, err)}
				}
				box = d.BBox
				area = float64(d.BBox[2] * d.BBox[3])
			}
		} else {
			box = d.BBox
			area = float64(d.BBox[2] * d.BBox[3])
		}
		if p.IoUType == Segm {
			box = mask.ToBbox() // rleIou's prefilter uses the masks' boxes
			ev.dMask = append(ev.dMask, mask)
		}
		ev.dBox = append(ev.dBox, box)
		ev.dArea = append(ev.dArea, area)
	}

	// Ground truth, in file order.
	G := len(pr.gt)
	ev.gBox = ev.gBox[:0]
	ev.gMask = ev.gMask[:0]
	ev.gCrowd = ev.gCrowd[:0]
	ev.gArea = ev.gArea[:0]
	ev.gID = ev.gID[:0]
	for _, n := range pr.gt {
		a := &ev.gt.Annotations[n]
		ev.gCrowd = append(ev.gCrowd, a.IsCrowd)
		ev.gArea = append(ev.gArea, a.Area)
		ev.gID = append(ev.gID, a.ID)
		if p.IoUType == Segm {
			m, err := a.Segmentation.ToRLE(img.Height, img.Width)
			if err != nil {
				return &pairError{order: int64(n), err: fmt.Errorf("annotations[%d] (id %d): segmentation: %w", n, a.ID, err)}
			}
			ev.gMask = append(ev.gMask, m)
			ev.gBox = append(ev.gBox, m.ToBbox())
		} else {
			if !a.HasBBox() {
				return &pairError{order: int64(n), err: fmt.Errorf("annotations[%d] (id %d): no bbox for bbox evaluation", n, a.ID)}
			}
			ev.gBox = append(ev.gBox, a.BBox)
		}
	}

	// IoUs [D][G] (computeIoU): none when either side is empty.
	haveIoU := D > 0 && G > 0
	if haveIoU {
		ev.ious = slices.Grow(ev.ious[:0], D*G)[:D*G]
		for d := 0; d < D; d++ {
			for g := 0; g < G; g++ {
				var v float64
				if p.IoUType == Segm {
					v = cocomask.MaskIoU(ev.dMask[d], ev.gMask[g], ev.dBox[d], ev.gBox[g], ev.gCrowd[g])
				} else {
					v = cocomask.BoxIoU(ev.dBox[d], ev.gBox[g], ev.gCrowd[g])
				}
				ev.ious[d*G+g] = v
			}
		}
	}

	// evaluateImg for every area range.
	T, A := len(p.IoUThrs), len(p.AreaRng)
	out.state = make([]uint8, A*T*D)
	out.npig = make([]int32, A)
	ev.gIg = slices.Grow(ev.gIg[:0], G)[:G]
	ev.gMatched = slices.Grow(ev.gMatched[:0], G)[:G]
	ev.dMatched = slices.Grow(ev.dMatched[:0], D)[:D]
	ev.dIg = slices.Grow(ev.dIg[:0], D)[:D]
	for a, rng := range p.AreaRng {
		// gt sorted with ignored ones last (stable).
		ev.gOrd = ev.gOrd[:0]
		np := int32(0)
		for g := 0; g < G; g++ {
			ev.gIg[g] = ev.gCrowd[g] || ev.gArea[g] < rng[0] || ev.gArea[g] > rng[1]
			if !ev.gIg[g] {
				ev.gOrd = append(ev.gOrd, g)
				np++
			}
		}
		for g := 0; g < G; g++ {
			if ev.gIg[g] {
				ev.gOrd = append(ev.gOrd, g)
			}
		}
		out.npig[a] = np
		for t, thr := range p.IoUThrs {
			clear(ev.gMatched)
			st := out.state[(a*T+t)*D : (a*T+t+1)*D]
			for d := 0; d < D; d++ {
				ev.dMatched[d], ev.dIg[d] = false, false
				if !haveIoU {
					continue
				}
				iou := min(thr, 1-1e-10)
				m := -1
				for _, g := range ev.gOrd {
					if ev.gMatched[g] && !ev.gCrowd[g] {
						continue
					}
					if m > -1 && !ev.gIg[m] && ev.gIg[g] {
						break
					}
					if ev.ious[d*G+g] < iou {
						continue
					}
					iou = ev.ious[d*G+g]
					m = g
				}
				if m == -1 {
					continue
				}
				ev.dIg[d] = ev.gIg[m]
				ev.dMatched[d] = ev.gID[m] != 0 // dtMatches holds the gt id
				ev.gMatched[m] = true
			}
			for d := 0; d < D; d++ {
				ig := ev.dIg[d] || (!ev.dMatched[d] && (ev.dArea[d] < rng[0] || ev.dArea[d] > rng[1]))
				switch {
				case ig:
					st[d] = stIgnore
				case ev.dMatched[d]:
					st[d] = stTP
				default:
					st[d] = stFP
				}
			}
		}
	}
	return nil
}

// accumulate is COCOeval.accumulate over the per-pair results, which are
// ordered by category, then image id.
func (e *Eval) accumulate(res []evalPair, opt Options) {
	p := &e.Params
	T, R, K, A, M := len(p.IoUThrs), len(p.RecThrs), len(p.CatIDs), len(p.AreaRng), len(p.MaxDets)
	e.Precision = make([]float64, T*R*K*A*M)
	e.Recall = make([]float64, T*K*A*M)
	for i := range e.Precision {
		e.Precision[i] = -1
	}
	for i := range e.Recall {
		e.Recall[i] = -1
	}
	// pairs of category k: res[start[k]:start[k+1]]
	start := make([]int, K+1)
	for _, r := range res {
		start[r.k+1]++
	}
	for k := 0; k < K; k++ {
		start[k+1] += start[k]
	}
	workers := backend.Threads()
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ent []accEntry
			var rc, pr []float64
			for {
				k := int(next.Add(1)) - 1
				if k >= K {
					return
				}
				E := res[start[k]:start[k+1]]
				if len(E) == 0 {
					continue
				}
				for m, maxDet := range p.MaxDets {
					ent = ent[:0]
					for pi := range E {
						for d := 0; d < len(E[pi].scores) && d < maxDet; d++ {
							ent = append(ent, accEntry{E[pi].scores[d], int32(pi), int32(d)})
						}
					}
					// Stable sort by descending score: ties stay in image
					// order, then detection order.
					slices.SortFunc(ent, func(x, y accEntry) int {
						if c := cmp.Compare(y.score, x.score); c != 0 {
							return c
						}
						if c := cmp.Compare(x.pair, y.pair); c != 0 {
							return c
						}
						return cmp.Compare(x.d, y.d)
					})
					nd := len(ent)
					rc = slices.Grow(rc[:0], nd)[:nd]
					pr = slices.Grow(pr[:0], nd)[:nd]
					for a := 0; a < A; a++ {
						npig := 0
						for pi := range E {
							npig += int(E[pi].npig[a])
						}
						if npig == 0 {
							continue
						}
						for t := 0; t < T; t++ {
							var tp, fp int
							for i, en := range ent {
								ep := &E[en.pair]
								D := len(ep.scores)
								switch ep.state[(a*T+t)*D+int(en.d)] {
								case stTP:
									tp++
								case stFP:
									fp++
								}
								ftp, ffp := float64(tp), float64(fp)
								rc[i] = ftp / float64(npig)
								pr[i] = ftp / (ffp + ftp + eps)
							}
							ri := ((t*K+k)*A+a)*M + m
							if nd > 0 {
								e.Recall[ri] = rc[nd-1]
							} else {
								e.Recall[ri] = 0
							}
							for i := nd - 1; i > 0; i-- {
								if pr[i] > pr[i-1] {
									pr[i-1] = pr[i]
								}
							}
							// q[r] = pr[searchsorted(rc, recThrs[r], 'left')];
							// past the end, the rest stays 0.
							i := 0
							for r, thr := range p.RecThrs {
								for i < nd && rc[i] < thr {
									i++
								}
								v := 0.0
								if i < nd {
									v = pr[i]
								}
								e.Precision[(((t*R+r)*K+k)*A+a)*M+m] = v
							}
						}
					}
				}
			}
		}()
	}
	wg.Wait()
}

// eps is np.spacing(1).
const eps = 2.220446049250313e-16

type accEntry struct {
	score   float64
	pair, d int32
}
