package main

import (
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flbq/flbq/solver"
)

func synthCurves(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "c.json")
	if _, err := runCLI(t, "curves", "synth", "--arch", "vit-b", "--group-size", "64", "--seed", "3", "--out", p); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestAllocateWritesValidAllocation(t *testing.T) {
	dir := t.TempDir()
	curves := synthCurves(t, dir)
	for _, s := range []string{"lg", "dp", "lg+fill"} {
		out := filepath.Join(dir, s+".json")
		stdout, err := runCLI(t, "allocate", "--curves", curves, "--target-bits", "3.5", "--solver", s,
			"--override", "backbone.blocks.0.*=8", "--out", out)
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if !strings.Contains(stdout, "predicted distortion") {
			t.Errorf("%s: summary missing: %q", s, stdout)
		}
		a, err := solver.ReadAllocFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if a.Solver != s || a.TargetBits != 3.5 || a.AvgBits > 3.5+0.02 {
			t.Errorf("%s: solver %q target %v avg %v", s, a.Solver, a.TargetBits, a.AvgBits)
		}
		for _, u := range a.Units {
			if strings.HasPrefix(u.Layer, "backbone.blocks.0.") && u.Bits != 8 {
				t.Fatalf("%s: override ignored for %s: %d bits", s, u.UnitID, u.Bits)
			}
			if !strings.HasPrefix(u.Layer, "backbone.blocks.0.") && u.Bits < 2 {
				t.Fatalf("%s: floor violated for %s: %d bits", s, u.UnitID, u.Bits)
			}
		}
	}
}

func TestAllocateErrorsLeaveNoFile(t *testing.T) {
	dir := t.TempDir()
	curves := synthCurves(t, dir)
	out := filepath.Join(dir, "a.json")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--target-bits", "4", "--solver", "magic"}, `unknown solver "magic"`},
		{[]string{"--target-bits", "12"}, "target bits 12 is outside 1..8"},
		{[]string{}, "--target-bits is required"},
		{[]string{"--target-bits", "4", "--override", "nothing.*=4"}, "matches no unit"},
		{[]string{"--target-bits", "4", "--override", "x"}, "want pattern=bits"},
		{[]string{"--target-bits", "4", "--solver", "dp", "--dp-max-gib", "0.000001"}, "use the lg solver"},
		{[]string{"--target-bits", "2", "--override", "*=8"}, "infeasible"},
	} {
		args := append([]string{"allocate", "--curves", curves, "--out", out}, tc.args...)
		_, err := runCLI(t, args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line containing %q", tc.args, err, tc.want)
		}
		if _, serr := os.Stat(out); serr == nil {
			t.Fatalf("%v: output written despite the error", tc.args)
		}
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"format":"flbq.curves/v1","bits":[2],"units":[{"layer":"a","group":0,"channels":[0,1],"weights":4,"distortion":[-1]}]}`), 0o644)
	if _, err := runCLI(t, "allocate", "--curves", bad, "--target-bits", "2", "--out", out); err == nil ||
		!strings.Contains(err.Error(), "bad.json") || !strings.Contains(err.Error(), `units[0] (layer "a" group 0)`) {
		t.Errorf("bad curves: error %v should name the file and the unit", err)
	}
}

func TestAllocateSweepCSV(t *testing.T) {
	dir := t.TempDir()
	curves := synthCurves(t, dir)
	out := filepath.Join(dir, "rd.csv")
	plot := filepath.Join(dir, "rd.png")
	if _, err := runCLI(t, "allocate", "--curves", curves, "--sweep", "2:4:0.5", "--out", out, "--plot", plot); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(plot); err != nil || st.Size() < 1000 {
		t.Fatalf("plot not written: %v", err)
	}
	f, _ := os.Open(out)
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1+5*4 || rows[0][0] != "target_bits" || rows[1][1] != "lg" || rows[2][1] != "dp" || rows[4][1] != "uniform" {
		t.Fatalf("unexpected table: %v", rows)
	}
	for _, bad := range []string{"2:4", "4:2:0.5", "0:4:1", "2:4:0", "a:4:1"} {
		if _, err := runCLI(t, "allocate", "--curves", curves, "--sweep", bad, "--out", out); err == nil {
			t.Errorf("--sweep %s accepted", bad)
		}
	}
}

func TestCurvesSynthRejectsBadArgs(t *testing.T) {
	out := filepath.Join(t.TempDir(), "c.json")
	for _, args := range [][]string{
		{"--arch", "resnet", "--out", out},
		{"--arch", "vit-b", "--group-size", "24", "--out", out},
		{"--arch", "vit-b", "--granularity", "token", "--out", out},
	} {
		if _, err := runCLI(t, append([]string{"curves", "synth"}, args...)...); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("output written despite errors")
	}
}
