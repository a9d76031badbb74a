package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flbq/flbq/tools/data/shapes"
	"github.com/flbq/flbq/tools/pipeline"
)

func TestResultsTable(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "docs", "RESULTS.md")
	os.MkdirAll(filepath.Dir(out), 0o755)
	if _, err := runCLI(t, "results", "--model", "../../runtime/maskrcnn/testdata/swin_maskrcnn.safetensors",
		"--work", filepath.Join(dir, "work"), "--out", out, "--budgets", "2.5",
		"--shapes-train", "10", "--shapes-val", "2", "--calib-size", "4"); err != nil {
		t.Fatal(err)
	}
	md, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	s := string(md)
	// fp32, uniform 2 and 3 (nearest integers of 2.5), LG/DP × layer/group.
	for _, want := range []string{"| — | fp32 |", "| 2.5 | uniform 2-bit |", "| 2.5 | uniform 3-bit |", "F-LBQ-LG layer", "F-LBQ-DP group"} {
		if !strings.Contains(s, want) {
			t.Errorf("RESULTS.md lacks %q:\n%s", want, s)
		}
	}
	if n := strings.Count(s, "\n| 2.5 |"); n != 6 {
		t.Errorf("%d rows at budget 2.5, want 6", n)
	}
	if !strings.Contains(s, "## swin_maskrcnn\n") || !strings.Contains(s, "figures/swin_maskrcnn-rate-distortion.svg") {
		t.Errorf("RESULTS.md lacks the model's section or figure link:\n%s", s)
	}
	for _, f := range []string{"swin_maskrcnn-rate-distortion.png", "swin_maskrcnn-rate-distortion.svg"} {
		if _, err := os.Stat(filepath.Join(dir, "docs", "figures", f)); err != nil {
			t.Error(err)
		}
	}
	fix := "../../runtime/maskrcnn/testdata/swin_maskrcnn.safetensors"
	if _, err := runCLI(t, "results", "--model", fix, "--model", fix, "--out", out); err == nil || !strings.Contains(err.Error(), "two models named swin_maskrcnn") {
		t.Errorf("same model twice: err = %v, want a clear refusal", err)
	}
	if _, err := runCLI(t, "results", "--budgets", "2,x", "--model", "../../runtime/maskrcnn/testdata/swin_maskrcnn.safetensors", "--out", out); err == nil {
		t.Error("bad budget accepted")
	}
}

// TestResultsLibraryShardsMerge: the CLI's rows are the library's
// (pipeline.Study on the same data, reusing the CLI's curves), and shards
// joined by results merge give the unsharded table's rows.
func TestResultsLibraryShardsMerge(t *testing.T) {
	dir := t.TempDir()
	work := filepath.Join(dir, "work")
	model := "../../runtime/maskrcnn/testdata/swin_maskrcnn.safetensors"
	args := []string{"results", "--model", model, "--work", work, "--budgets", "3", "--methods", "lg,dp", "--granularities", "group",
		"--shapes-train", "8", "--shapes-val", "2", "--calib-size", "4"}
	whole := filepath.Join(dir, "whole.json")
	if _, err := runCLI(t, append(args, "--out", filepath.Join(dir, "RESULTS.md"), "--json", whole)...); err != nil {
		t.Fatal(err)
	}
	rf, err := readResultsFile(whole)
	if err != nil {
		t.Fatal(err)
	}
	if len(rf.Models) != 1 || len(rf.Models[0].Rows) != 3 {
		t.Fatalf("%+v", rf.Models)
	}
	// The library on the CLI's data, computing every row itself (no Work).
	lib, err := pipeline.Study(context.Background(), pipeline.StudyOptions{
		Model: model, Budgets: []float64{3}, Methods: []string{"lg", "dp"}, Granularities: []string{"group"}, CalibSize: 4, CalibMode: "fast",
		Train: pipeline.Split{Instances: filepath.Join(work, "train", shapes.InstancesFile), Images: filepath.Join(work, "train", shapes.ImagesDir)},
		Val:   pipeline.Split{Instances: filepath.Join(work, "val", shapes.InstancesFile), Images: filepath.Join(work, "val", shapes.ImagesDir)},
	})
	if err != nil {
		t.Fatal(err)
	}
	noTimes := func(rows []pipeline.StudyRow) string {
		for i := range rows {
			rows[i].MsPerImage, rows[i].MsBackbone = 0, 0
			if a := rows[i].Alloc; a != nil {
				delete(a.Meta, "seconds") // the solver's time
			}
		}
		b, _ := json.Marshal(rows)
		return string(b)
	}
	if a, b := noTimes(rf.Models[0].Rows), noTimes(lib.Rows); a != b {
		t.Errorf("CLI rows differ from the library's:\n%.2000s\n%.2000s", a, b)
	}
	var parts []string
	for i := 0; i < 2; i++ {
		p := filepath.Join(dir, fmt.Sprintf("shard%d.json", i))
		// Each shard in a Work of its own, as on another machine.
		sargs := append([]string(nil), args...)
		sargs[4] = filepath.Join(dir, fmt.Sprintf("work%d", i))
		if _, err := runCLI(t, append(sargs, "--shard", fmt.Sprintf("%d/2", i), "--json", p)...); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, p)
	}
	if _, err := os.Stat(filepath.Join(dir, "docs")); err == nil {
		t.Error("a shard wrote the Markdown table")
	}
	merged := filepath.Join(dir, "merged.json")
	md := filepath.Join(dir, "MERGED.md")
	if out, err := runCLI(t, "results", "merge", "--out", md, "--json", merged, parts[0], parts[1]); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	mf, err := readResultsFile(merged)
	if err != nil {
		t.Fatal(err)
	}
	if a, b := noTimes(mf.Models[0].Rows), noTimes(rf.Models[0].Rows); a != b {
		t.Errorf("merged shards differ from the whole run:\n%.2000s\n%.2000s", a, b)
	}
	if b, err := os.ReadFile(md); err != nil || !strings.Contains(string(b), "F-LBQ-DP group") {
		t.Errorf("merged table: %v\n%s", err, b)
	}
	if _, err := runCLI(t, "results", "merge", "--out", md, parts[0]); err == nil || !strings.Contains(err.Error(), "is in no shard") {
		t.Errorf("merge of one shard of two: %v", err)
	}
}
