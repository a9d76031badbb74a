package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
