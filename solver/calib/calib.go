// Package calib measures F-LBQ error curves: how much each quantization
// unit (a channel group of a backbone linear layer, or a whole layer),
// quantized alone at b bits, alters the backbone's output features on a
// calibration set.
//
// # Definition
//
//	D_u(b) = mean over calibration images x of ‖F(x) − F_{u,b}(x)‖² / numel(F(x))
//
// F is the concatenation of all backbone outputs (Swin: the four stage
// maps; ViTDet: the encoder map — the tensors `flbq features` writes as
// "backbone.*"), F_{u,b} the same backbone with only unit u quantized at b
// bits. Quantized means what ships: the unit's output channels are computed
// by the int8 kernel (runtime/kernels.QLinear: per-row int8 activations,
// per-output-channel asymmetric b-bit weights with the chosen scale rule,
// exact int32 accumulation); the rest of the network stays fp32. The model
// is never modified: quantized layers are passed as nn.Overrides.
//
// # Exact mode
//
// The calibration images are stacked into batches of equal padded size.
// For each batch, one fp32 pass caches every block's input and the fp32
// outputs; then every (unit, bits) pair re-runs only the blocks from the
// one holding the unit's layer onward (Backbone.ForwardFrom), jobs spread
// over all cores.
//
// # Fast mode
//
// Fast mode estimates D_u(b) from two cheap measurements per layer L:
//
//   - E_g(b): the output-error energy of group g at b bits, Σ over all
//     calibration tokens and the group's output channels of
//     (y_q − y)², where y is the layer's fp32 output and y_q the kernel
//     output with the whole layer at b bits (int8 activations included).
//     It is accumulated during one fp32 pass (the layer's input is at hand
//     there), costing about len(bits) extra quantized layer products.
//   - D_L(a): the exact distortion of the whole layer quantized at a few
//     anchor bit-widths a (default 2 and 4), one partial forward per anchor,
//     measured on the anchor images only: the first AnchorImages images of
//     the calibration set (default 8, rounded up to whole batches; the set
//     is already a random draw, so its first images are a random subset).
//
// The layer's sensitivity s_L(a) = D_L(a) / Σ_g E_g(a), both summed over
// the anchor images, turns energies into feature distortion; between
// anchors s_L(b) is interpolated linearly in log s, outside it is held
// constant, and D_g(b) = s_L(b)·E_g(b) with E_g averaged over all images.
// With every image an anchor image the group curves sum to the exact layer
// curve at the anchors. The sensitivity is one ratio per layer (segment)
// and bit-width, and it varies little between images, so a few images fix
// it (validate_test.go checks the curves against exact mode with a subset);
// the energies, which carry the group-to-group detail, use every image.
//
// Energies are weighted by how strongly a channel's error reaches the rest
// of the block (channelWeights). Fused q/k/v projections (model.Attention)
// get more: they are split into q, k and v segments, each with its own
// sensitivity, and each head's share is measured where the heads meet,
// at the output projection (headEnergies: with segment s at b bits the
// attention is recomputed and head h's output change, projected, is the
// error of quantizing only head h's s-channels). Channel energies alone
// cannot see that a query error costs more in a head with diffuse attention
// than in one with peaked attention; without this step the DP allocations
// from fast curves measured 10–27 % worse than exact-curve ones (Swin and
// ViT), with it at most 7 % worse (docs/BENCHMARKS.md, Calibration).
//
// In multiply-adds, the energy pass costs about len(bits) forwards' worth
// of linear layers per image (8 bit-widths: ≈ 8 Swin-T forwards) plus
// 3·len(bits) attention recomputations, the anchors about len(anchors)·L/2
// forwards per anchor image (L layers, fused q/k/v counted three times:
// ≈ 80 for Swin-T). For Swin-T with 64 images and 8 anchor images that is
// ≈ 24 forwards per image (measured: 20.5), instead of ≈ 90 with every
// image an anchor image and ≈ 5,000 in exact mode
// (docs/BENCHMARKS.md has the measured run).
package calib

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/runtime/tensor"
	"github.com/flbq/flbq/solver"
)

// Modes of Measure.
const (
	Exact = "exact"
	Fast  = "fast"
)

// Definition is the distortion definition recorded in curves.json's meta.
const Definition = "D_u(b) = mean over calibration images of ||F(x) - F_{u,b}(x)||^2 / numel(F(x)); F = all backbone outputs concatenated; F_{u,b} = unit u alone through the int8 kernel at b bits (per-row int8 activations, per-channel asymmetric weights), everything else fp32"

// FastEstimator is fast mode's estimator as recorded in curves.json's meta
// (and in checkpoint fingerprints, so a checkpoint of an older estimator is
// not resumed).
const FastEstimator = "D_g(b) = s_seg(b) * sum_{c in g} w_c E_c(b): E_c = output-error energy of channel c with the layer at b bits, w_c structural channel weight, rescaled in attention q/k/v layers so that each head's channels sum to the head's measured error at the attention output projection; s_seg = exact segment distortion / sum of w_c E_c at the anchors, both over the anchor images (the first anchor_images images); E_c averaged over all images (package solver/calib)"

// Options configure Measure.
type Options struct {
	Mode      string       // Exact (default) or Fast
	GroupSize int          // output channels per unit; 0 for whole layers
	Rule      qformat.Rule // weight scale rule
	Bits      []int        // measured bit-widths (default 1..8)
	// Layers are the indices (into QuantLayers) to measure; nil for all.
	Layers []int
	// Anchors are fast mode's exact layer-level bit-widths (default 2, 4).
	Anchors []int
	// AnchorImages is how many of the first calibration images (rounded
	// up to whole batches) fast mode measures the anchors on; 0 or more
	// than there are means all of them.
	AnchorImages int
	// Unweighted turns off fast mode's structural channel weights.
	Unweighted bool
	// Progress, if set, is called with steps done and the total.
	Progress func(done, total int)
	// Save, if set, is called with the state after a task when SaveEvery
	// has passed since the last save, and before returning on interrupt.
	Save      func(*State) error
	SaveEvery time.Duration
}

// ErrInterrupted is returned (wrapped) when the context ends a run.
var ErrInterrupted = errors.New("calibration interrupted")

// DefaultBits are the bit-widths measured by default.
var DefaultBits = []int{1, 2, 3, 4, 5, 6, 7, 8}

// DefaultAnchors are fast mode's default exact layer-level bit-widths.
var DefaultAnchors = []int{2, 4}

// DefaultAnchorImages is flbq calibrate's default number of anchor images.
const DefaultAnchorImages = 8

// State is the resumable progress of a Measure run: finished tasks and the
// per-layer sums they contributed. Tasks are (batch, layer) pieces; sums are
// added in batch order, so a resumed run gives bit-identical curves.
type State struct {
	mu      sync.Mutex
	Done    map[string]bool      `json:"done"`
	Acc     map[string][]float64 `json:"acc"`
	Seconds float64              `json:"seconds"` // compute time of earlier runs
}

// NewState returns an empty state.
func NewState() *State { return &State{Done: map[string]bool{}, Acc: map[string][]float64{}} }

func (s *State) done(k string) bool { s.mu.Lock(); defer s.mu.Unlock(); return s.Done[k] }

// commit adds sums into the accumulators and marks task k done, atomically.
func (s *State) commit(k string, sums map[string][]float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for key, v := range sums {
		a := s.Acc[key]
		if a == nil {
			a = make([]float64, len(v))
			s.Acc[key] = a
		}
		for i := range v {
			a[i] += v[i]
		}
	}
	s.Done[k] = true
}

// Snapshot returns a deep copy safe to serialise while the run continues.
func (s *State) Snapshot() *State {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := NewState()
	c.Seconds = s.Seconds
	for k, v := range s.Done {
		c.Done[k] = v
	}
	for k, v := range s.Acc {
		c.Acc[k] = append([]float64(nil), v...)
	}
	return c
}

// Result is Measure's output.
type Result struct {
	Curves  *solver.Curves // units in layer order; Meta holds engine details
	Seconds float64        // compute time including earlier (resumed) runs
}

type engine struct {
	bb      model.Backbone
	layers  []model.LayerRef
	sel     []int
	units   map[int][]Unit
	blockOf map[string]int
	// attn[li] is the attention whose fused q/k/v projection is layer li.
	attn    map[int]*model.Attention
	headG   map[int][][]float32 // per-head Gram matrices of attn[li].Proj (headGram)
	batches []Batch
	nImages int
	// Fast mode: anchor[bi] says batch bi is an anchor batch; nAnchor
	// counts their images.
	anchor  []bool
	nAnchor int
	o       Options
	z       *Quantizer
	st      *State

	steps, total atomic.Int64
	lastSave     time.Time
	start        time.Time
}

// Measure computes the error curves of the selected layers of bb on the
// calibration batches. st carries progress (NewState for a fresh run, a
// checkpoint's state to resume). On ctx cancellation it saves the state
// (Options.Save) and returns an error wrapping ErrInterrupted.
func Measure(ctx context.Context, bb model.Backbone, batches []Batch, o Options, st *State) (*Result, error) {
	e, err := newEngine(bb, batches, o, st)
	if err != nil {
		return nil, err
	}
	e.countSteps()
	if err := e.run(ctx); err != nil {
		st.mu.Lock()
		st.Seconds += time.Since(e.start).Seconds()
		st.mu.Unlock()
		if errors.Is(err, ErrInterrupted) && e.o.Save != nil {
			if serr := e.o.Save(st.Snapshot()); serr != nil {
				return nil, fmt.Errorf("%w; saving the checkpoint failed: %v", err, serr)
			}
		}
		return nil, err
	}
	st.mu.Lock()
	st.Seconds += time.Since(e.start).Seconds()
	secs := st.Seconds
	st.mu.Unlock()
	c, err := e.curves()
	if err != nil {
		return nil, err
	}
	return &Result{Curves: c, Seconds: secs}, nil
}

// newEngine checks the options, fills in defaults and sets up a run.
func newEngine(bb model.Backbone, batches []Batch, o Options, st *State) (*engine, error) {
	layers := bb.QuantLayers()
	if len(layers) == 0 {
		return nil, errors.New("the model's backbone has no quantizable linear layers: nothing to calibrate")
	}
	if len(batches) == 0 {
		return nil, errors.New("no calibration images")
	}
	if o.Mode == "" {
		o.Mode = Exact
	}
	if o.Mode != Exact && o.Mode != Fast {
		return nil, fmt.Errorf("mode %q: want exact or fast", o.Mode)
	}
	if len(o.Bits) == 0 {
		o.Bits = DefaultBits
	}
	for i, b := range o.Bits {
		if b < qformat.MinBits || b > qformat.MaxBits || (i > 0 && b <= o.Bits[i-1]) {
			return nil, fmt.Errorf("bits %v: want strictly increasing values in 1..8", o.Bits)
		}
	}
	if len(o.Anchors) == 0 {
		o.Anchors = DefaultAnchors
	}
	for i, b := range o.Anchors {
		if b < qformat.MinBits || b > qformat.MaxBits || (i > 0 && b <= o.Anchors[i-1]) {
			return nil, fmt.Errorf("anchors %v: want strictly increasing values in 1..8", o.Anchors)
		}
	}
	if o.Mode == Fast {
		for _, a := range o.Anchors {
			if indexOf(o.Bits, a) < 0 {
				return nil, fmt.Errorf("fast mode: anchor %d bits is not among the measured bits %v", a, o.Bits)
			}
		}
	}
	if o.GroupSize != 0 {
		if err := CheckGroupSize(o.GroupSize); err != nil {
			return nil, err
		}
	}
	sel := o.Layers
	if sel == nil {
		for i := range layers {
			sel = append(sel, i)
		}
	}
	e := &engine{bb: bb, layers: layers, sel: sel, units: map[int][]Unit{}, blockOf: blockOf(bb),
		attn: map[int]*model.Attention{}, headG: map[int][][]float32{},
		batches: batches, o: o, z: NewQuantizer(o.Rule), st: st, start: time.Now(), lastSave: time.Now()}
	for li, l := range layers {
		if a := bb.Blocks()[e.blockOf[l.Name]].Attention; a != nil && a.QKV == l.Layer &&
			a.Heads > 0 && a.Proj.In%a.Heads == 0 && l.Out == 3*a.Proj.In && l.In == a.Proj.In {
			e.attn[li] = a
		}
	}
	for _, li := range sel {
		if li < 0 || li >= len(layers) {
			return nil, fmt.Errorf("layer index %d outside the model's %d quantizable layers", li, len(layers))
		}
		l := layers[li]
		if l.In > qformat.MaxK {
			return nil, fmt.Errorf("%s: K = %d exceeds the kernel's exact-accumulation limit %d", l.Name, l.In, qformat.MaxK)
		}
		e.units[li] = LayerUnits(li, l.Out, o.GroupSize)
		if a := e.attn[li]; a != nil && o.Mode == Fast {
			e.headG[li] = headGram(a)
		}
	}
	if o.Mode == Fast {
		e.anchor, e.nAnchor = AnchorBatches(batches, o.AnchorImages)
	} else {
		e.anchor = make([]bool, len(batches))
	}
	for _, b := range batches {
		e.nImages += len(b.Images)
	}
	return e, nil
}

// AnchorBatches marks the batches fast mode measures its anchors on: the
// first ones, until they hold n images (n ≤ 0: all), and returns how many
// images they hold.
func AnchorBatches(batches []Batch, n int) ([]bool, int) {
	mark := make([]bool, len(batches))
	images := 0
	for bi, b := range batches {
		if n > 0 && images >= n {
			break
		}
		mark[bi] = true
		images += len(b.Images)
	}
	return mark, images
}

func exactKey(b int, layer string) string  { return fmt.Sprintf("x/%d/%s", b, layer) }
func statsKey(b int) string                { return fmt.Sprintf("s/%d", b) }
func anchorKey(b int, layer string) string { return fmt.Sprintf("a/%d/%s", b, layer) }

// countSteps sets the progress total and the steps already done.
func (e *engine) countSteps() {
	var total, done int64
	add := func(k string, n int64) {
		total += n
		if e.st.done(k) {
			done += n
		}
	}
	for bi := range e.batches {
		if e.o.Mode == Exact {
			for _, li := range e.sel {
				add(exactKey(bi, e.layers[li].Name), int64(len(e.units[li])*len(e.o.Bits)))
			}
			continue
		}
		add(statsKey(bi), int64(len(e.sel)))
		if !e.anchor[bi] {
			continue
		}
		for _, li := range e.sel {
			add(anchorKey(bi, e.layers[li].Name), int64(len(e.o.Anchors)*len(e.segments(li))))
		}
	}
	e.total.Store(total)
	e.steps.Store(done)
	e.progress(0)
}

func (e *engine) progress(n int64) {
	d := e.steps.Add(n)
	if e.o.Progress != nil {
		e.o.Progress(int(d), int(e.total.Load()))
	}
}

func (e *engine) maybeSave() error {
	if e.o.Save == nil || time.Since(e.lastSave) < e.o.SaveEvery {
		return nil
	}
	e.lastSave = time.Now()
	snap := e.st.Snapshot()
	snap.Seconds += time.Since(e.start).Seconds()
	return e.o.Save(snap)
}

func (e *engine) run(ctx context.Context) error {
	for bi, b := range e.batches {
		pending := false
		for _, li := range e.sel {
			name := e.layers[li].Name
			if e.o.Mode == Exact && !e.st.done(exactKey(bi, name)) || e.o.Mode == Fast && e.anchor[bi] && !e.st.done(anchorKey(bi, name)) {
				pending = true
			}
		}
		if e.o.Mode == Fast && !e.st.done(statsKey(bi)) {
			pending = true
		}
		if !pending {
			continue
		}
		if ctx.Err() != nil {
			return ErrInterrupted
		}
		// fp32 pass: cache every block's input and the outputs (fast mode:
		// accumulate the energies on the way when that task is pending).
		inputs := make([]*tensor.Tensor, len(e.bb.Blocks()))
		var ov nn.Overrides
		var stats *statsHook
		if e.o.Mode == Fast && !e.st.done(statsKey(bi)) {
			stats = e.newStatsHook(inputs)
			ov = stats.overrides()
		}
		ref := e.bb.ForwardFrom(0, b.X, nil, ov, inputs)
		if stats != nil {
			if stats.err != nil {
				return stats.err
			}
			e.st.commit(statsKey(bi), stats.sums(e.anchor[bi]))
			e.progress(int64(len(e.sel)))
			if err := e.maybeSave(); err != nil {
				return fmt.Errorf("saving the checkpoint: %w", err)
			}
		}
		if e.o.Mode == Fast && !e.anchor[bi] {
			continue
		}
		for _, li := range e.sel {
			if err := e.layerTask(ctx, bi, li, inputs, ref); err != nil {
				return err
			}
			if err := e.maybeSave(); err != nil {
				return fmt.Errorf("saving the checkpoint: %w", err)
			}
		}
	}
	return nil
}

// layerTask measures, on batch bi, every (unit, bits) of layer li (exact)
// or the layer's anchors (fast).
func (e *engine) layerTask(ctx context.Context, bi, li int, inputs, ref []*tensor.Tensor) error {
	l := e.layers[li]
	b := e.batches[bi]
	n := len(b.Images)
	blk := e.blockOf[l.Name]
	var key, acc string
	type job struct{ groups []GroupBits }
	var jobs []job
	if e.o.Mode == Exact {
		key, acc = exactKey(bi, l.Name), "x/"+l.Name
		for _, u := range e.units[li] {
			for _, bits := range e.o.Bits {
				jobs = append(jobs, job{[]GroupBits{{u.Lo, u.Hi, bits}}})
			}
		}
	} else {
		key, acc = anchorKey(bi, l.Name), "a/"+l.Name
		for _, sg := range e.segments(li) {
			for _, a := range e.o.Anchors {
				jobs = append(jobs, job{[]GroupBits{{sg[0], sg[1], a}}})
			}
		}
	}
	if e.st.done(key) {
		return nil
	}
	sums := make([]float64, len(jobs))
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	for w := 0; w < min(backend.Threads(), len(jobs)); w++ { // (unit, bits) jobs run concurrently
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				j := int(next.Add(1) - 1)
				if j >= len(jobs) {
					return
				}
				if ctx.Err() != nil {
					fail(ErrInterrupted)
					return
				}
				op, err := e.z.Op(l.Layer, jobs[j].groups)
				if err != nil {
					fail(err)
					return
				}
				out := e.bb.ForwardFrom(blk, inputs[blk], ref, nn.Overrides{l.Name: op}, nil)
				var s float64
				for _, v := range featureSSE(ref, out, n) {
					s += v
				}
				sums[j] = s
				e.progress(1)
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	e.st.commit(key, map[string][]float64{acc: sums})
	return nil
}

// statsHook accumulates fast mode's group output-error energies during an
// fp32 pass.
type statsHook struct {
	e      *engine
	inputs []*tensor.Tensor // block inputs, filled in by the pass as it goes
	mu     sync.Mutex
	// "e/<layer>": [channel·len(bits) + bit index]; "p/<layer>": head
	// energies (headEnergies); "m/<layer>": outputMoments.
	acc map[string][]float64
	err error
}

func (e *engine) newStatsHook(inputs []*tensor.Tensor) *statsHook {
	return &statsHook{e: e, inputs: inputs, acc: map[string][]float64{}}
}

func (h *statsHook) fail(err error) {
	h.mu.Lock()
	if h.err == nil {
		h.err = err
	}
	h.mu.Unlock()
}

func (h *statsHook) overrides() nn.Overrides {
	ov := nn.Overrides{}
	for _, li := range h.e.sel {
		l := h.e.layers[li]
		ops := make([]*LayerOp, len(h.e.o.Bits))
		for i, b := range h.e.o.Bits {
			op, err := h.e.z.Op(l.Layer, []GroupBits{{0, l.Out, b}})
			if err != nil {
				h.err = err
				return nil
			}
			ops[i] = op
		}
		nb := len(h.e.o.Bits)
		kind, _ := h.e.weightKind(li)
		a := h.e.attn[li]
		ov[l.Name] = nn.LinearFunc(func(dst, x []float32, M int) {
			lin := l.Layer
			lin.ForwardFP32(dst, x, M)
			part := make([]float64, lin.Out*nb) // [channel·nb + bit index]
			// Attention input projections: the fp32 attention output, for
			// headEnergies. The pass set this block's input before running it.
			var heads []float64
			var in *tensor.Tensor
			var aref []float32
			if a != nil {
				if in = h.inputs[h.e.blockOf[l.Name]]; in == nil {
					h.fail(fmt.Errorf("%s: internal: block input not cached before the block ran", l.Name))
					return
				}
				heads = make([]float64, 3*a.Heads*nb)
				aref = make([]float32, M*a.Proj.In)
				a.Attend(in, dst, aref)
			}
			nn.ParallelFor(nb, 1, func(lo, hi int) {
				buf := nn.GetScratch(M * lin.Out)
				y := *buf
				acc := make([]float64, lin.Out)
				for bi := lo; bi < hi; bi++ {
					ops[bi].Forward(y, x, M)
					if a != nil {
						h.e.headEnergies(li, in, dst, y, aref, M, heads[bi*3*a.Heads:(bi+1)*3*a.Heads])
					}
					clear(acc)
					for m := 0; m < M; m++ {
						r := m * lin.Out
						for c := range acc {
							d := float64(y[r+c]) - float64(dst[r+c])
							acc[c] += d * d
						}
					}
					for c, v := range acc {
						part[c*nb+bi] = v
					}
				}
				nn.PutScratch(buf)
			})
			mom := outputMoments(dst, M, lin.Out, kind)
			h.mu.Lock()
			add := func(key string, v []float64) {
				s := h.acc[key]
				if s == nil {
					s = make([]float64, len(v))
					h.acc[key] = s
				}
				for i, x := range v {
					s[i] += x
				}
			}
			add("e/"+l.Name, part)
			if mom != nil {
				add("m/"+l.Name, mom)
			}
			if heads != nil {
				add("p/"+l.Name, heads)
			}
			h.mu.Unlock()
		})
	}
	return ov
}

// headEnergies measures, for one bit-width, how the output error of each
// head's q, k and v channels reaches the attention's output projection.
// ref is layer li's fp32 output (the fused q/k/v, M rows), y its output
// with the whole layer quantized, aref the fp32 attention output, in the
// block input the pass is running. For each segment s (q, k, v) it replaces
// segment s of ref by y's and recomputes the attention; heads do not mix
// there, so head h's change Δa_h is what quantizing only head h's segment-s
// channels would cause, and
//
//	out[s·Heads + h] = Σ over image tokens of ‖Δa_h · W_proj[:, h]ᵀ‖²
//
// (W_proj[:, h]: the projection's input columns of head h, applied as the
// Gram matrix W_hᵀW_h). This is the per-head factor that channel energies
// cannot see: the same q error matters more in a head with diffuse
// attention than in one with peaked attention.
func (e *engine) headEnergies(li int, in *tensor.Tensor, ref, y, aref []float32, M int, out []float64) {
	a := e.attn[li]
	C, H := a.Proj.In, a.Heads
	dh := C / H
	qb := nn.GetScratch(M * 3 * C)
	ab := nn.GetScratch(M * C)
	ub := nn.GetScratch(M * dh)
	q, att, u := (*qb)[:M*3*C], (*ab)[:M*C], (*ub)[:M*dh]
	gram := e.headG[li]
	copy(q, ref)
	swap := func(s int, from []float32) {
		for r := 0; r < M; r++ {
			copy(q[r*3*C+s*C:r*3*C+(s+1)*C], from[r*3*C+s*C:r*3*C+(s+1)*C])
		}
	}
	for s := 0; s < 3; s++ {
		swap(s, y)
		a.Attend(in, q, att)
		swap(s, ref)
		for i := range att {
			att[i] -= aref[i]
		}
		for h := 0; h < H; h++ {
			nn.MatMul(false, M, dh, dh, att[h*dh:], C, gram[h], dh, u, dh, false)
			var sum float64
			for r := 0; r < M; r++ {
				d, g := att[r*C+h*dh:r*C+(h+1)*dh], u[r*dh:(r+1)*dh]
				for i := range d {
					sum += float64(d[i]) * float64(g[i])
				}
			}
			out[s*H+h] = sum
		}
	}
	nn.PutScratch(ub)
	nn.PutScratch(ab)
	nn.PutScratch(qb)
}

// headGram returns the Gram matrices W_hᵀW_h (dh×dh, float32) of the
// output projection's per-head column blocks.
func headGram(a *model.Attention) [][]float32 {
	C, H := a.Proj.In, a.Heads
	dh := C / H
	w := a.Proj.Weight
	g := make([][]float32, H)
	for h := range g {
		g[h] = make([]float32, dh*dh)
		for i := 0; i < dh; i++ {
			for j := 0; j < dh; j++ {
				var s float64
				for o := 0; o < a.Proj.Out; o++ {
					s += float64(w[o*C+h*dh+i]) * float64(w[o*C+h*dh+j])
				}
				g[h][i*dh+j] = float32(s)
			}
		}
	}
	return g
}

// outputMoments returns the per-channel Σ z² (first Out entries, for a
// fused q/k/v layer) or Σ GELU'(z)² (last Out, for an MLP fc1) of a
// layer's fp32 output y (M×Out) that its structural channel weights use
// (see channelWeights), or nil when they use neither. Workers take
// channel ranges and sum each channel over rows in order, so the sums do
// not depend on the number of threads.
func outputMoments(y []float32, M, out int, kind weightKind) []float64 {
	if kind == plainWeights {
		return nil
	}
	mom := make([]float64, 2*out)
	nn.ParallelFor(out, 16, func(lo, hi int) {
		for m := 0; m < M; m++ {
			row := y[m*out : (m+1)*out]
			for c := lo; c < hi; c++ {
				z := float64(row[c])
				if kind == qkvWeights {
					mom[c] += z * z
				} else {
					g := 0.5*(1+math.Erf(z/math.Sqrt2)) + z*math.Exp(-z*z/2)/math.Sqrt(2*math.Pi)
					mom[out+c] += g * g
				}
			}
		}
	})
	return mom
}

// sums returns the batch's sums; an anchor batch's energies are also
// counted under "ea/<layer>" and "pa/<layer>", the anchor images' energies.
func (h *statsHook) sums(anchor bool) map[string][]float64 {
	if !anchor {
		return h.acc
	}
	out := map[string][]float64{}
	for k, v := range h.acc {
		out[k] = v
		if name, ok := strings.CutPrefix(k, "e/"); ok {
			out["ea/"+name] = v
		}
		if name, ok := strings.CutPrefix(k, "p/"); ok {
			out["pa/"+name] = v
		}
	}
	return out
}

// curves turns the accumulated sums into curves.
func (e *engine) curves() (*solver.Curves, error) {
	c := &solver.Curves{Bits: append([]int(nil), e.o.Bits...), Meta: map[string]any{}}
	nb := len(e.o.Bits)
	N := float64(e.nImages)
	for _, li := range e.sel {
		l := e.layers[li]
		units := e.units[li]
		dist := make([][]float64, len(units))
		switch e.o.Mode {
		case Exact:
			acc := e.st.Acc["x/"+l.Name]
			if len(acc) != len(units)*nb {
				return nil, fmt.Errorf("%s: internal: %d sums for %d units × %d bits", l.Name, len(acc), len(units), nb)
			}
			for ui := range units {
				dist[ui] = make([]float64, nb)
				for bi := range e.o.Bits {
					dist[ui][bi] = acc[ui*nb+bi] / N
				}
			}
		case Fast:
			en := e.st.Acc["e/"+l.Name]
			ea := e.st.Acc["ea/"+l.Name]
			an := e.st.Acc["a/"+l.Name]
			segs := e.segments(li)
			if len(en) != l.Out*nb || len(ea) != l.Out*nb || len(an) != len(e.o.Anchors)*len(segs) {
				return nil, fmt.Errorf("%s: internal: fast-mode sums have the wrong length", l.Name)
			}
			w := e.channelWeights(li, e.st.Acc["m/"+l.Name])
			en = append([]float64(nil), en...)
			ea = append([]float64(nil), ea...)
			for c := 0; c < l.Out; c++ {
				for bi := 0; bi < nb; bi++ {
					en[c*nb+bi] *= w[c] / N
					ea[c*nb+bi] *= w[c]
				}
			}
			if a := e.attn[li]; a != nil {
				p, pa := e.st.Acc["p/"+l.Name], e.st.Acc["pa/"+l.Name]
				if len(p) != 3*a.Heads*nb || len(pa) != len(p) {
					return nil, fmt.Errorf("%s: internal: head energies have the wrong length", l.Name)
				}
				headSplit(en, p, 1/N, a.Heads, nb)
				headSplit(ea, pa, 1, a.Heads, nb)
			}
			// Sensitivity per segment and bit-width, from the anchor images.
			sens := make([][]float64, len(segs))
			for si, sg := range segs {
				sens[si] = e.sensitivity(ea, an[si*len(e.o.Anchors):(si+1)*len(e.o.Anchors)], sg[0], sg[1])
			}
			for ui, u := range units {
				dist[ui] = make([]float64, nb)
				for bi := range e.o.Bits {
					var d float64
					for si, sg := range segs {
						for c := max(u.Lo, sg[0]); c < min(u.Hi, sg[1]); c++ {
							d += sens[si][bi] * en[c*nb+bi]
						}
					}
					dist[ui][bi] = d
				}
			}
		}
		for ui, u := range units {
			c.Units = append(c.Units, solver.CurveUnit{
				UnitID:     solver.UnitID{Layer: l.Name, Group: u.Group},
				Channels:   [2]int{u.Lo, u.Hi},
				Weights:    int64(u.Hi-u.Lo) * int64(l.In),
				Distortion: dist[ui],
			})
		}
	}
	return c, nil
}

// headSplit rescales the channel energies en ([channel·nb + bit index]) of
// an attention input projection with the given heads so that each head's
// q, k and v channels sum to that head's measured energy (headEnergies;
// p[bit·3·heads + segment·heads + head]) times scale, keeping their
// proportions inside the head; a head whose channels carry no energy
// gets an even split.
func headSplit(en, p []float64, scale float64, heads, nb int) {
	C := len(en) / nb / 3
	dh := C / heads
	for s := 0; s < 3; s++ {
		for h := 0; h < heads; h++ {
			lo := s*C + h*dh
			for bi := 0; bi < nb; bi++ {
				want := p[bi*3*heads+s*heads+h] * scale
				var have float64
				for c := lo; c < lo+dh; c++ {
					have += en[c*nb+bi]
				}
				for c := lo; c < lo+dh; c++ {
					if have > 0 {
						en[c*nb+bi] *= want / have
					} else {
						en[c*nb+bi] = want / float64(dh)
					}
				}
			}
		}
	}
}

// sensitivity returns s(b) for every measured bit-width of the channel
// segment [lo, hi) from its anchor distortions an and the per-channel
// energies en, both summed over the anchor images.
func (e *engine) sensitivity(en, an []float64, lo, hi int) []float64 {
	nb := len(e.o.Bits)
	s := make([]float64, len(e.o.Anchors))
	for ai, a := range e.o.Anchors {
		bi := indexOf(e.o.Bits, a)
		var el float64
		for c := lo; c < hi; c++ {
			el += en[c*nb+bi]
		}
		if el > 0 {
			s[ai] = an[ai] / el
		}
	}
	out := make([]float64, nb)
	for bi, b := range e.o.Bits {
		out[bi] = interpSensitivity(e.o.Anchors, s, b)
	}
	return out
}

// channelWeights returns fast mode's structural weight of each output
// channel of layer li: how strongly an error in that channel reaches the
// rest of the block, to first order. Only ratios inside a segment matter
// (each segment's anchors fix the scale).
//
//   - MLP fc1 (".mlp.0", feeding GELU and ".mlp.3"): ‖W_fc2[:, c]‖² · Σ GELU'(z_c)².
//   - fused q/k/v (model.Attention.QKV): a query channel is weighted by its
//     key partner's Σ k_c², a key channel by Σ q_c², a value channel by
//     ‖W_proj[:, c]‖². These only split a head's measured error among its
//     channels (headEnergies fixes each head's total).
//   - every other layer: 1.
func (e *engine) channelWeights(li int, mom []float64) []float64 {
	l := e.layers[li]
	w := make([]float64, l.Out)
	for c := range w {
		w[c] = 1
	}
	kind, next := e.weightKind(li)
	if kind == plainWeights || len(mom) != 2*l.Out {
		return w
	}
	colNorm := func(n *nn.Linear, c int) float64 {
		var s float64
		for o := 0; o < n.Out; o++ {
			v := float64(n.Weight[o*n.In+c])
			s += v * v
		}
		return s
	}
	if kind == mlpWeights {
		for c := range w {
			w[c] = colNorm(next, c) * mom[l.Out+c]
		}
		return w
	}
	d := l.In
	for c := 0; c < d; c++ {
		w[c] = mom[d+c] // query c: Σ k_c²
		w[d+c] = mom[c] // key c: Σ q_c²
		w[2*d+c] = colNorm(next, c)
	}
	return w
}

// weightKind says which structural channel weights layer li gets
// (channelWeights), with the layer they look at: fc2 of an MLP fc1, the
// output projection of a fused q/k/v projection.
type weightKind int

const (
	plainWeights weightKind = iota
	mlpWeights
	qkvWeights
)

func (e *engine) weightKind(li int) (weightKind, *nn.Linear) {
	if e.o.Unweighted {
		return plainWeights, nil
	}
	l := e.layers[li]
	next := func(from, to string) *nn.Linear {
		if !strings.HasSuffix(l.Name, from) {
			return nil
		}
		want := strings.TrimSuffix(l.Name, from) + to
		for _, r := range e.layers {
			if r.Name == want {
				return r.Layer
			}
		}
		return nil
	}
	if fc2 := next(".mlp.0", ".mlp.3"); fc2 != nil && fc2.In == l.Out {
		return mlpWeights, fc2
	}
	if a := e.attn[li]; a != nil && len(e.segments(li)) == 3 {
		return qkvWeights, a.Proj
	}
	return plainWeights, nil
}

// segments returns fast mode's channel segments of layer li: q, k and v of
// a fused attention input projection (tile-aligned), else the whole layer.
func (e *engine) segments(li int) [][2]int {
	l := e.layers[li]
	if e.attn[li] != nil && l.In%qformat.TileN == 0 {
		return [][2]int{{0, l.In}, {l.In, 2 * l.In}, {2 * l.In, 3 * l.In}}
	}
	return [][2]int{{0, l.Out}}
}

// interpSensitivity interpolates s over anchors at b: linear in log s
// between anchors (linear in s if either is 0), constant outside.
func interpSensitivity(anchors []int, s []float64, b int) float64 {
	if b <= anchors[0] {
		return s[0]
	}
	last := len(anchors) - 1
	if b >= anchors[last] {
		return s[last]
	}
	for i := 0; i < last; i++ {
		a0, a1 := anchors[i], anchors[i+1]
		if b >= a0 && b <= a1 {
			t := float64(b-a0) / float64(a1-a0)
			if s[i] > 0 && s[i+1] > 0 {
				return math.Exp((1-t)*math.Log(s[i]) + t*math.Log(s[i+1]))
			}
			return (1-t)*s[i] + t*s[i+1]
		}
	}
	return s[last]
}

func indexOf(xs []int, v int) int {
	for i, x := range xs {
		if x == v {
			return i
		}
	}
	return -1
}
