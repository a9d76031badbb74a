package coco

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var goldenCases = []string{"case1_small", "case2_crowd_rle", "case3_many", "case4_edge"}

// goldenDir holds pycocotools' results on four small datasets, copied from
// the shared fixtures by tools/refgen/copy_shared_fixtures.sh.
const goldenDir = "testdata/goldens"

func goldenPath(t testing.TB, rel ...string) string {
	t.Helper()
	return filepath.Join(append([]string{goldenDir}, rel...)...)
}

func readJSON(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestGoldens(t *testing.T) {
	for _, c := range goldenCases {
		t.Run(c, func(t *testing.T) {
			t.Parallel()
			gt, err := ReadDataset(goldenPath(t, c, "gt.json"))
			if err != nil {
				t.Fatal(err)
			}
			dets, err := ReadResults(goldenPath(t, c, "dets.json"))
			if err != nil {
				t.Fatal(err)
			}
			var want map[string][]float64
			readJSON(t, goldenPath(t, c, "expected.json"), &want)
			var perCat map[string]map[string]struct{ AP, AR100 float64 }
			readJSON(t, goldenPath(t, c, "per_category.json"), &perCat)
			txt, err := os.ReadFile(goldenPath(t, c, "expected.txt"))
			if err != nil {
				t.Fatal(err)
			}
			for _, typ := range []IoUType{BBox, Segm} {
				e, err := Evaluate(gt, dets, typ, Options{})
				if err != nil {
					t.Fatalf("%v: %v", typ, err)
				}
				w := want[typ.String()]
				if len(w) != 12 {
					t.Fatalf("%v: expected.json has %d numbers", typ, len(w))
				}
				worst := 0.0
				for i := range w {
					d := math.Abs(e.Stats[i] - w[i])
					worst = max(worst, d)
					if d > 1e-6 {
						t.Errorf("%v %s: got %.17g, want %.17g", typ, StatNames[i], e.Stats[i], w[i])
					}
				}
				t.Logf("%v: max |diff| %.3g", typ, worst)
				// The printed summary must be the one pycocotools printed.
				sec := section(string(txt), "# iouType="+typ.String())
				if got := e.Summary(); got != sec {
					t.Errorf("%v summary:\n%s\nwant:\n%s", typ, got, sec)
				}
				for _, pc := range e.PerCategory() {
					w, ok := perCat[typ.String()][strconv.FormatInt(pc.CategoryID, 10)]
					if !ok {
						t.Errorf("%v: category %d not in per_category.json", typ, pc.CategoryID)
						continue
					}
					if math.Abs(pc.AP-w.AP) > 1e-6 || math.Abs(pc.AR100-w.AR100) > 1e-6 {
						t.Errorf("%v category %d: AP %.17g AR100 %.17g, want %.17g %.17g", typ, pc.CategoryID, pc.AP, pc.AR100, w.AP, w.AR100)
					}
				}
			}
		})
	}
}

// section returns the lines after header up to the next "#" line.
func section(txt, header string) string {
	var b strings.Builder
	in := false
	for _, l := range strings.SplitAfter(txt, "\n") {
		if strings.HasPrefix(l, "#") {
			in = strings.TrimSpace(l) == header
			continue
		}
		if in && strings.TrimSpace(l) != "" {
			b.WriteString(strings.TrimRight(l, "\n") + "\n")
		}
	}
	return b.String()
}
