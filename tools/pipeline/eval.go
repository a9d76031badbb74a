// Package pipeline runs flbq's stages over whole datasets as Go functions
// with typed options, for the CLI and the tests alike. Eval detects and
// scores a COCO dataset (sharded and resumable), Merge joins the shards of
// one evaluation.
package pipeline

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	_ "image/jpeg" // image headers in the pre-flight check
	_ "image/png"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"github.com/flbq/flbq/gen/modelpkg"
	"github.com/flbq/flbq/runtime/atomicfile"
	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/coco"
	"github.com/flbq/flbq/runtime/imageio"
	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/runtime/qmodel"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/solver"
)

// Files Eval writes into its output directory.
const (
	// ProgressFile holds the finished images while a run is under way
	// (JSON lines after a header); a rerun resumes from it. It is removed
	// once the results are complete.
	ProgressFile = "progress.jsonl"
	// ResultsFile is the COCO results list, in the dataset's image order.
	ResultsFile = "results.json"
	// ManifestFile describes the evaluation (fingerprint, shard, images,
	// and the 12 COCO numbers when the shard is the whole set).
	ManifestFile = "eval.json"

	manifestFormat = "flbq.eval/v1"
	progressFormat = "flbq.eval-progress/v1"
)

// Shard selects every Count-th image of the dataset starting at Index
// (images in the order of the instances file). The zero value is the whole
// set.
type Shard struct{ Index, Count int }

// ParseShard parses "i/n" (0 ≤ i < n).
func ParseShard(s string) (Shard, error) {
	a, b, ok := strings.Cut(strings.TrimSpace(s), "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n < 1 || i < 0 || i >= n {
		return Shard{}, fmt.Errorf("shard %q: want i/n with 0 <= i < n, e.g. 3/16", s)
	}
	return Shard{i, n}, nil
}

func (s Shard) norm() Shard {
	if s.Count == 0 {
		return Shard{0, 1}
	}
	return s
}

// String returns "i/n".
func (s Shard) String() string { s = s.norm(); return fmt.Sprintf("%d/%d", s.Index, s.Count) }

// Whole reports whether the shard is the whole set.
func (s Shard) Whole() bool { return s.norm().Count == 1 }

// take reports whether the k-th image of the dataset is in the shard.
func (s Shard) take(k int) bool { s = s.norm(); return k%s.Count == s.Index }

// EvalOptions configure Eval.
type EvalOptions struct {
	Model string // detector file (.safetensors with flbq.config)
	// Alloc, if set, is an allocation (alloc.json) to quantize Model with
	// before detecting: packed exactly as flbq generate packs it, run on
	// the integer kernels.
	Alloc string
	// Heads is the precision of the heads when Alloc packs the model.
	Heads  modelpkg.Heads
	Val    string // COCO instances JSON of the images to evaluate
	Images string // directory the instances' file_name values are relative to
	Out    string // output directory (created; a rerun resumes there)
	Shard  Shard
	// ScoreThresh keeps detections scoring above it; negative: the model's
	// (0.05, torchvision's box_score_thresh and COCO practice).
	ScoreThresh float64
	// MaxDets caps the detections per image; ≤ 0: the model's (100).
	MaxDets   int
	NoMasks   bool  // boxes only: no segm evaluation
	MaxPixels int64 // refuse larger images; ≤ 0: maskrcnn.DefaultMaxPixels
	// Progress, if set, is called serially with images done (resumed ones
	// included) and the shard's total.
	Progress func(done, total int)
}

// Fingerprint identifies what an evaluation computed: shards and resumed
// runs must agree on every field.
type Fingerprint struct {
	ModelSHA256 string  `json:"model_sha256"`
	AllocSHA256 string  `json:"alloc_sha256,omitempty"`
	Heads       string  `json:"heads,omitempty"` // with an allocation: the heads' precision
	ValSHA256   string  `json:"val_sha256"`
	ValImages   int     `json:"val_images"`
	ScoreThresh float64 `json:"score_thresh"`
	MaxDets     int     `json:"max_dets"`
	Masks       bool    `json:"masks"`
	MaxPixels   int64   `json:"max_pixels"`
}

// diff names the first field in which f and g differ ("" if none).
func (f Fingerprint) diff(g Fingerprint) string {
	a, b := reflect.ValueOf(f), reflect.ValueOf(g)
	for i := 0; i < a.NumField(); i++ {
		if a.Field(i).Interface() != b.Field(i).Interface() {
			tag, _, _ := strings.Cut(a.Type().Field(i).Tag.Get("json"), ",")
			return fmt.Sprintf("%s %v vs %v", tag, a.Field(i).Interface(), b.Field(i).Interface())
		}
	}
	return ""
}

// Manifest is the eval.json of a finished evaluation.
type Manifest struct {
	Format      string      `json:"format"`
	Fingerprint Fingerprint `json:"fingerprint"`
	Shard       string      `json:"shard"`
	ImageIDs    []int64     `json:"image_ids"`
	Detections  int         `json:"detections"`
	// Stats holds COCOeval's 12 numbers per IoU type ("bbox", "segm") when
	// the shard is the whole set (a merge fills them in for shards).
	Stats map[string][]float64 `json:"stats,omitempty"`
}

// EvalReport is what Eval and Merge return.
type EvalReport struct {
	Manifest *Manifest
	// Evals holds the full evaluations (whole set only), by IoU type.
	Evals map[coco.IoUType]*coco.Eval
	// Resumed counts images read back from a previous run's progress;
	// Detected those detected by this call.
	Resumed, Detected int
	// AlreadyDone: the output directory held this finished evaluation.
	AlreadyDone bool
}

func (o *EvalOptions) check() error {
	switch {
	case o.Model == "":
		return errors.New("no model (--model)")
	case o.Val == "":
		return errors.New("no instances file (--val)")
	case o.Images == "":
		return errors.New("no image directory (--images)")
	case o.Out == "":
		return errors.New("no output directory (--out)")
	case o.ScoreThresh != o.ScoreThresh || o.ScoreThresh >= 1:
		return fmt.Errorf("score threshold %v: want < 1 (negative: the model's)", o.ScoreThresh)
	}
	s := o.Shard.norm()
	if s.Count < 1 || s.Index < 0 || s.Index >= s.Count {
		return fmt.Errorf("shard %d/%d: want 0 <= i < n", s.Index, s.Count)
	}
	return nil
}

// item is one image of the shard: its position in the dataset and file.
type item struct {
	index int
	img   coco.Image
	path  string
}

// selectImages returns the shard's images in dataset order.
func selectImages(val *coco.Dataset, s Shard, dir string) []item {
	var out []item
	for k, im := range val.Images {
		if s.take(k) {
			out = append(out, item{k, im, filepath.Join(dir, filepath.FromSlash(im.FileName))})
		}
	}
	return out
}

// Eval runs the detector on the shard's images of opt.Val, using
// backend.Threads() goroutines across images (one thread each), streams
// every finished image to opt.Out's progress file, and writes the results
// and the manifest atomically at the end; for the whole set it also scores
// them. A rerun with the same inputs resumes where a previous one stopped;
// one with different inputs is refused, naming what differs. Nothing is
// detected before every image of the shard has been checked.
func Eval(opt EvalOptions) (*EvalReport, error) {
	if err := opt.check(); err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	val, err := coco.ReadDataset(opt.Val)
	if err != nil {
		return nil, err
	}
	items := selectImages(val, opt.Shard, opt.Images)
	if len(items) == 0 {
		return nil, fmt.Errorf("eval: shard %s of %s selects no image (%d images)", opt.Shard, opt.Val, len(val.Images))
	}
	maxPix := opt.MaxPixels
	if maxPix <= 0 {
		maxPix = maskrcnn.DefaultMaxPixels
	}
	if err := checkImages(items, maxPix); err != nil {
		return nil, err
	}
	fp := Fingerprint{ValImages: len(val.Images), ScoreThresh: opt.ScoreThresh, MaxDets: max(opt.MaxDets, 0), Masks: !opt.NoMasks, MaxPixels: maxPix}
	if fp.ScoreThresh < 0 {
		fp.ScoreThresh = -1
	}
	if fp.ModelSHA256, err = fileSHA256(opt.Model); err != nil {
		return nil, err
	}
	if fp.ValSHA256, err = fileSHA256(opt.Val); err != nil {
		return nil, err
	}
	if opt.Alloc != "" {
		if _, err := solver.ReadAllocFile(opt.Alloc); err != nil {
			return nil, err
		}
		if h, err := modelpkg.ParseHeads(string(opt.Heads)); err != nil {
			return nil, err
		} else {
			fp.Heads = string(h)
		}
		if fp.AllocSHA256, err = fileSHA256(opt.Alloc); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return nil, fmt.Errorf("--out: %w", err)
	}
	shard := opt.Shard.String()
	if m, err := readManifest(filepath.Join(opt.Out, ManifestFile)); err == nil {
		if d := m.Fingerprint.diff(fp); d != "" || m.Shard != shard {
			if d == "" {
				d = "shard " + m.Shard + " vs " + shard
			}
			return nil, fmt.Errorf("%s holds a different finished evaluation (%s): use another --out or remove it", opt.Out, d)
		}
		rep := &EvalReport{Manifest: m, AlreadyDone: true}
		if opt.Shard.Whole() {
			rs, err := coco.ReadResults(filepath.Join(opt.Out, ResultsFile))
			if err != nil {
				return nil, err
			}
			if rep.Evals, err = evaluate(val, rs, fp.Masks); err != nil {
				return nil, err
			}
		}
		return rep, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}

	progress := filepath.Join(opt.Out, ProgressFile)
	done, err := resume(progress, fp, shard, items)
	if err != nil {
		return nil, err
	}
	rep := &EvalReport{Resumed: len(done)}
	var todo []item
	for _, it := range items {
		if _, ok := done[it.index]; !ok {
			todo = append(todo, it)
		}
	}
	if opt.Progress != nil {
		opt.Progress(len(done), len(items))
	}
	if len(todo) > 0 {
		if err := detectAll(opt, fp, shard, progress, todo, len(done), len(items)); err != nil {
			return nil, err
		}
		rep.Detected = len(todo)
		// Read everything back from the progress file, so that a resumed
		// run and an uninterrupted one write the same bytes.
		if done, err = resume(progress, fp, shard, items); err != nil {
			return nil, err
		}
	}
	var results []coco.Result
	ids := make([]int64, len(items))
	for i, it := range items {
		rs, ok := done[it.index]
		if !ok {
			return nil, fmt.Errorf("%s: image %d (%s) missing after the run", progress, it.img.ID, it.path)
		}
		ids[i] = it.img.ID
		results = append(results, rs...)
	}
	m := &Manifest{Format: manifestFormat, Fingerprint: fp, Shard: shard, ImageIDs: ids, Detections: len(results)}
	if opt.Shard.Whole() {
		if rep.Evals, err = evaluate(val, results, fp.Masks); err != nil {
			return nil, err
		}
		m.Stats = stats(rep.Evals)
	}
	if err := writeOutputs(opt.Out, results, m); err != nil {
		return nil, err
	}
	rep.Manifest = m
	if err := os.Remove(progress); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return rep, nil
}

func writeOutputs(dir string, results []coco.Result, m *Manifest) error {
	if results == nil {
		results = []coco.Result{}
	}
	if err := coco.WriteResults(filepath.Join(dir, ResultsFile), results); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, ManifestFile), func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", " ")
		return enc.Encode(m)
	})
}

// evaluate scores results against the whole dataset.
func evaluate(val *coco.Dataset, rs []coco.Result, masks bool) (map[coco.IoUType]*coco.Eval, error) {
	types := []coco.IoUType{coco.BBox}
	if masks {
		types = append(types, coco.Segm)
	}
	out := map[coco.IoUType]*coco.Eval{}
	for _, t := range types {
		e, err := coco.Evaluate(val, rs, t, coco.Options{})
		if err != nil {
			return nil, fmt.Errorf("%s evaluation: %w", t, err)
		}
		out[t] = e
	}
	return out, nil
}

func stats(evals map[coco.IoUType]*coco.Eval) map[string][]float64 {
	out := map[string][]float64{}
	for t, e := range evals {
		out[t.String()] = e.Stats[:]
	}
	return out
}

// checkImages decodes every image's header: present, a JPEG or PNG, not
// empty, within the pixel limit. It names the first bad one and how many
// are bad.
func checkImages(items []item, maxPix int64) error {
	var first error
	bad := 0
	for _, it := range items {
		if err := CheckImage(it.path, maxPix); err != nil {
			if first == nil {
				first = fmt.Errorf("image %d: %w", it.img.ID, err)
			}
			bad++
		}
	}
	if bad > 1 {
		return fmt.Errorf("%w (and %d more of the shard's %d images)", first, bad-1, len(items))
	}
	return first
}

// CheckImage decodes an image file's header: readable, a JPEG or PNG, not
// empty, at most maxPix pixels (≤ 0: maskrcnn.DefaultMaxPixels).
func CheckImage(p string, maxPix int64) error {
	if maxPix <= 0 {
		maxPix = maskrcnn.DefaultMaxPixels
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	cfg, format, err := image.DecodeConfig(bufio.NewReader(f))
	if err != nil {
		return fmt.Errorf("%s: not a decodable JPEG or PNG image: %w", p, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return fmt.Errorf("%s: empty %s image (%dx%d)", p, format, cfg.Width, cfg.Height)
	}
	if int64(cfg.Width)*int64(cfg.Height) > maxPix {
		return fmt.Errorf("%s: %s image %dx%d exceeds the %d-pixel limit (--max-pixels)", p, format, cfg.Width, cfg.Height, maxPix)
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func readManifest(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if m.Format != manifestFormat {
		return nil, fmt.Errorf("%s: format %q, want %q", path, m.Format, manifestFormat)
	}
	return &m, nil
}

// progressHeader is the first line of the progress file.
type progressHeader struct {
	Format      string      `json:"format"`
	Fingerprint Fingerprint `json:"fingerprint"`
	Shard       string      `json:"shard"`
}

// progressLine is one finished image.
type progressLine struct {
	Index   int             `json:"index"`
	ImageID int64           `json:"image_id"`
	Results json.RawMessage `json:"results"`
}

// resume reads the progress file (none: nothing done). A last line cut off
// by a kill is dropped (and cut from the file); any other damage, or a
// header that differs from this run's, is an error.
func resume(path string, fp Fingerprint, shard string, items []item) (map[int][]coco.Result, error) {
	done := map[int][]coco.Result{}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return done, nil
	} else if err != nil {
		return nil, err
	}
	byIndex := map[int]item{}
	for _, it := range items {
		byIndex[it.index] = it
	}
	good := 0 // bytes up to the last complete line
	for lineNo := 1; len(b) > good; lineNo++ {
		nl := bytes.IndexByte(b[good:], '\n')
		if nl < 0 {
			break // cut off mid-line: dropped below
		}
		line := b[good : good+nl]
		if lineNo == 1 {
			var h progressHeader
			if err := json.Unmarshal(line, &h); err != nil || h.Format != progressFormat {
				return nil, fmt.Errorf("%s line 1: not an flbq eval progress header (remove the file to start over)", path)
			}
			if d := h.Fingerprint.diff(fp); d != "" || h.Shard != shard {
				if d == "" {
					d = "shard " + h.Shard + " vs " + shard
				}
				return nil, fmt.Errorf("%s comes from a different evaluation (%s): use another --out or remove it", path, d)
			}
		} else {
			var pl progressLine
			if err := json.Unmarshal(line, &pl); err != nil {
				return nil, fmt.Errorf("%s line %d: %v", path, lineNo, err)
			}
			it, ok := byIndex[pl.Index]
			if !ok || it.img.ID != pl.ImageID {
				return nil, fmt.Errorf("%s line %d: image %d at index %d is not in this shard", path, lineNo, pl.ImageID, pl.Index)
			}
			if _, dup := done[pl.Index]; dup {
				return nil, fmt.Errorf("%s line %d: image %d twice", path, lineNo, pl.ImageID)
			}
			rs, err := coco.DecodeResults(bytes.NewReader(pl.Results))
			if err != nil {
				return nil, fmt.Errorf("%s line %d: %w", path, lineNo, err)
			}
			for _, r := range rs {
				if r.ImageID != pl.ImageID {
					return nil, fmt.Errorf("%s line %d: a result for image %d on image %d's line", path, lineNo, r.ImageID, pl.ImageID)
				}
			}
			done[pl.Index] = rs
		}
		good += nl + 1
	}
	if good < len(b) {
		if err := os.Truncate(path, int64(good)); err != nil {
			return nil, err
		}
	}
	if good == 0 { // not even a header: start over
		if err := os.Remove(path); err != nil {
			return nil, err
		}
	}
	return done, nil
}

// detectAll detects todo's images on backend.Threads() workers and appends
// each finished image to the progress file as it completes.
func detectAll(opt EvalOptions, fp Fingerprint, shard, progress string, todo []item, done, total int) error {
	d, err := LoadDetector(opt.Model, opt.Alloc, opt.Heads)
	if err != nil {
		return err
	}
	d = d.WithOptions(maskrcnn.Options{ScoreThresh: fp.ScoreThresh, DetectionsPerImage: fp.MaxDets, MaxPixels: fp.MaxPixels, NoMasks: !fp.Masks})
	f, err := os.OpenFile(progress, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriter(f)
	if st, err := f.Stat(); err != nil {
		return err
	} else if st.Size() == 0 {
		h, _ := json.Marshal(progressHeader{Format: progressFormat, Fingerprint: fp, Shard: shard})
		if _, err := w.Write(append(h, '\n')); err != nil {
			return err
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	// Across images, one thread each: better use of the cores than
	// splitting every operation of one image.
	workers := min(backend.Threads(), len(todo))
	defer backend.SetThreads(backend.SetThreads(1))

	type finished struct {
		it   item
		line []byte
		err  error
	}
	jobs := make(chan item)
	out := make(chan finished)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range jobs {
				line, err := detectOne(d, it)
				select {
				case out <- finished{it, line, err}:
				case <-stop:
					return
				}
			}
		}()
	}
	go func() {
		defer close(jobs)
		for _, it := range todo {
			select {
			case jobs <- it:
			case <-stop:
				return
			}
		}
	}()
	go func() { wg.Wait(); close(out) }()
	var firstErr error
	for r := range out {
		if firstErr != nil {
			continue
		}
		if r.err == nil {
			_, r.err = w.Write(r.line)
			if r.err == nil {
				r.err = w.Flush()
			}
		}
		if r.err != nil {
			firstErr = r.err
			close(stop)
			continue
		}
		done++
		if opt.Progress != nil {
			opt.Progress(done, total)
		}
	}
	return firstErr
}

// LoadDetector loads the detector at model: an fp32 model file, with alloc
// its quantized form (the backbone packed per the allocation and the heads
// as heads says, exactly as flbq generate packs them), or a packed model
// file (a generated package's weights.bin), which runs as its Go package
// does (its heads as packed).
func LoadDetector(model, alloc string, heads modelpkg.Heads) (*maskrcnn.Detector, error) {
	blob, err := os.ReadFile(model)
	if err != nil {
		return nil, err
	}
	if _, err := qmodel.PackedMeta(blob); err == nil {
		if alloc != "" {
			return nil, fmt.Errorf("%s is a packed (already quantized) model: no allocation applies to it", model)
		}
		qm, err := qmodel.LoadPacked(blob)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", model, err)
		}
		return qm.Detector, nil
	}
	if alloc == "" {
		return maskrcnn.Load(model)
	}
	src, err := safetensors.Parse(blob)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", model, err)
	}
	a, err := solver.ReadAllocFile(alloc)
	if err != nil {
		return nil, err
	}
	packed, layers, err := modelpkg.Pack(src, a, qformat.MSE, heads)
	if err != nil {
		return nil, fmt.Errorf("%s with %s: %w", model, alloc, err)
	}
	qm, err := qmodel.Load(packed, layers)
	if err != nil {
		return nil, fmt.Errorf("%s with %s: %w", model, alloc, err)
	}
	return qm.Detector, nil
}

// detectOne returns the progress line of one image.
func detectOne(d *maskrcnn.Detector, it item) ([]byte, error) {
	img, err := imageio.Load(it.path)
	if err != nil {
		return nil, fmt.Errorf("image %d: %w", it.img.ID, err)
	}
	if img.W != it.img.Width || img.H != it.img.Height {
		return nil, fmt.Errorf("image %d: %s is %dx%d, the instances file says %dx%d", it.img.ID, it.path, img.W, img.H, it.img.Width, it.img.Height)
	}
	o, err := d.DetectRGB(img)
	if err != nil {
		return nil, fmt.Errorf("image %d (%s): %w", it.img.ID, it.path, err)
	}
	var rs bytes.Buffer
	if err := coco.EncodeResults(&rs, Results(it.img.ID, o.Detections)); err != nil {
		return nil, err
	}
	line, err := json.Marshal(progressLine{Index: it.index, ImageID: it.img.ID, Results: bytes.TrimSpace(rs.Bytes())})
	if err != nil {
		return nil, err
	}
	return append(line, '\n'), nil
}

// Results converts one image's detections to COCO results (bbox as
// [x, y, w, h] in original-image pixels, masks as compressed RLE).
func Results(imageID int64, dets []maskrcnn.Detection) []coco.Result {
	out := make([]coco.Result, 0, len(dets))
	for _, x := range dets {
		b := x.Box
		r := coco.Result{ImageID: imageID, CategoryID: x.CategoryID, Score: float64(x.Score), HasBBox: true}
		r.BBox = [4]float64{float64(b[0]), float64(b[1]), float64(b[2] - b[0]), float64(b[3] - b[1])}
		if x.Mask != nil {
			r.Segmentation = coco.RLESegmentation(x.Mask.RLE())
		}
		out = append(out, r)
	}
	return out
}
