package solver

import (
	"encoding/json"
	"fmt"
	"math"
	"os"

	"github.com/flbq/flbq/runtime/atomicfile"
)

// AllocFormat is the value of the "format" field of alloc.json.
const AllocFormat = "flbq.alloc/v1"

// Allocation is the content of an alloc.json file.
type Allocation struct {
	// Solver names the method: "lg", "dp", "lg+fill", "uniform".
	Solver string
	// TargetBits is the average bit budget per weight.
	TargetBits float64
	// AvgBits = Σ weights·bits / Σ weights (scale and zero-point overhead
	// excluded; see Meta["overhead_bits"]).
	AvgBits float64
	// PredictedDistortion = Σ distortion_u(bits_u) from the curves.
	PredictedDistortion float64
	Units               []AllocUnit
	// Meta: lambda, iterations, floor, epsilon, seconds, and more.
	Meta map[string]any
}

// AllocUnit is one unit's identity, size and chosen bit-width.
type AllocUnit struct {
	UnitID
	Channels [2]int
	Weights  int64
	Bits     int
}

// ComputeAvgBits returns Σ weights·bits / Σ weights.
func ComputeAvgBits(units []AllocUnit) float64 {
	var wb, w float64
	for _, u := range units {
		wb += float64(u.Weights) * float64(u.Bits)
		w += float64(u.Weights)
	}
	if w == 0 {
		return 0
	}
	return wb / w
}

// BitsByUnit maps each unit to its bit-width.
func (a *Allocation) BitsByUnit() map[UnitID]int {
	m := make(map[UnitID]int, len(a.Units))
	for _, u := range a.Units {
		m[u.UnitID] = u.Bits
	}
	return m
}

type allocFile struct {
	Format              *string          `json:"format"`
	Solver              *string          `json:"solver"`
	TargetBits          *float64         `json:"target_bits"`
	AvgBits             *float64         `json:"avg_bits"`
	PredictedDistortion *float64         `json:"predicted_distortion"`
	Units               []allocUnitFile  `json:"units"`
	Meta                *json.RawMessage `json:"meta"`
}

type allocUnitFile struct {
	Layer    *string `json:"layer"`
	Group    *int    `json:"group"`
	Channels []int   `json:"channels"`
	Weights  *int64  `json:"weights"`
	Bits     *int    `json:"bits"`
}

type allocUnitWire struct {
	Layer    string `json:"layer"`
	Group    int    `json:"group"`
	Channels [2]int `json:"channels"`
	Weights  int64  `json:"weights"`
	Bits     int    `json:"bits"`
}

// ReadAllocFile reads and validates an alloc.json file.
func ReadAllocFile(path string) (*Allocation, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	a, err := ParseAlloc(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// avgBitsTolerance is how far a stored avg_bits may be from the value the
// units give (JSON round-trips float64 exactly; this only absorbs summation
// order).
const avgBitsTolerance = 1e-9

// ParseAlloc decodes and validates alloc.json content.
func ParseAlloc(data []byte) (*Allocation, error) {
	var f allocFile
	if err := decodeStrict(data, &f); err != nil {
		return nil, err
	}
	switch {
	case f.Format == nil:
		return nil, fmt.Errorf("missing field \"format\"")
	case *f.Format != AllocFormat:
		return nil, fmt.Errorf("format %q is not %q", *f.Format, AllocFormat)
	case f.Solver == nil:
		return nil, fmt.Errorf("missing field \"solver\"")
	case *f.Solver == "":
		return nil, fmt.Errorf("solver is empty")
	case f.TargetBits == nil:
		return nil, fmt.Errorf("missing field \"target_bits\"")
	case f.AvgBits == nil:
		return nil, fmt.Errorf("missing field \"avg_bits\"")
	case f.PredictedDistortion == nil:
		return nil, fmt.Errorf("missing field \"predicted_distortion\"")
	case len(f.Units) == 0:
		return nil, fmt.Errorf("units: the list is empty or missing")
	}
	if t := *f.TargetBits; !(t >= MinBits && t <= MaxBits) {
		return nil, fmt.Errorf("target_bits %v is outside %d..%d", t, MinBits, MaxBits)
	}
	if d := *f.PredictedDistortion; math.IsNaN(d) || math.IsInf(d, 0) || d < 0 {
		return nil, fmt.Errorf("predicted_distortion %v is not a finite value ≥ 0", d)
	}
	a := &Allocation{
		Solver: *f.Solver, TargetBits: *f.TargetBits, AvgBits: *f.AvgBits,
		PredictedDistortion: *f.PredictedDistortion, Units: make([]AllocUnit, len(f.Units)),
	}
	if f.Meta != nil {
		if err := json.Unmarshal(*f.Meta, &a.Meta); err != nil {
			return nil, fmt.Errorf("meta: %v", err)
		}
	}
	seen := make(map[UnitID]int, len(f.Units))
	for i, fu := range f.Units {
		label := unitLabel(fu.Layer, fu.Group)
		id, ch, w, err := unitHeader(fu.Layer, fu.Group, fu.Channels, fu.Weights)
		if err != nil {
			return nil, fmt.Errorf("units[%d]%s: %w", i, label, err)
		}
		if fu.Bits == nil {
			return nil, fmt.Errorf("units[%d]%s: missing field \"bits\"", i, label)
		}
		if b := *fu.Bits; b < MinBits || b > MaxBits {
			return nil, fmt.Errorf("units[%d]%s: bits %d is outside %d..%d", i, label, b, MinBits, MaxBits)
		}
		if j, dup := seen[id]; dup {
			return nil, fmt.Errorf("units[%d]%s: duplicate of units[%d]", i, label, j)
		}
		seen[id] = i
		a.Units[i] = AllocUnit{UnitID: id, Channels: ch, Weights: w, Bits: *fu.Bits}
	}
	if got := ComputeAvgBits(a.Units); math.Abs(got-a.AvgBits) > avgBitsTolerance*math.Max(1, got) {
		return nil, fmt.Errorf("avg_bits %v does not match the units' bits (they give %v)", a.AvgBits, got)
	}
	return a, nil
}

// WriteAllocFile validates a and writes it atomically.
func WriteAllocFile(path string, a *Allocation) error {
	data, err := MarshalAlloc(a)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return atomicfile.WriteBytes(path, data)
}

// MarshalAlloc encodes a as alloc.json, refusing content its reader rejects.
func MarshalAlloc(a *Allocation) ([]byte, error) {
	units := make([]any, len(a.Units))
	for i, u := range a.Units {
		units[i] = allocUnitWire{u.Layer, u.Group, u.Channels, u.Weights, u.Bits}
	}
	meta := a.Meta
	if meta == nil {
		meta = map[string]any{}
	}
	data, err := marshalDoc(
		"format", AllocFormat,
		"solver", a.Solver,
		"target_bits", a.TargetBits,
		"avg_bits", a.AvgBits,
		"predicted_distortion", a.PredictedDistortion,
		"units", units,
		"meta", meta)
	if err != nil {
		return nil, err
	}
	if _, err := ParseAlloc(data); err != nil {
		return nil, fmt.Errorf("refusing to write an invalid allocation: %w", err)
	}
	return data, nil
}
