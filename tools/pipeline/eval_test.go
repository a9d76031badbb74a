package pipeline

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/backend/backendtest"
	"github.com/flbq/flbq/runtime/coco"
	"github.com/flbq/flbq/tools/data/shapes"
)

func TestMain(m *testing.M) { backendtest.Main(m) }

// The bundled trained detector, so that the images have real detections.
const bundledModel = "../models/shapes-swin-t32.safetensors"

var (
	dataOnce sync.Once
	dataDir  string
	dataErr  error
)

// testData renders 7 held-out shapes images (192×192) once per test run.
func testData(t *testing.T) (val, images string) {
	t.Helper()
	dataOnce.Do(func() {
		dataDir, dataErr = os.MkdirTemp("", "flbq-pipeline-")
		if dataErr == nil {
			_, dataErr = shapes.Generate(shapes.Options{N: 7, Seed: 2, Size: 192, Out: dataDir})
		}
	})
	if dataErr != nil {
		t.Fatal(dataErr)
	}
	return filepath.Join(dataDir, shapes.InstancesFile), filepath.Join(dataDir, shapes.ImagesDir)
}

func opts(t *testing.T, out string) EvalOptions {
	val, images := testData(t)
	return EvalOptions{Model: bundledModel, Val: val, Images: images, Out: out, ScoreThresh: -1}
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sameOutputs checks that two output directories hold byte-identical
// results and manifests.
func sameOutputs(t *testing.T, what, a, b string) {
	t.Helper()
	for _, f := range []string{ResultsFile, ManifestFile} {
		if !bytes.Equal(readFile(t, filepath.Join(a, f)), readFile(t, filepath.Join(b, f))) {
			t.Errorf("%s: %s differs from the single run's", what, f)
		}
	}
}

var (
	singleOnce sync.Once
	singleDir  string
	singleRep  *EvalReport
	singleErr  error
)

// single is one uninterrupted, unsharded run on all images.
func single(t *testing.T) (string, *EvalReport) {
	t.Helper()
	singleOnce.Do(func() {
		singleDir, singleErr = os.MkdirTemp("", "flbq-eval-single-")
		if singleErr == nil {
			singleRep, singleErr = Eval(opts(t, singleDir))
		}
	})
	if singleErr != nil {
		t.Fatal(singleErr)
	}
	return singleDir, singleRep
}

func TestEvalScores(t *testing.T) {
	dir, rep := single(t)
	m := rep.Manifest
	if m.Shard != "0/1" || len(m.ImageIDs) != 7 || m.Detections == 0 || rep.Detected != 7 || rep.Resumed != 0 {
		t.Fatalf("manifest %+v, detected %d resumed %d", m, rep.Detected, rep.Resumed)
	}
	if _, err := os.Stat(filepath.Join(dir, ProgressFile)); !os.IsNotExist(err) {
		t.Errorf("progress file left behind: %v", err)
	}
	// The manifest's numbers are an independent evaluation of results.json.
	val, _ := testData(t)
	gt, err := coco.ReadDataset(val)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := coco.ReadResults(filepath.Join(dir, ResultsFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, typ := range []coco.IoUType{coco.BBox, coco.Segm} {
		e, err := coco.Evaluate(gt, rs, typ, coco.Options{})
		if err != nil {
			t.Fatal(err)
		}
		got := m.Stats[typ.String()]
		for i := range e.Stats {
			if got[i] != e.Stats[i] {
				t.Errorf("%s stat %d: manifest %v, evaluation %v", typ, i, got[i], e.Stats[i])
			}
		}
		// The trained detector finds the shapes.
		if e.Stats[0] < 0.3 {
			t.Errorf("%s AP %.3f: the bundled detector should find the shapes", typ, e.Stats[0])
		}
	}
	// A rerun finds the finished evaluation and detects nothing.
	again, err := Eval(opts(t, dir))
	if err != nil || !again.AlreadyDone || again.Evals[coco.BBox].Stats[0] != m.Stats["bbox"][0] {
		t.Fatalf("rerun: %+v, %v", again, err)
	}
}

// Shards merged equal the single run bit for bit, whatever the threads.
func TestShardMerge(t *testing.T) {
	want, rep := single(t)
	tmp := t.TempDir()
	var dirs []string
	for i := range 3 {
		o := opts(t, filepath.Join(tmp, "shard", string(rune('a'+i))))
		o.Shard = Shard{i, 3}
		prev := backend.SetThreads(1 + i%2) // one or two image workers
		r, err := Eval(o)
		backend.SetThreads(prev)
		if err != nil {
			t.Fatal(err)
		}
		if r.Manifest.Stats != nil {
			t.Errorf("shard %d has whole-set stats", i)
		}
		dirs = append(dirs, o.Out)
	}
	merged := filepath.Join(tmp, "merged")
	val, _ := testData(t)
	mr, err := Merge(merged, val, []string{dirs[2], dirs[0], dirs[1]})
	if err != nil {
		t.Fatal(err)
	}
	sameOutputs(t, "merge", want, merged)
	for typ, s := range rep.Manifest.Stats {
		for i := range s {
			if mr.Manifest.Stats[typ][i] != s[i] {
				t.Errorf("%s stat %d: merged %v, single %v", typ, i, mr.Manifest.Stats[typ][i], s[i])
			}
		}
	}

	// Refusals, each naming the shard and what differs.
	for _, c := range []struct {
		name  string
		dirs  []string
		setup func(t *testing.T) []string
		want  string
	}{
		{"missing", dirs[:2], nil, "shard 2/3 is missing"},
		{"duplicate", []string{dirs[0], dirs[1], dirs[1]}, nil, "are both shard 1/3"},
		{"other options", nil, func(t *testing.T) []string {
			o := opts(t, filepath.Join(t.TempDir(), "x"))
			o.Shard, o.MaxDets = Shard{1, 3}, 5
			if _, err := Eval(o); err != nil {
				t.Fatal(err)
			}
			return []string{dirs[0], o.Out, dirs[2]}
		}, "max_dets 0 vs 5"},
		{"damaged results", nil, func(t *testing.T) []string {
			d := copyDir(t, dirs[1])
			p := filepath.Join(d, ResultsFile)
			rs, err := coco.ReadResults(p)
			if err != nil {
				t.Fatal(err)
			}
			rs[0].ImageID = rep.Manifest.ImageIDs[0] // shard 0's first image
			if err := coco.WriteResults(p, rs); err != nil {
				t.Fatal(err)
			}
			return []string{dirs[0], d, dirs[2]}
		}, "results.json[0] is for image"},
		{"damaged manifest", nil, func(t *testing.T) []string {
			d := copyDir(t, dirs[2])
			p := filepath.Join(d, ManifestFile)
			var m Manifest
			if err := json.Unmarshal(readFile(t, p), &m); err != nil {
				t.Fatal(err)
			}
			m.ImageIDs = m.ImageIDs[1:]
			b, _ := json.Marshal(m)
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
			return []string{dirs[0], dirs[1], d}
		}, "images, the rule selects"},
		{"unfinished", nil, func(t *testing.T) []string {
			d := copyDir(t, dirs[2])
			os.Remove(filepath.Join(d, ManifestFile))
			os.WriteFile(filepath.Join(d, ProgressFile), []byte("{}\n"), 0o644)
			return []string{dirs[0], dirs[1], d}
		}, "unfinished"},
	} {
		ds := c.dirs
		if c.setup != nil {
			ds = c.setup(t)
		}
		out := filepath.Join(t.TempDir(), "m")
		_, err := Merge(out, val, ds)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
		if _, serr := os.Stat(filepath.Join(out, ResultsFile)); serr == nil {
			t.Errorf("%s: a refused merge wrote results", c.name)
		}
	}
}

func copyDir(t *testing.T, src string) string {
	dst := filepath.Join(t.TempDir(), filepath.Base(src))
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	es, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if err := os.WriteFile(filepath.Join(dst, e.Name()), readFile(t, filepath.Join(src, e.Name())), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// A run killed mid-write (some images done, the last line cut off) resumes
// and ends with the same files as an uninterrupted run.
func TestResume(t *testing.T) {
	want, _ := single(t)
	out := t.TempDir()
	o := opts(t, out)
	// Detect three images as the killed run did, then cut its last line.
	val, err := coco.ReadDataset(o.Val)
	if err != nil {
		t.Fatal(err)
	}
	fp, shard, items := fingerprintFor(t, o, val)
	progress := filepath.Join(out, ProgressFile)
	if err := detectAll(o, fp, shard, progress, []item{items[4], items[0], items[2]}, 0, len(items)); err != nil {
		t.Fatal(err)
	}
	b := readFile(t, progress)
	if err := os.WriteFile(progress, b[:len(b)-25], 0o644); err != nil {
		t.Fatal(err)
	}
	var seen []int
	o.Progress = func(done, total int) { seen = append(seen, done) }
	rep, err := Eval(o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Resumed != 2 || rep.Detected != 5 || seen[0] != 2 || seen[len(seen)-1] != 7 {
		t.Errorf("resumed %d, detected %d, progress %v", rep.Resumed, rep.Detected, seen)
	}
	sameOutputs(t, "resume", want, out)

	// A progress file from other options is refused and kept.
	out2 := t.TempDir()
	o2 := opts(t, out2)
	if err := detectAll(o2, fp, shard, filepath.Join(out2, ProgressFile), items[:1], 0, len(items)); err != nil {
		t.Fatal(err)
	}
	o2.ScoreThresh = 0.5
	if _, err := Eval(o2); err == nil || !strings.Contains(err.Error(), "score_thresh -1 vs 0.5") {
		t.Errorf("other options: %v", err)
	}
	if _, err := os.Stat(filepath.Join(out2, ProgressFile)); err != nil {
		t.Errorf("the refused run's progress file is gone: %v", err)
	}
	// A finished evaluation is not overwritten by a different one.
	o3 := opts(t, want)
	o3.NoMasks = true
	if _, err := Eval(o3); err == nil || !strings.Contains(err.Error(), "different finished evaluation (masks true vs false)") {
		t.Errorf("finished, other options: %v", err)
	}
	// Damage in the middle of the progress file is an error naming the line.
	out4 := t.TempDir()
	o4 := opts(t, out4)
	p4 := filepath.Join(out4, ProgressFile)
	if err := detectAll(o4, fp, shard, p4, items[:2], 0, len(items)); err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitAfter(string(readFile(t, p4)), "\n")
	lines[1] = `{"index": "x"}` + "\n"
	os.WriteFile(p4, []byte(strings.Join(lines, "")), 0o644)
	if _, err := Eval(o4); err == nil || !strings.Contains(err.Error(), "progress.jsonl line 2") {
		t.Errorf("damaged progress: %v", err)
	}
}

func fingerprintFor(t *testing.T, o EvalOptions, val *coco.Dataset) (Fingerprint, string, []item) {
	t.Helper()
	_, rep := single(t)
	return rep.Manifest.Fingerprint, o.Shard.String(), selectImages(val, o.Shard, o.Images)
}

// Bad input is refused before anything runs or is written.
func TestEvalBadInput(t *testing.T) {
	val, images := testData(t)
	// A dataset naming an image that is not there.
	gt, err := coco.ReadDataset(val)
	if err != nil {
		t.Fatal(err)
	}
	gt.Images[3].FileName = "missing.png"
	badVal := filepath.Join(t.TempDir(), "val.json")
	if err := coco.WriteDataset(badVal, gt); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		edit func(o *EvalOptions)
		want string
	}{
		{"missing image", func(o *EvalOptions) { o.Val = badVal }, "missing.png"},
		{"no model file", func(o *EvalOptions) { o.Model = "nope.safetensors" }, "nope.safetensors"},
		{"no val", func(o *EvalOptions) { o.Val = "" }, "--val"},
		{"bad shard", func(o *EvalOptions) { o.Shard = Shard{3, 3} }, "shard 3/3"},
		{"empty shard", func(o *EvalOptions) { o.Shard = Shard{7, 8} }, "selects no image"},
		{"score", func(o *EvalOptions) { o.ScoreThresh = 1 }, "score threshold"},
		{"images dir", func(o *EvalOptions) { o.Images = filepath.Join(images, "nope") }, "no such file"},
	} {
		out := filepath.Join(t.TempDir(), "out")
		o := opts(t, out)
		c.edit(&o)
		_, err := Eval(o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
		for _, f := range []string{ResultsFile, ManifestFile} {
			if _, serr := os.Stat(filepath.Join(out, f)); serr == nil {
				t.Errorf("%s: wrote %s", c.name, f)
			}
		}
	}
	for _, s := range []string{"1/0", "3/3", "-1/2", "a/b", "2"} {
		if _, err := ParseShard(s); err == nil {
			t.Errorf("ParseShard(%q) accepted", s)
		}
	}
	if s, err := ParseShard(" 2/16"); err != nil || s != (Shard{2, 16}) {
		t.Errorf("ParseShard: %v %v", s, err)
	}
}

// With an allocation the quantized detector is evaluated (the bundled
// model's 4-bit DP allocation keeps its AP within a few points).
func TestEvalQuantized(t *testing.T) {
	_, fp32 := single(t)
	o := opts(t, t.TempDir())
	o.Alloc = "../models/shapes-swin-t32.alloc.json"
	rep, err := Eval(o)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Manifest.Fingerprint.AllocSHA256 == "" || rep.Manifest.Fingerprint.ModelSHA256 != fp32.Manifest.Fingerprint.ModelSHA256 {
		t.Errorf("fingerprint %+v", rep.Manifest.Fingerprint)
	}
	for _, typ := range []string{"bbox", "segm"} {
		q, f := rep.Manifest.Stats[typ][0], fp32.Manifest.Stats[typ][0]
		t.Logf("%s AP: fp32 %.3f, quantized %.3f", typ, f, q)
		if q < f-0.1 || q == f && rep.Manifest.Detections == fp32.Manifest.Detections {
			t.Errorf("%s AP: quantized %.3f vs fp32 %.3f (same detections %v)", typ, q, f, rep.Manifest.Detections == fp32.Manifest.Detections)
		}
	}
	// The generated package's packed weights (the same model and
	// allocation, packed by flbq generate) detect exactly the same.
	p := opts(t, t.TempDir())
	p.Model = "../../generated/shapesswin/weights.bin"
	prep, err := Eval(p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, filepath.Join(p.Out, ResultsFile)), readFile(t, filepath.Join(o.Out, ResultsFile))) {
		t.Error("the packed model's results differ from --alloc's")
	}
	if prep.Manifest.Stats["bbox"][0] != rep.Manifest.Stats["bbox"][0] {
		t.Errorf("packed model bbox AP %v, --alloc %v", prep.Manifest.Stats["bbox"][0], rep.Manifest.Stats["bbox"][0])
	}
	o.Alloc = "../models/README.md"
	o.Out = t.TempDir()
	if _, err := Eval(o); err == nil || !strings.Contains(err.Error(), "README.md") {
		t.Errorf("bad allocation file: %v", err)
	}
}
