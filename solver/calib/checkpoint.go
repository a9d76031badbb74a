package calib

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/flbq/flbq/runtime/atomicfile"
)

// CheckpointFormat is the "format" of a calibration checkpoint file.
const CheckpointFormat = "flbq.calib-checkpoint/v1"

// A checkpoint file is
//
//	{"format": "flbq.calib-checkpoint/v1", "sha256": "<hex>", "payload": {...}}
//
// where sha256 is the digest of the payload's bytes as written, and the
// payload holds the run's fingerprint (every argument that changes the
// result, and the model file's digest) and its State.
type checkpointFile struct {
	Format  string          `json:"format"`
	SHA256  string          `json:"sha256"`
	Payload json.RawMessage `json:"payload"`
}

type checkpointPayload struct {
	Fingerprint map[string]string `json:"fingerprint"`
	State       *State            `json:"state"`
}

// ErrCorruptCheckpoint is wrapped by ReadCheckpoint for damaged files.
var ErrCorruptCheckpoint = errors.New("corrupted checkpoint")

// ErrCheckpointMismatch is wrapped by ReadCheckpoint when the checkpoint
// was made by a run with different arguments.
var ErrCheckpointMismatch = errors.New("checkpoint from a different run")

// WriteCheckpoint writes st with the run's fingerprint atomically.
func WriteCheckpoint(path string, fp map[string]string, st *State) error {
	payload, err := json.Marshal(checkpointPayload{Fingerprint: fp, State: st})
	if err != nil {
		return err
	}
	sum := sha256.Sum256(payload)
	data, err := json.Marshal(checkpointFile{Format: CheckpointFormat, SHA256: hex.EncodeToString(sum[:]), Payload: payload})
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(path, data)
}

// ReadCheckpoint reads a checkpoint and returns its state if its
// fingerprint equals fp. A file that does not exist returns (nil, nil).
// Damaged files and checkpoints of other runs are refused with an error
// saying what differs.
func ReadCheckpoint(path string, fp map[string]string) (*State, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	corrupt := func(why string) error {
		return fmt.Errorf("checkpoint %s: %w (%s); delete it to start over", path, ErrCorruptCheckpoint, why)
	}
	var f checkpointFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, corrupt(err.Error())
	}
	if f.Format != CheckpointFormat {
		return nil, corrupt(fmt.Sprintf("format %q, want %q", f.Format, CheckpointFormat))
	}
	sum := sha256.Sum256(f.Payload)
	if hex.EncodeToString(sum[:]) != f.SHA256 {
		return nil, corrupt("checksum mismatch")
	}
	var p checkpointPayload
	if err := json.Unmarshal(f.Payload, &p); err != nil || p.State == nil || p.State.Done == nil || p.State.Acc == nil {
		return nil, corrupt("bad payload")
	}
	var diffs []string
	keys := map[string]bool{}
	for k := range fp {
		keys[k] = true
	}
	for k := range p.Fingerprint {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	sort.Strings(sorted)
	for _, k := range sorted {
		if fp[k] != p.Fingerprint[k] {
			a, b := p.Fingerprint[k], fp[k]
			if len(a) > 40 {
				a = a[:37] + "..."
			}
			if len(b) > 40 {
				b = b[:37] + "..."
			}
			diffs = append(diffs, fmt.Sprintf("%s: %q in the checkpoint, %q now", k, a, b))
		}
	}
	if len(diffs) > 0 {
		return nil, fmt.Errorf("checkpoint %s: %w (%s); rerun with the same arguments to resume, or delete it (or pass another --checkpoint) to start over", path, ErrCheckpointMismatch, strings.Join(diffs, "; "))
	}
	return p.State, nil
}
