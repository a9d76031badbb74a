package pipeline

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/flbq/flbq/tools/data/shapes"
)

const studyModel = "../../runtime/maskrcnn/testdata/swin_maskrcnn.safetensors"

func studySplits(t *testing.T) (Split, Split) {
	dir := t.TempDir()
	var out []Split
	for i, n := range []int{6, 3} {
		d := filepath.Join(dir, []string{"train", "val"}[i])
		if _, err := shapes.Generate(shapes.Options{N: n, Seed: uint64(1 + i), Size: 160, Out: d}); err != nil {
			t.Fatal(err)
		}
		out = append(out, Split{Instances: filepath.Join(d, shapes.InstancesFile), Images: filepath.Join(d, shapes.ImagesDir), About: d})
	}
	return out[0], out[1]
}

// withoutTimes blanks the latencies, the one part of a row that varies
// between runs.
func withoutTimes(rows []StudyRow) []StudyRow {
	out := make([]StudyRow, len(rows))
	for i, r := range rows {
		r.MsPerImage, r.MsBackbone = 0, 0
		out[i] = r
	}
	return out
}

// TestStudyShards: the study in one run and in two shards (reusing the
// first run's curves) give the same rows, a rerun in the same Work reuses
// everything, and a damaged or foreign shard is refused naming it.
func TestStudyShards(t *testing.T) {
	train, val := studySplits(t)
	work := t.TempDir()
	var logs []string
	o := StudyOptions{Model: studyModel, Train: train, Val: val, Budgets: []float64{2.5}, Methods: []string{"uniform", "lg", "dp"},
		Granularities: []string{"layer", "group"}, CalibSize: 4, CalibMode: "fast", Work: work,
		Log: func(f string, a ...any) { logs = append(logs, strings.TrimSpace(fmt.Sprintf(f, a...))) }}
	whole, err := Study(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	// fp32, uniform 2 and 3, LG/DP × layer/group.
	if whole.Jobs != 7 || len(whole.Rows) != 7 || whole.Rows[0].Method != "fp32" || whole.Rows[1].Method != "uniform 2-bit" {
		t.Fatalf("%d jobs, rows %+v", whole.Jobs, whole.Rows)
	}
	for _, r := range whole.Rows[1:] {
		if r.Bytes <= 0 || !(r.Distortion > 0) || len(r.BoxStats) != 12 || len(r.MaskStats) != 12 {
			t.Errorf("row %s: bytes %d, distortion %v, %d/%d stats", r.Method, r.Bytes, r.Distortion, len(r.BoxStats), len(r.MaskStats))
		}
	}
	// A rerun in the same Work reuses every row.
	logs = nil
	again, err := Study(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if reused := strings.Count(strings.Join(logs, "\n"), "reused from"); reused != 2+7 || !reflect.DeepEqual(again.Rows, whole.Rows) {
		t.Errorf("rerun: %d of 2 curves + 7 rows reused, rows equal: %v\n%s", reused, reflect.DeepEqual(again.Rows, whole.Rows), strings.Join(logs, "\n"))
	}
	// The shards compute their rows afresh (a Work holding the curves only).
	shardWork := t.TempDir()
	for _, g := range []string{"layer", "group"} {
		f := "swin_maskrcnn." + g + ".curves.json"
		b, err := os.ReadFile(filepath.Join(work, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(shardWork, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	o.Work = shardWork
	var shards []*StudyResult
	logs = nil
	for i := 0; i < 2; i++ {
		o.Shard = Shard{Index: i, Count: 2}
		s, err := Study(context.Background(), o)
		if err != nil {
			t.Fatal(err)
		}
		shards = append(shards, s)
	}
	if reused := strings.Count(strings.Join(logs, "\n"), "reused from"); reused != 4 {
		t.Errorf("the shards calibrated again or reused rows (%d reuses, want the 4 calibrations):\n%s", reused, strings.Join(logs, "\n"))
	}
	merged, err := MergeStudies(shards)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(withoutTimes(merged.Rows), withoutTimes(whole.Rows)) || !reflect.DeepEqual(merged.Fingerprint, whole.Fingerprint) {
		t.Errorf("merged shards differ from the whole study:\n%+v\n%+v", merged.Rows, whole.Rows)
	}
	for _, c := range []struct {
		name   string
		shards func() []*StudyResult
		want   string
	}{
		{"missing", func() []*StudyResult { return shards[:1] }, "is in no shard"},
		{"overlap", func() []*StudyResult { return []*StudyResult{shards[0], shards[1], shards[0]} }, "is in shards 0 and 2"},
		{"foreign", func() []*StudyResult {
			f := *shards[1]
			f.Fingerprint = map[string]string{}
			for k, v := range shards[1].Fingerprint {
				f.Fingerprint[k] = v
			}
			f.Fingerprint["budgets"] = "[3]"
			return []*StudyResult{shards[0], &f}
		}, `shard 1 (1/2) comes from another study: budgets "[3]" vs "[2.5]"`},
	} {
		if _, err := MergeStudies(c.shards()); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := Study(context.Background(), StudyOptions{Model: studyModel, Train: train, Val: val, Budgets: []float64{9}, Methods: []string{"dp"}, Granularities: []string{"group"}}); err == nil {
		t.Error("a budget of 9 bits was accepted")
	}
	if _, err := Study(context.Background(), StudyOptions{Model: studyModel, Train: train, Val: val, Budgets: []float64{3}, Methods: []string{"greedy"}, Granularities: []string{"group"}}); err == nil {
		t.Error("method greedy was accepted")
	}
}
