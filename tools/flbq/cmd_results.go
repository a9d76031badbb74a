package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/flbq/flbq/gen/modelpkg"
	"github.com/flbq/flbq/runtime/atomicfile"
	"github.com/flbq/flbq/runtime/coco"
	"github.com/flbq/flbq/runtime/maskrcnn"
	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/qformat"
	"github.com/flbq/flbq/runtime/qmodel"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/solver"
	"github.com/flbq/flbq/solver/allocate"
	"github.com/flbq/flbq/solver/calib"
	"github.com/flbq/flbq/solver/plots"
)

func init() {
	register(&cli.Command{
		Name:  "results",
		Usage: "the F-LBQ results table: uniform vs LG vs DP at layer and group granularity over budgets",
		Description: `Regenerates docs/RESULTS.md and its figures, one section per detector (default: the
   bundled trained ones; repeat --model for your own).
   For every budget: uniform quantization at the nearest integer widths, F-LBQ-LG and
   F-LBQ-DP on layer-granularity and 32-channel-group curves — the backbone feature
   distortion measured on held-out images, box and mask AP (pycocotools-exact) on the
   held-out set, the packed size, and the median latency of the quantized backbone and
   of the whole detector. Curves come from the training set only; nothing is tuned on
   the held-out split.`,
		Flags: append([]cli.Flag{
			&cli.StringSliceFlag{Name: "model", Value: cli.NewStringSlice(BundledModels...), Usage: "detector `FILE` (repeat for several; each gets a section)"},
			&cli.StringFlag{Name: "work", Usage: "working `DIR` (default: a temporary directory, removed)"},
			&cli.StringFlag{Name: "out", Value: "docs/RESULTS.md", Usage: "Markdown `FILE` to write"},
			&cli.StringFlag{Name: "budgets", Value: "2,2.5,3,4,6", Usage: "average bit budgets"},
			&cli.IntFlag{Name: "calib-size", Value: 64},
			&cli.StringFlag{Name: "calib-mode", Value: "fast"},
		}, dataFlags()...),
		Action: runResults,
	})
}

// BundledModels are the trained detectors the results table covers by
// default (tools/models/README.md).
var BundledModels = []string{BundledModel, "tools/models/shapes-vit-d128.safetensors"}

type resultRow struct {
	budget     string
	method     string
	avgBits    float64
	distortion float64 // measured on the held-out images
	v          *demoVariant
}

func runResults(c *cli.Context) error {
	w := c.App.Writer
	start := time.Now()
	log := func(format string, args ...any) {
		fmt.Fprintf(w, "[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	var budgets []float64
	for _, s := range strings.Split(c.String("budgets"), ",") {
		b, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || b < 1 || b > 8 {
			return fmt.Errorf("--budgets: %q is not a number in 1..8", s)
		}
		budgets = append(budgets, b)
	}
	models := c.StringSlice("model")
	stems := map[string]bool{}
	for _, m := range models {
		if _, err := safetensors.Open(m); err != nil {
			return fmt.Errorf("%w (run from the repository root or pass --model)", err)
		}
		if stem := modelStem(m); stems[stem] {
			return fmt.Errorf("--model: two models named %s; their figures would overwrite each other", stem)
		} else {
			stems[stem] = true
		}
	}
	work, cleanup, err := workDir(c, "flbq-results-")
	if err != nil {
		return err
	}
	defer cleanup()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	train, valSet, val, err := demoSets(c, work)
	if err != nil {
		return err
	}
	log("data: calibrating on %s, evaluating on %s", train.About, valSet.About)
	figDir := filepath.Join(filepath.Dir(c.String("out")), "figures")
	if err := os.MkdirAll(figDir, 0o755); err != nil {
		return err
	}
	var sections []string
	for _, m := range models {
		sec, err := resultsForModel(ctx, c, m, budgets, work, train, valSet, val, figDir, log)
		if err != nil {
			return fmt.Errorf("%s: %w", m, err)
		}
		sections = append(sections, sec)
	}
	md := resultsMarkdown(c, models, train, valSet, sections, time.Since(start))
	// Hand-written findings below the marker survive regeneration.
	if old, err := os.ReadFile(c.String("out")); err == nil {
		if i := strings.Index(string(old), findingsMarker); i >= 0 {
			md += "\n" + string(old[i:])
		}
	}
	if err := atomicfile.WriteBytes(c.String("out"), []byte(md)); err != nil {
		return err
	}
	log("wrote %s and %s/", c.String("out"), figDir)
	return nil
}

// modelStem names a model's figures: its file name without extension.
func modelStem(path string) string {
	return strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
}

// resultsForModel calibrates, allocates, packs and evaluates one model and
// returns its section of RESULTS.md; its figures go to figDir/STEM-*.
func resultsForModel(ctx context.Context, c *cli.Context, modelPath string, budgets []float64, work string, train, valSet split,
	val *coco.Dataset, figDir string, log func(string, ...any)) (string, error) {
	stem := modelStem(modelPath)
	src, err := safetensors.Open(modelPath)
	if err != nil {
		return "", err
	}
	curves := map[string]*solver.Curves{}
	for _, gran := range []string{"layer", "group"} {
		res, err := demoCurves(ctx, c, modelPath, train, gran)
		if err != nil {
			return "", err
		}
		curves[gran] = res.Curves
		if err := solver.WriteCurvesFile(filepath.Join(work, stem+"."+gran+".curves.json"), res.Curves); err != nil {
			return "", err
		}
		log("%s: calibrate %s: %d units in %.1fs", stem, gran, len(res.Curves.Units), res.Seconds)
	}

	// The held-out images as backbone batches, for measured distortion.
	fp32, err := maskrcnn.Load(modelPath)
	if err != nil {
		return "", err
	}
	inputs, err := calib.LoadInputs(fp32.Model.Config, valSet.Images, val.Images)
	if err != nil {
		return "", err
	}
	batches := calib.MakeBatches(inputs, 8)
	fi, err := os.Stat(modelPath)
	if err != nil {
		return "", err
	}
	base := &demoVariant{name: "fp32", det: fp32, bytes: fi.Size()}
	if err := demoEvaluate(base, val, valSet.Images); err != nil {
		return "", err
	}
	log("%s: fp32: box AP %.3f mask AP %.3f", stem, base.box, base.mask)
	rows := []*resultRow{{budget: "—", method: "fp32", avgBits: 32, v: base}}

	type job struct {
		budget string
		method string
		gran   string
		solver string
		target float64
	}
	var jobs []job
	seenUniform := map[int]bool{}
	for _, b := range budgets {
		bs := strconv.FormatFloat(b, 'g', -1, 64)
		for _, u := range []int{int(math.Floor(b)), int(math.Ceil(b))} {
			if !seenUniform[u] {
				seenUniform[u] = true
				jobs = append(jobs, job{bs, fmt.Sprintf("uniform %d-bit", u), "layer", "uniform", float64(u)})
			}
		}
		for _, gran := range []string{"layer", "group"} {
			for _, s := range []string{"lg", "dp"} {
				jobs = append(jobs, job{bs, fmt.Sprintf("F-LBQ-%s %s", strings.ToUpper(s), gran), gran, s, b})
			}
		}
	}
	var allocs []*solver.Allocation
	var plotPts []plots.Point
	layerBits := map[string]*solver.Allocation{}
	for _, j := range jobs {
		p, err := allocate.NewProblem(curves[j.gran], allocate.Options{TargetBits: j.target, MinBitsBelow: allocate.DefaultMinBitsBelow})
		if err != nil {
			return "", fmt.Errorf("%s at %v: %w", j.method, j.target, err)
		}
		r, err := allocate.Solve(p, j.solver, allocate.DefaultEpsilon, allocate.DefaultDPMaxBytes)
		if err != nil {
			return "", err
		}
		a := p.Allocation(r)
		blob, layers, err := modelpkg.Pack(src, a, qformat.MSE)
		if err != nil {
			return "", err
		}
		qm, err := qmodel.Load(blob, layers)
		if err != nil {
			return "", err
		}
		v := &demoVariant{name: j.method, det: qm.Detector, bytes: int64(len(blob))}
		if err := demoEvaluate(v, val, valSet.Images); err != nil {
			return "", err
		}
		rows = append(rows, &resultRow{budget: j.budget, method: j.method, avgBits: r.AvgBits, v: v})
		allocs = append(allocs, a)
		if j.gran == "group" && j.target == 3 {
			layerBits[j.solver] = a
		}
		log("%s: %-20s @%s: avg %.3f bits, box AP %.3f, mask AP %.3f", stem, j.method, j.budget, r.AvgBits, v.box, v.mask)
	}
	// Measured backbone distortion of every allocation on the held-out images.
	z := calib.NewQuantizer(qformat.MSE)
	var ovs []nn.Overrides
	for _, a := range allocs {
		ov, err := z.AllocationOverrides(fp32.Model.Backbone, a.Units)
		if err != nil {
			return "", err
		}
		ovs = append(ovs, ov)
	}
	dist, err := calib.MeasureOverrides(ctx, fp32.Model.Backbone, batches, ovs, nil)
	if err != nil {
		return "", err
	}
	for i, d := range dist {
		rows[i+1].distortion = d
		m := rows[i+1].method
		if strings.HasPrefix(m, "uniform") {
			m = "uniform"
		}
		plotPts = append(plotPts, plots.Point{Solver: m, AvgBits: rows[i+1].avgBits, Distortion: d})
	}
	log("%s: measured distortion of %d allocations", stem, len(dist))

	for _, ext := range []string{"png", "svg"} {
		if err := plots.RateDistortion(filepath.Join(figDir, stem+"-rate-distortion."+ext), stem+": backbone distortion vs bits, held-out images", "measured distortion", plotPts); err != nil {
			return "", err
		}
		if layerBits["lg"] != nil && layerBits["dp"] != nil {
			if err := plots.LayerBits(filepath.Join(figDir, stem+"-layer-bits."+ext), stem+": bits per layer at 3 bits (32-channel groups)",
				[]plots.LayerBitsSeries{{Label: "F-LBQ-DP", Alloc: layerBits["dp"]}, {Label: "F-LBQ-LG", Alloc: layerBits["lg"]}}); err != nil {
				return "", err
			}
		}
	}
	return modelSection(modelPath, fp32.Model.Config.Family, rows, layerBits["lg"] != nil && layerBits["dp"] != nil), nil
}

// findingsMarker starts the hand-written part of RESULTS.md, which
// regeneration keeps: what the numbers say, checked against them.
const findingsMarker = "<!-- findings: written by hand, kept by flbq results -->"

func resultsMarkdown(c *cli.Context, models []string, train, val split, sections []string, took time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# F-LBQ results\n\nRegenerate with `go run ./tools/flbq results` (this file and `figures/`; %s here).\n\n", took.Round(time.Second))
	fmt.Fprintf(&b, "Models: %d (tools/models/README.md for the bundled ones). Calibration set: %s. Evaluation set: %s. ", len(models), train.About, val.About)
	fmt.Fprintf(&b, "Curves: %d training images, %s mode, MSE weight scales; floor target − 2; heads and pyramid at 8 bits in every quantized row. ", c.Int("calib-size"), c.String("calib-mode"))
	b.WriteString("Distortion: mean squared error of the backbone's output maps (Swin: the four stage maps; ViT: the encoder map) against fp32 on the held-out images (per element). ")
	b.WriteString("Size: fp32 row = the f16 file; quantized rows = the generated package's blob (packed backbone + 8-bit heads + fp32 norms/biases). ")
	b.WriteString("Latency: median per image, this machine, all cores, int8 AVX2 kernels. ")
	b.WriteString("Uniform rows appear once per integer width, under the first budget of which it is a nearest integer.\n")
	for _, s := range sections {
		b.WriteString("\n" + s)
	}
	return b.String()
}

// modelSection is one model's table and figures.
func modelSection(modelPath, family string, rows []*resultRow, layerFig bool) string {
	var b strings.Builder
	stem := modelStem(modelPath)
	fmt.Fprintf(&b, "## %s\n\nModel: `%s` (%s backbone).\n\n", stem, modelPath, family)
	b.WriteString("| budget | method | avg bits | distortion | box AP | mask AP | size MB | backbone ms | detector ms |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		bits, dist := fmt.Sprintf("%.3f", r.avgBits), fmt.Sprintf("%.3g", r.distortion)
		if r.method == "fp32" {
			bits, dist = "32", "0"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.3f | %.3f | %.2f | %.1f | %.1f |\n", r.budget, r.method, bits, dist, r.v.box, r.v.mask, float64(r.v.bytes)/1e6, r.v.msBackbone, r.v.msPerImage)
	}
	fmt.Fprintf(&b, "\n![rate–distortion](figures/%s-rate-distortion.svg)\n", stem)
	if layerFig {
		fmt.Fprintf(&b, "\n![bits per layer](figures/%s-layer-bits.svg)\n", stem)
	}
	return b.String()
}
