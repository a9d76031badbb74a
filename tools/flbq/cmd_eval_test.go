package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// cocoGoldens are runtime/coco's pycocotools goldens.
const cocoGoldens = "../../runtime/coco/testdata/goldens"

func TestEvalResultsCLI(t *testing.T) {
	dir := filepath.Join(cocoGoldens, "case4_edge")
	var want map[string][]float64
	b, err := os.ReadFile(filepath.Join(dir, "expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	txt, err := os.ReadFile(filepath.Join(dir, "expected.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []string{"bbox", "segm"} {
		out := filepath.Join(t.TempDir(), "eval.json")
		stdout, err := runCLI(t, "eval-results", "--gt", filepath.Join(dir, "gt.json"), "--dets", filepath.Join(dir, "dets.json"),
			"--iou-type", typ, "--json", out)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(txt), "# iouType="+typ+"\n"+stdout) {
			t.Errorf("%s: printed\n%s\nnot as in expected.txt", typ, stdout)
		}
		var got struct {
			IoUType     string    `json:"iou_type"`
			Stats       []float64 `json:"stats"`
			Metrics     map[string]float64
			PerCategory []struct{ ID int64 } `json:"per_category"`
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		if got.IoUType != typ || len(got.Stats) != 12 || len(got.PerCategory) != 4 {
			t.Fatalf("%s: json %s", typ, b)
		}
		for i, w := range want[typ] {
			if math.Abs(got.Stats[i]-w) > 1e-12 {
				t.Errorf("%s stats[%d] = %v, want %v", typ, i, got.Stats[i], w)
			}
		}
		if got.Metrics["AP"] != got.Stats[0] || got.Metrics["ARl"] != got.Stats[11] {
			t.Errorf("metrics %v do not match stats", got.Metrics)
		}
	}
}

func TestEvalResultsCLIErrors(t *testing.T) {
	dir := filepath.Join(cocoGoldens, "case1_small")
	gt, dets := filepath.Join(dir, "gt.json"), filepath.Join(dir, "dets.json")
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, []byte(`[{"image_id":1,"category_id":3,"bbox":[1,2,3],"score":0.5}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--gt", gt, "--dets", dets, "--iou-type", "keypoints"}, `unknown iou type "keypoints"`},
		{[]string{"--gt", gt}, `"dets"`},
		{[]string{"--gt", gt, "--dets", bad}, "results[0]: bbox has 3 numbers"},
		{[]string{"--gt", dets, "--dets", dets}, "want a JSON object"},
		{[]string{"--gt", gt, "--dets", filepath.Join(dir, "nope.json")}, "no such file"},
	} {
		_, err := runCLI(t, append([]string{"eval-results"}, c.args...)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: err %v, want %q", c.args, err, c.want)
		}
	}
}
