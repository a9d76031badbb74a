package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/flbq/flbq/gen/modelpkg"
	"github.com/flbq/flbq/runtime/atomicfile"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/solver/plots"
	"github.com/flbq/flbq/tools/pipeline"
)

func init() {
	register(&cli.Command{
		Name:  "results",
		Usage: "the F-LBQ results table: uniform vs LG vs DP at layer and group granularity over budgets",
		Description: `Regenerates docs/RESULTS.md (and RESULTS.json, and the figures), one section per
   detector (default: the bundled trained ones; repeat --model for your own, with --train
   and --val for your COCO data). For every budget: uniform quantization at the nearest
   integer widths, F-LBQ-LG and F-LBQ-DP on layer-granularity and 32-channel-group
   curves (--methods, --granularities) — the backbone feature distortion measured on the
   held-out images, box and mask AP (pycocotools-exact) on the held-out set, the packed
   size, and the median latency of the quantized backbone and of the whole detector.
   Curves come from the training set only; nothing is tuned on the held-out split.

   --work keeps the curves: a rerun of the same study reuses them (and an interrupted
   calibration resumes). --shard i/n evaluates every n-th row only and writes just the
   JSON (--json); "flbq results merge" joins the shards into the table.`,
		Flags: append([]cli.Flag{
			&cli.StringSliceFlag{Name: "model", Value: cli.NewStringSlice(BundledModels...), Usage: "detector `FILE` (repeat for several; each gets a section)"},
			&cli.StringFlag{Name: "work", Usage: "working `DIR`, kept: data, curves (default: a temporary directory, removed)"},
			&cli.StringFlag{Name: "out", Value: "docs/RESULTS.md", Usage: "Markdown `FILE` to write (figures go to figures/ beside it)"},
			&cli.StringFlag{Name: "json", Usage: "rows as JSON `FILE` (default: --out with .json)"},
			&cli.StringFlag{Name: "budgets", Value: "2,2.5,3,4,6", Usage: "average bit budgets"},
			&cli.StringFlag{Name: "methods", Value: "uniform,lg,dp", Usage: "allocations to compare"},
			&cli.StringFlag{Name: "granularities", Value: "layer,group", Usage: "F-LBQ units: whole layers, 32-channel groups"},
			&cli.StringFlag{Name: "heads", Value: "int8", Usage: "pyramid and head weights of the quantized rows: int8 (int4..int7: fewer bits), fp32, or a list such as int8,fp32 (every row with each)"},
			&cli.IntFlag{Name: "calib-size", Value: 64},
			&cli.StringFlag{Name: "calib-mode", Value: "fast"},
			&cli.StringFlag{Name: "shard", Value: "0/1", Usage: "evaluate shard `i/n` of the rows; writes --json only"},
		}, dataFlags()...),
		Action: runResults,
		Subcommands: []*cli.Command{{
			Name:      "merge",
			Usage:     "join the JSON of flbq results --shard runs into the table",
			ArgsUsage: "SHARD.json...",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "out", Value: "docs/RESULTS.md", Usage: "Markdown `FILE` to write"},
				&cli.StringFlag{Name: "json", Usage: "merged rows `FILE` (default: --out with .json)"},
			},
			Action: runResultsMerge,
		}},
	})
}

// BundledModels are the trained detectors the results table covers by
// default (tools/models/README.md).
var BundledModels = []string{BundledModel, "tools/models/shapes-vit-d128.safetensors", "tools/models/shapes-vitdet-d128.safetensors"}

// resultsFile is RESULTS.json (and each shard's file).
type resultsFile struct {
	Format    string                  `json:"format"`
	Train     string                  `json:"train"`
	Val       string                  `json:"val"`
	CalibSize int                     `json:"calib_size"`
	CalibMode string                  `json:"calib_mode"`
	Seconds   float64                 `json:"seconds"`
	Models    []*pipeline.StudyResult `json:"models"`
}

const resultsFormat = "flbq.results/v1"

func jsonPath(c *cli.Context) string {
	if j := c.String("json"); j != "" {
		return j
	}
	return strings.TrimSuffix(c.String("out"), filepath.Ext(c.String("out"))) + ".json"
}

// parseList splits a comma-separated flag value, dropping empty items.
func parseList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
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
	shard, err := pipeline.ParseShard(c.String("shard"))
	if err != nil {
		return fmt.Errorf("--shard: %w", err)
	}
	var heads []modelpkg.Heads
	for _, h := range parseList(c.String("heads")) {
		v, err := modelpkg.ParseHeads(h)
		if err != nil {
			return fmt.Errorf("--heads: %w", err)
		}
		heads = append(heads, v)
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

	train, val, _, err := demoSets(c, work)
	if err != nil {
		return err
	}
	log("data: calibrating on %s, evaluating on %s", train.About, val.About)
	rf := &resultsFile{Format: resultsFormat, Train: train.About, Val: val.About, CalibSize: c.Int("calib-size"), CalibMode: c.String("calib-mode")}
	for _, m := range models {
		r, err := pipeline.Study(ctx, pipeline.StudyOptions{
			Model: m, Train: train, Val: val, Budgets: budgets,
			Methods: parseList(c.String("methods")), Granularities: parseList(c.String("granularities")), Heads: heads,
			CalibSize: c.Int("calib-size"), CalibMode: c.String("calib-mode"), Work: work, Shard: shard, Log: log,
			Warn: func(m string) { fmt.Fprintf(errWriter(c), "flbq: warning: %s\n", m) },
		})
		if err != nil {
			return fmt.Errorf("%s: %w", m, err)
		}
		rf.Models = append(rf.Models, r)
	}
	rf.Seconds = time.Since(start).Seconds()
	if err := atomicfile.Write(jsonPath(c), func(w io.Writer) error { return writeJSON(w, rf) }); err != nil {
		return err
	}
	if !shard.Whole() {
		log("wrote shard %s to %s (join the shards with flbq results merge)", shard, jsonPath(c))
		return nil
	}
	if err := writeResults(c.String("out"), rf); err != nil {
		return err
	}
	log("wrote %s, %s and %s/", c.String("out"), jsonPath(c), filepath.Join(filepath.Dir(c.String("out")), "figures"))
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", " ")
	return enc.Encode(v)
}

func readResultsFile(path string) (*resultsFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var rf resultsFile
	if err := json.Unmarshal(b, &rf); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if rf.Format != resultsFormat {
		return nil, fmt.Errorf("%s: format %q, want %q", path, rf.Format, resultsFormat)
	}
	return &rf, nil
}

func runResultsMerge(c *cli.Context) error {
	if c.NArg() == 0 {
		return errors.New("results merge: give the shards' JSON files")
	}
	var files []*resultsFile
	for _, p := range c.Args().Slice() {
		rf, err := readResultsFile(p)
		if err != nil {
			return err
		}
		if len(files) > 0 {
			f0 := files[0]
			if rf.Train != f0.Train || rf.Val != f0.Val || rf.CalibSize != f0.CalibSize || rf.CalibMode != f0.CalibMode || len(rf.Models) != len(f0.Models) {
				return fmt.Errorf("%s: a shard of another run (data, calibration or models differ from %s)", p, c.Args().First())
			}
		}
		files = append(files, rf)
	}
	out := &resultsFile{Format: resultsFormat, Train: files[0].Train, Val: files[0].Val, CalibSize: files[0].CalibSize, CalibMode: files[0].CalibMode}
	for m := range files[0].Models {
		var shards []*pipeline.StudyResult
		for i, f := range files {
			if f.Models[m].Model != files[0].Models[m].Model {
				return fmt.Errorf("%s: model %d is %s, not %s", c.Args().Get(i), m, f.Models[m].Model, files[0].Models[m].Model)
			}
			shards = append(shards, f.Models[m])
			out.Seconds += f.Seconds
		}
		merged, err := pipeline.MergeStudies(shards)
		if err != nil {
			return fmt.Errorf("%s: %w", files[0].Models[m].Model, err)
		}
		out.Models = append(out.Models, merged)
	}
	if err := atomicfile.Write(jsonPath(c), func(w io.Writer) error { return writeJSON(w, out) }); err != nil {
		return err
	}
	if err := writeResults(c.String("out"), out); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "merged %d shards: wrote %s and %s\n", len(files), c.String("out"), jsonPath(c))
	return nil
}

// modelStem names a model's figures: its file name without extension.
func modelStem(path string) string {
	return strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
}

// writeResults writes the Markdown table and the figures of a whole study.
func writeResults(out string, rf *resultsFile) error {
	figDir := filepath.Join(filepath.Dir(out), "figures")
	if err := os.MkdirAll(figDir, 0o755); err != nil {
		return err
	}
	var sections []string
	for _, r := range rf.Models {
		sec, err := studyFigures(r, figDir)
		if err != nil {
			return fmt.Errorf("%s: %w", r.Model, err)
		}
		sections = append(sections, sec)
	}
	md := resultsMarkdown(rf, sections)
	// Hand-written findings below the marker survive regeneration.
	if old, err := os.ReadFile(out); err == nil {
		if i := strings.Index(string(old), findingsMarker); i >= 0 {
			md += "\n" + string(old[i:])
		}
	}
	return atomicfile.WriteBytes(out, []byte(md))
}

// studyFigures draws a model's figures and returns its section.
func studyFigures(r *pipeline.StudyResult, figDir string) (string, error) {
	stem := modelStem(r.Model)
	var pts []plots.Point
	var series []plots.LayerBitsSeries
	for _, row := range r.Rows {
		if row.Method == "fp32" {
			continue
		}
		m := row.Method
		if strings.HasPrefix(m, "uniform") {
			m = "uniform"
		}
		pts = append(pts, plots.Point{Solver: m, AvgBits: row.AvgBits, Distortion: row.Distortion})
		if row.Alloc != nil {
			series = append(series, plots.LayerBitsSeries{Label: "F-LBQ-" + strings.ToUpper(row.Solver), Alloc: row.Alloc})
		}
	}
	// DP first, as the figure has always drawn it.
	sort.SliceStable(series, func(i, j int) bool { return series[i].Label > series[j].Label })
	for _, ext := range []string{"png", "svg"} {
		if len(pts) > 0 {
			if err := plots.RateDistortion(filepath.Join(figDir, stem+"-rate-distortion."+ext), stem+": backbone distortion vs bits, held-out images", "measured distortion", pts); err != nil {
				return "", err
			}
		}
		if len(series) > 0 {
			if err := plots.LayerBits(filepath.Join(figDir, stem+"-layer-bits."+ext), stem+": bits per layer at 3 bits (32-channel groups)", series, globalBlocks(r.Model)...); err != nil {
				return "", err
			}
		}
	}
	return modelSection(r, len(pts) > 0, len(series) > 0), nil
}

// globalBlocks shades a ViTDet's global-attention blocks in the
// bits-per-layer figure (none for other families, or when the model file
// is not at hand, as after merging shards from other machines).
func globalBlocks(modelPath string) []plots.Highlight {
	f, err := safetensors.Open(modelPath)
	if err != nil {
		return nil
	}
	cfg, err := model.ParseConfig([]byte(f.Metadata[safetensors.ConfigKey]))
	if err != nil || cfg.Family != "vitdet" {
		return nil
	}
	windowed := map[string]bool{}
	for _, i := range cfg.WindowBlockIndexes {
		windowed[fmt.Sprintf("backbone.net.blocks.%d.", i)] = true
	}
	return []plots.Highlight{{Label: "global-attention blocks", Match: func(layer string) bool {
		if !strings.HasPrefix(layer, "backbone.net.blocks.") {
			return false
		}
		rest := strings.TrimPrefix(layer, "backbone.net.blocks.")
		i := strings.Index(rest, ".")
		return i > 0 && !windowed["backbone.net.blocks."+rest[:i+1]]
	}}}
}

// findingsMarker starts the hand-written part of RESULTS.md, which
// regeneration keeps: what the numbers say, checked against them.
const findingsMarker = "<!-- findings: written by hand, kept by flbq results -->"

func resultsMarkdown(rf *resultsFile, sections []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# F-LBQ results\n\nRegenerate with `go run ./tools/flbq results` (this file, RESULTS.json and `figures/`; %s of compute here).\n\n", (time.Duration(rf.Seconds) * time.Second).Round(time.Second))
	fmt.Fprintf(&b, "Models: %d (tools/models/README.md for the bundled ones). Calibration set: %s. Evaluation set: %s. ", len(rf.Models), rf.Train, rf.Val)
	fmt.Fprintf(&b, "Curves: %d training images, %s mode, MSE weight scales; floor target − 2; pyramid and heads at 8 bits in every quantized row unless it says fp32 heads. ", rf.CalibSize, rf.CalibMode)
	b.WriteString("Distortion: mean squared error of the backbone's output maps (Swin: the four stage maps; ViT: the encoder map) against fp32 on the held-out images (per element). ")
	b.WriteString("Size: fp32 row = the model file; quantized rows = the generated package's blob (packed backbone + 8-bit heads + fp32 norms/biases). ")
	b.WriteString("Latency: median per image, this machine, all cores, int8 kernels. ")
	b.WriteString("Uniform rows appear once per integer width, under the first budget of which it is a nearest integer.\n")
	for _, s := range sections {
		b.WriteString("\n" + s)
	}
	return b.String()
}

// modelSection is one model's table and figure links.
func modelSection(r *pipeline.StudyResult, rdFig, layerFig bool) string {
	var b strings.Builder
	stem := modelStem(r.Model)
	fmt.Fprintf(&b, "## %s\n\nModel: `%s` (%s backbone).\n\n", stem, r.Model, r.Family)
	b.WriteString("| budget | method | avg bits | distortion | box AP | mask AP | size MB | backbone ms | detector ms |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, row := range r.Rows {
		bits, dist := fmt.Sprintf("%.3f", row.AvgBits), fmt.Sprintf("%.3g", row.Distortion)
		if row.Method == "fp32" {
			bits, dist = "32", "0"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %.3f | %.3f | %.2f | %.1f | %.1f |\n", row.Budget, row.Method, bits, dist, row.Box, row.Mask, float64(row.Bytes)/1e6, row.MsBackbone, row.MsPerImage)
	}
	if rdFig {
		fmt.Fprintf(&b, "\n![rate–distortion](figures/%s-rate-distortion.svg)\n", stem)
	}
	if layerFig {
		fmt.Fprintf(&b, "\n![bits per layer](figures/%s-layer-bits.svg)\n", stem)
	}
	return b.String()
}
