package pipeline

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/flbq/flbq/runtime/coco"
)

// Merge joins the finished shards (Eval output directories) of one
// evaluation into out: it checks that they come from the same model,
// instances file and options, that their shard counts agree, that none is
// missing, repeated or damaged (each must hold exactly its shard's images,
// and results only for them), then writes the union in the dataset's image
// order and scores it — the same files and numbers as one unsharded run.
func Merge(out, val string, shardDirs []string) (*EvalReport, error) {
	if out == "" {
		return nil, errors.New("merge: no output directory (--out)")
	}
	if len(shardDirs) == 0 {
		return nil, errors.New("merge: no shard directories given")
	}
	ds, err := coco.ReadDataset(val)
	if err != nil {
		return nil, err
	}
	valSHA, err := fileSHA256(val)
	if err != nil {
		return nil, err
	}
	type shardData struct {
		dir     string
		shard   Shard
		m       *Manifest
		results map[int64][]coco.Result
	}
	var first *shardData
	byIndex := map[int]*shardData{}
	for _, dir := range shardDirs {
		mpath := filepath.Join(dir, ManifestFile)
		m, err := readManifest(mpath)
		if errors.Is(err, os.ErrNotExist) {
			if _, perr := os.Stat(filepath.Join(dir, ProgressFile)); perr == nil {
				return nil, fmt.Errorf("shard %s: unfinished (it has %s but no %s): rerun its eval to resume it", dir, ProgressFile, ManifestFile)
			}
			return nil, fmt.Errorf("shard %s: no %s", dir, ManifestFile)
		} else if err != nil {
			return nil, fmt.Errorf("shard %s: %w", dir, err)
		}
		s, err := ParseShard(m.Shard)
		if err != nil {
			return nil, fmt.Errorf("shard %s: %s: %w", dir, ManifestFile, err)
		}
		sd := &shardData{dir: dir, shard: s, m: m}
		if first == nil {
			first = sd
			if m.Fingerprint.ValSHA256 != valSHA {
				return nil, fmt.Errorf("shard %s was evaluated on another instances file than %s (val_sha256 differs)", dir, val)
			}
		} else {
			if d := first.m.Fingerprint.diff(m.Fingerprint); d != "" {
				return nil, fmt.Errorf("shard %s and shard %s come from different evaluations: %s", first.dir, dir, d)
			}
			if s.Count != first.shard.Count {
				return nil, fmt.Errorf("shard %s is %s, shard %s is %s: different shard counts", first.dir, first.m.Shard, dir, m.Shard)
			}
		}
		if prev, ok := byIndex[s.Index]; ok {
			return nil, fmt.Errorf("shards %s and %s are both shard %s", prev.dir, dir, m.Shard)
		}
		byIndex[s.Index] = sd
		// The shard holds exactly its images, in dataset order.
		want := selectImages(ds, s, "")
		if len(want) != len(m.ImageIDs) {
			return nil, fmt.Errorf("shard %s (%s): %d images, the rule selects %d from %s", dir, m.Shard, len(m.ImageIDs), len(want), val)
		}
		ids := map[int64]bool{}
		for i, it := range want {
			if m.ImageIDs[i] != it.img.ID {
				return nil, fmt.Errorf("shard %s (%s): image %d at position %d, want %d", dir, m.Shard, m.ImageIDs[i], i, it.img.ID)
			}
			ids[it.img.ID] = true
		}
		rs, err := coco.ReadResults(filepath.Join(dir, ResultsFile))
		if err != nil {
			return nil, fmt.Errorf("shard %s: %w", dir, err)
		}
		if len(rs) != m.Detections {
			return nil, fmt.Errorf("shard %s: %s holds %d detections, %s says %d", dir, ResultsFile, len(rs), ManifestFile, m.Detections)
		}
		sd.results = map[int64][]coco.Result{}
		for i, r := range rs {
			if !ids[r.ImageID] {
				return nil, fmt.Errorf("shard %s: %s[%d] is for image %d, not one of the shard's", dir, ResultsFile, i, r.ImageID)
			}
			sd.results[r.ImageID] = append(sd.results[r.ImageID], r)
		}
	}
	n := first.shard.Count
	for i := 0; i < n; i++ {
		if _, ok := byIndex[i]; !ok {
			return nil, fmt.Errorf("shard %d/%d is missing (got %d of %d shards)", i, n, len(byIndex), n)
		}
	}
	var results []coco.Result
	ids := make([]int64, len(ds.Images))
	for k, im := range ds.Images {
		ids[k] = im.ID
		results = append(results, byIndex[k%n].results[im.ID]...)
	}
	fp := first.m.Fingerprint
	m := &Manifest{Format: manifestFormat, Fingerprint: fp, Shard: Shard{}.String(), ImageIDs: ids, Detections: len(results)}
	evals, err := evaluate(ds, results, fp.Masks)
	if err != nil {
		return nil, err
	}
	m.Stats = stats(evals)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, fmt.Errorf("--out: %w", err)
	}
	if err := writeOutputs(out, results, m); err != nil {
		return nil, err
	}
	return &EvalReport{Manifest: m, Evals: evals}, nil
}
