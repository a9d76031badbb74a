package pipeline

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/flbq/flbq/gen/modelpkg"
	"github.com/flbq/flbq/runtime/atomicfile"
	"github.com/flbq/flbq/runtime/coco"
	"github.com/flbq/flbq/runtime/imageio"
	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/runtime/qmodel"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/solver"
	"github.com/flbq/flbq/solver/allocate"
	"github.com/flbq/flbq/solver/calib"
)

// Split is a dataset on disk: a COCO instances file and the directory its
// file names are relative to.
type Split struct {
	Instances, Images string
	About             string // where it comes from, for logs and tables
}

// CalibrateOptions configure Calibrate: F-LBQ's error curves of Model's
// backbone on Size images drawn from Train.
type CalibrateOptions struct {
	Model       string
	Train       Split
	Size        int    // images drawn (64)
	Mode        string // "fast" or "exact"
	Granularity string // "group" (GroupSize channels) or "layer"
	GroupSize   int    // 32
	Rule        qformat.Rule
	Bits        []int // 1..8 when empty
	// Cache, when set, is a curves file: reused when it records this very
	// run (same model bytes, images, options), written otherwise; an
	// interrupted calibration resumes from Cache + ".ckpt".
	Cache string
	Warn  func(string)
}

// Calibrate measures the error curves (or reads them from o.Cache).
// reused reports a cache hit.
func Calibrate(ctx context.Context, o CalibrateOptions) (curves *solver.Curves, reused bool, err error) {
	bits := o.Bits
	if len(bits) == 0 {
		bits = []int{1, 2, 3, 4, 5, 6, 7, 8}
	}
	rc := &calib.RunConfig{
		Model: o.Model, Data: o.Train.Instances, Images: o.Train.Images, CalibSize: o.Size,
		Granularity: o.Granularity, GroupSize: o.GroupSize, Mode: o.Mode, Rule: o.Rule, Bits: bits, Warn: o.Warn,
	}
	if o.Cache != "" {
		rc.Checkpoint = o.Cache + ".ckpt"
	}
	prep, err := calib.Prepare(rc)
	if err != nil {
		return nil, false, err
	}
	if o.Cache != "" {
		fp, err := rc.Fingerprint(prep)
		if err != nil {
			return nil, false, err
		}
		if c, err := solver.ReadCurvesFile(o.Cache); err == nil && calib.Reusable(c, fp) {
			return c, true, nil
		}
	}
	res, err := calib.RunPrepared(ctx, rc, prep)
	if err != nil {
		return nil, false, err
	}
	if o.Cache != "" {
		if err := solver.WriteCurvesFile(o.Cache, res.Curves); err != nil {
			return nil, false, err
		}
	}
	return res.Curves, false, nil
}

// Allocate solves one budget: method "uniform", "lg" or "dp" at target
// average bits, with F-LBQ's floor (target − 2).
func Allocate(curves *solver.Curves, method string, target float64) (*solver.Allocation, *allocate.Result, error) {
	p, err := allocate.NewProblem(curves, allocate.Options{TargetBits: target, MinBitsBelow: allocate.DefaultMinBitsBelow})
	if err != nil {
		return nil, nil, err
	}
	r, err := allocate.Solve(p, method, allocate.DefaultEpsilon, allocate.DefaultDPMaxBytes)
	if err != nil {
		return nil, nil, err
	}
	return p.Allocation(r), r, nil
}

// Quantize packs an allocation of src's backbone as a generated package
// embeds it (backbone at the allocated widths, heads as heads says) and
// loads the quantized detector on the integer kernels.
func Quantize(src *safetensors.File, a *solver.Allocation, rule qformat.Rule, heads modelpkg.Heads) (blob []byte, det *maskrcnn.Detector, err error) {
	blob, layers, err := modelpkg.Pack(src, a, rule, heads)
	if err != nil {
		return nil, nil, err
	}
	qm, err := qmodel.Load(blob, layers)
	if err != nil {
		return nil, nil, err
	}
	return blob, qm.Detector, nil
}

// Score is a detector's COCO evaluation on a dataset.
type Score struct {
	Box, Mask float64 // AP@[.5:.95]
	// BoxStats and MaskStats are pycocotools' 12 summary numbers.
	BoxStats, MaskStats []float64
	MsPerImage          float64 // whole detector, median per image
	MsBackbone          float64 // backbone alone, median per image
}

// Evaluate detects on every image of ds (one at a time, each with all
// cores, so the times are per-image latencies) and scores box and mask AP.
func Evaluate(det *maskrcnn.Detector, ds *coco.Dataset, imgDir string) (Score, error) {
	var results []coco.Result
	var total, backbone []float64
	for _, im := range ds.Images {
		img, err := imageio.Load(filepath.Join(imgDir, filepath.FromSlash(im.FileName)))
		if err != nil {
			return Score{}, err
		}
		t0 := time.Now()
		out, err := det.DetectRGB(img)
		if err != nil {
			return Score{}, fmt.Errorf("image %d (%s): %w", im.ID, im.FileName, err)
		}
		total = append(total, float64(time.Since(t0).Microseconds())/1e3)
		backbone = append(backbone, float64(out.Timings.Backbone.Microseconds())/1e3)
		results = append(results, Results(im.ID, out.Detections)...)
	}
	s := Score{MsPerImage: median(total), MsBackbone: median(backbone)}
	for _, t := range []coco.IoUType{coco.BBox, coco.Segm} {
		e, err := coco.Evaluate(ds, results, t, coco.Options{})
		if err != nil {
			return Score{}, err
		}
		if t == coco.BBox {
			s.Box, s.BoxStats = e.Stats[0], e.Stats[:]
		} else {
			s.Mask, s.MaskStats = e.Stats[0], e.Stats[:]
		}
	}
	return s, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	sort.Float64s(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// StudyOptions configure Study: the paper's comparison of uniform,
// F-LBQ-LG and F-LBQ-DP allocations over budgets and granularities on one
// detector.
type StudyOptions struct {
	Model      string
	Train, Val Split
	Budgets    []float64
	// Methods are "uniform", "lg", "dp"; Granularities "layer", "group".
	Methods, Granularities []string
	// Heads lists the heads' precisions of the quantized rows (int8 when
	// empty); each quantized row is evaluated with each.
	Heads     []modelpkg.Heads
	CalibSize int    // 64
	CalibMode string // "fast"
	// Work keeps the curves and every finished row: a rerun of the same
	// study (same fingerprint) reuses them and computes only what is
	// missing.
	Work string
	// Shard evaluates only the study's rows k with k % Count == Index
	// (MergeStudies joins the shards).
	Shard Shard
	Log   func(format string, args ...any)
	Warn  func(string)
}

// StudyRow is one detector of the study.
type StudyRow struct {
	Job         int     `json:"job"` // index in the study's fixed order (0: fp32)
	Budget      string  `json:"budget"`
	Method      string  `json:"method"` // "fp32", "uniform 3-bit", "F-LBQ-DP group", ...
	Solver      string  `json:"solver,omitempty"`
	Granularity string  `json:"granularity,omitempty"`
	Heads       string  `json:"heads,omitempty"` // quantized rows: the heads' precision
	Target      float64 `json:"target_bits,omitempty"`
	AvgBits     float64 `json:"avg_bits"`
	// Distortion is the backbone's output MSE against fp32, measured on the
	// held-out images.
	Distortion float64 `json:"distortion"`
	Score
	Bytes int64 `json:"bytes"` // fp32: the model file; quantized: the packed blob
	// Alloc is kept for the rows drawn in the bits-per-layer figure.
	Alloc *solver.Allocation `json:"allocation,omitempty"`
}

// StudyResult is a study (or one shard of it).
type StudyResult struct {
	Model  string `json:"model"`
	Family string `json:"family"`
	// Fingerprint identifies what the rows depend on: shards of one study
	// have equal fingerprints.
	Fingerprint map[string]string `json:"fingerprint"`
	Jobs        int               `json:"jobs"` // rows in the whole study
	Shard       string            `json:"shard"`
	Rows        []StudyRow        `json:"rows"`
}

// cachedRow is a finished row in Work.
type cachedRow struct {
	Fingerprint map[string]string `json:"fingerprint"`
	Row         StudyRow          `json:"row"`
}

type studyJob struct {
	budget, method, gran, solver string
	target                       float64
	heads                        modelpkg.Heads
}

func (o *StudyOptions) heads() []modelpkg.Heads {
	if len(o.Heads) == 0 {
		return []modelpkg.Heads{modelpkg.HeadsInt8}
	}
	return o.Heads
}

// jobs lists the study's rows in their fixed order after fp32: each
// uniform integer width once (under the first budget it is nearest to),
// then per budget every granularity × F-LBQ solver; each of those once per
// heads precision.
func (o *StudyOptions) jobs() []studyJob {
	var out []studyJob
	labelled := len(o.heads()) > 1 || o.heads()[0] != modelpkg.HeadsInt8
	for _, j := range o.allocJobs() {
		for _, h := range o.heads() {
			jh := j
			jh.heads = h
			if labelled {
				jh.method += ", " + string(h) + " heads"
			}
			out = append(out, jh)
		}
	}
	return out
}

func (o *StudyOptions) allocJobs() []studyJob {
	var out []studyJob
	seen := map[int]bool{}
	for _, b := range o.Budgets {
		bs := strconv.FormatFloat(b, 'g', -1, 64)
		if slices.Contains(o.Methods, "uniform") {
			for _, u := range []int{int(math.Floor(b)), int(math.Ceil(b))} {
				if !seen[u] {
					seen[u] = true
					out = append(out, studyJob{bs, fmt.Sprintf("uniform %d-bit", u), "layer", "uniform", float64(u), ""})
				}
			}
		}
		for _, g := range o.Granularities {
			for _, s := range []string{"lg", "dp"} {
				if slices.Contains(o.Methods, s) {
					out = append(out, studyJob{bs, fmt.Sprintf("F-LBQ-%s %s", strings.ToUpper(s), g), g, s, b, ""})
				}
			}
		}
	}
	return out
}

func (o *StudyOptions) check() error {
	if len(o.Budgets) == 0 {
		return fmt.Errorf("study: no budgets")
	}
	for _, b := range o.Budgets {
		if !(b >= 1 && b <= 8) {
			return fmt.Errorf("study: budget %v is not in 1..8", b)
		}
	}
	for _, m := range o.Methods {
		if m != "uniform" && m != "lg" && m != "dp" {
			return fmt.Errorf("study: method %q: want uniform, lg or dp", m)
		}
	}
	for _, g := range o.Granularities {
		if g != "layer" && g != "group" {
			return fmt.Errorf("study: granularity %q: want layer or group", g)
		}
	}
	if len(o.Methods) == 0 || len(o.Granularities) == 0 {
		return fmt.Errorf("study: no methods or granularities")
	}
	for _, h := range o.Heads {
		if h == "" {
			return fmt.Errorf("study: empty heads precision")
		}
		if _, err := modelpkg.ParseHeads(string(h)); err != nil {
			return fmt.Errorf("study: %w", err)
		}
	}
	return nil
}

// layerFigure: the rows whose allocations the bits-per-layer figure draws.
func layerFigure(j studyJob, first modelpkg.Heads) bool {
	return j.gran == "group" && j.target == 3 && j.solver != "uniform" && j.heads == first
}

// Study calibrates (reusing curves kept in Work), allocates, packs and
// evaluates every row of the study that o.Shard selects.
func Study(ctx context.Context, o StudyOptions) (*StudyResult, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	stem := strings.TrimSuffix(filepath.Base(o.Model), filepath.Ext(o.Model))
	src, err := safetensors.Open(o.Model)
	if err != nil {
		return nil, err
	}
	fp32, err := maskrcnn.Load(o.Model)
	if err != nil {
		return nil, err
	}
	val, err := coco.ReadDataset(o.Val.Instances)
	if err != nil {
		return nil, err
	}
	modelSHA, err := fileSHA256(o.Model)
	if err != nil {
		return nil, err
	}
	valSHA, err := fileSHA256(o.Val.Instances)
	if err != nil {
		return nil, err
	}
	jobs := o.jobs()
	res := &StudyResult{Model: o.Model, Family: fp32.Model.Config.Family, Jobs: len(jobs) + 1, Shard: o.Shard.String(),
		Fingerprint: map[string]string{"model_sha256": modelSHA, "val_sha256": valSHA, "budgets": fmt.Sprint(o.Budgets),
			"methods": strings.Join(o.Methods, ","), "granularities": strings.Join(o.Granularities, ","),
			"calib_size": strconv.Itoa(o.CalibSize), "calib_mode": o.CalibMode, "heads": fmt.Sprint(o.heads())}}
	curves := map[string]*solver.Curves{}
	for _, g := range o.Granularities {
		copt := CalibrateOptions{Model: o.Model, Train: o.Train, Size: o.CalibSize, Mode: o.CalibMode, Granularity: g,
			GroupSize: 32, Rule: qformat.MSE, Warn: o.Warn}
		if o.Work != "" {
			copt.Cache = filepath.Join(o.Work, stem+"."+g+".curves.json")
		}
		t0 := time.Now()
		c, reused, err := Calibrate(ctx, copt)
		if err != nil {
			return nil, err
		}
		curves[g] = c
		// The curves are what the rows depend on beyond the options.
		res.Fingerprint["curves_"+g] = fmt.Sprint(c.Meta["fingerprint"])
		how := fmt.Sprintf("in %.1fs", time.Since(t0).Seconds())
		if reused {
			how = "reused from " + copt.Cache
		}
		logf("%s: calibrate %s: %d units %s", stem, g, len(c.Units), how)
	}
	// Finished rows are kept in Work/<stem>.rows/<job>.json under the
	// study's fingerprint; a rerun takes them as they are.
	rowFile := func(k int) string {
		if o.Work == "" {
			return ""
		}
		return filepath.Join(o.Work, stem+".rows", strconv.Itoa(k)+".json")
	}
	cached := func(k int, method string) (StudyRow, bool) {
		var c cachedRow
		p := rowFile(k)
		if p == "" {
			return StudyRow{}, false
		}
		b, err := os.ReadFile(p)
		if err != nil || json.Unmarshal(b, &c) != nil || !maps.Equal(c.Fingerprint, res.Fingerprint) || c.Row.Job != k || c.Row.Method != method {
			return StudyRow{}, false
		}
		logf("%s: %-20s reused from %s", stem, method, p)
		return c.Row, true
	}
	keep := func(r StudyRow) error {
		p := rowFile(r.Job)
		if p == "" {
			return nil
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		b, err := json.Marshal(cachedRow{Fingerprint: res.Fingerprint, Row: r})
		if err != nil {
			return err
		}
		return atomicfile.WriteBytes(p, b)
	}
	inputs, err := calib.LoadInputs(fp32.Model.Config, o.Val.Images, val.Images)
	if err != nil {
		return nil, err
	}
	batches := calib.MakeBatches(inputs, 8)
	z := calib.NewQuantizer(qformat.MSE)
	if o.Shard.take(0) {
		row, ok := cached(0, "fp32")
		if !ok {
			fi, err := os.Stat(o.Model)
			if err != nil {
				return nil, err
			}
			s, err := Evaluate(fp32, val, o.Val.Images)
			if err != nil {
				return nil, err
			}
			row = StudyRow{Job: 0, Budget: "—", Method: "fp32", AvgBits: 32, Score: s, Bytes: fi.Size()}
			if err := keep(row); err != nil {
				return nil, err
			}
			logf("%s: fp32: box AP %.3f mask AP %.3f", stem, s.Box, s.Mask)
		}
		res.Rows = append(res.Rows, row)
	}
	type allocKey struct {
		gran, solver string
		target       float64
	}
	type measuredAlloc struct {
		alloc      *solver.Allocation
		avgBits    float64
		distortion float64
	}
	allocs := map[allocKey]measuredAlloc{}
	for i, j := range jobs {
		k := i + 1
		if !o.Shard.take(k) {
			continue
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if row, ok := cached(k, j.method); ok {
			res.Rows = append(res.Rows, row)
			continue
		}
		// The allocation and its backbone distortion do not depend on the
		// heads: rows of one allocation with other heads reuse them.
		ak := allocKey{j.gran, j.solver, j.target}
		m, ok := allocs[ak]
		if !ok {
			a, r, err := Allocate(curves[j.gran], j.solver, j.target)
			if err != nil {
				return nil, fmt.Errorf("%s at %v bits: %w", j.method, j.target, err)
			}
			ov, err := z.AllocationOverrides(fp32.Model.Backbone, a.Units)
			if err != nil {
				return nil, err
			}
			d, err := calib.MeasureOverrides(ctx, fp32.Model.Backbone, batches, []nn.Overrides{ov}, nil)
			if err != nil {
				return nil, err
			}
			m = measuredAlloc{a, r.AvgBits, d[0]}
			allocs[ak] = m
		}
		blob, det, err := Quantize(src, m.alloc, qformat.MSE, j.heads)
		if err != nil {
			return nil, err
		}
		s, err := Evaluate(det, val, o.Val.Images)
		if err != nil {
			return nil, err
		}
		a := m.alloc
		row := StudyRow{Job: k, Budget: j.budget, Method: j.method, Solver: j.solver, Granularity: j.gran, Heads: string(j.heads),
			Target: j.target, AvgBits: m.avgBits, Distortion: m.distortion, Score: s, Bytes: int64(len(blob))}
		if layerFigure(j, o.heads()[0]) {
			row.Alloc = a
		}
		if err := keep(row); err != nil {
			return nil, err
		}
		res.Rows = append(res.Rows, row)
		logf("%s: %-20s @%s: avg %.3f bits, distortion %.3g, box AP %.3f, mask AP %.3f", stem, j.method, j.budget, m.avgBits, m.distortion, s.Box, s.Mask)
	}
	return res, nil
}

// MergeStudies joins shards of one study: equal fingerprints, every row
// exactly once. Errors name the shard (by index in shards) and what differs.
func MergeStudies(shards []*StudyResult) (*StudyResult, error) {
	if len(shards) == 0 {
		return nil, fmt.Errorf("merge: no shards")
	}
	first := shards[0]
	out := &StudyResult{Model: first.Model, Family: first.Family, Fingerprint: first.Fingerprint, Jobs: first.Jobs, Shard: "0/1"}
	seen := map[int]int{}
	for i, s := range shards {
		if s.Jobs != first.Jobs || s.Family != first.Family {
			return nil, fmt.Errorf("merge: shard %d (%s) is of a study with %d rows, shard 0 of one with %d", i, s.Shard, s.Jobs, first.Jobs)
		}
		if d := mapDiff(s.Fingerprint, first.Fingerprint); d != "" {
			return nil, fmt.Errorf("merge: shard %d (%s) comes from another study: %s", i, s.Shard, d)
		}
		for _, r := range s.Rows {
			if r.Job < 0 || r.Job >= first.Jobs {
				return nil, fmt.Errorf("merge: shard %d (%s): row %d out of range", i, s.Shard, r.Job)
			}
			if j, dup := seen[r.Job]; dup {
				return nil, fmt.Errorf("merge: row %d (%s) is in shards %d and %d", r.Job, r.Method, j, i)
			}
			seen[r.Job] = i
			out.Rows = append(out.Rows, r)
		}
	}
	for k := 0; k < first.Jobs; k++ {
		if _, ok := seen[k]; !ok {
			return nil, fmt.Errorf("merge: row %d of %d is in no shard", k, first.Jobs)
		}
	}
	sort.Slice(out.Rows, func(a, b int) bool { return out.Rows[a].Job < out.Rows[b].Job })
	return out, nil
}

// mapDiff names the first key (in order) on which a and b differ.
func mapDiff(a, b map[string]string) string {
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		if a[k] != b[k] {
			return fmt.Sprintf("%s %q vs %q", k, a[k], b[k])
		}
	}
	return ""
}
