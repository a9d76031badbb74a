package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	dir := t.TempDir()
	curves := synthCurves(t, dir)
	var allocs []string
	for _, s := range []string{"dp", "lg", "uniform"} {
		p := filepath.Join(dir, s+".json")
		if _, err := runCLI(t, "allocate", "--curves", curves, "--target-bits", "3", "--solver", s, "--out", p); err != nil {
			t.Fatal(err)
		}
		allocs = append(allocs, "--alloc", p)
	}
	rd := filepath.Join(dir, "rd.csv")
	if _, err := runCLI(t, "allocate", "--curves", curves, "--sweep", "2:4:1", "--out", rd); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "fig")
	if _, err := runCLI(t, append(append([]string{"report"}, allocs...), "--sweep", rd, "--out", out)...); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"layer-bits.png", "layer-bits.svg", "rate-distortion.png", "rate-distortion.svg"} {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() < 500 {
			t.Errorf("%s missing: %v", f, err)
		}
	}
	os.WriteFile(rd, []byte("target_bits,solver\n2,lg\n"), 0o644)
	if _, err := runCLI(t, "report", "--alloc", strings.TrimPrefix(allocs[1], ""), "--sweep", rd, "--out", out); err == nil ||
		!strings.Contains(err.Error(), "avg_bits") {
		t.Fatalf("bad sweep CSV: %v", err)
	}
}
