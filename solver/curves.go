package solver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"

	"github.com/flbq/flbq/runtime/atomicfile"
)

// CurvesFormat is the value of the "format" field of curves.json.
const CurvesFormat = "flbq.curves/v1"

// MinBits and MaxBits bound every bit-width a unit can take.
const (
	MinBits = 1
	MaxBits = 8
)

// Curves is the content of a curves.json file.
type Curves struct {
	// Bits lists the measured bit-widths, strictly increasing within 1..8.
	Bits []int
	// Units holds one error curve per quantization unit.
	Units []CurveUnit
	// Meta is free-form provenance: model, calibration images and seed,
	// group size, distortion definition, timings.
	Meta map[string]any
}

// UnitID identifies a quantization unit: a channel group of a layer.
type UnitID struct {
	Layer string `json:"layer"`
	Group int    `json:"group"`
}

func (id UnitID) String() string { return fmt.Sprintf("%s#%d", id.Layer, id.Group) }

// CurveUnit is one unit's identity, size and error curve.
type CurveUnit struct {
	UnitID
	// Channels is the half-open output-channel range [lo, hi) of the group.
	Channels [2]int
	// Weights is the number of weights in the unit.
	Weights int64
	// Distortion has one entry per Curves.Bits entry.
	Distortion []float64
}

// Lookup returns the unit's distortion at b bits and whether b was measured.
func (c *Curves) Lookup(u int, b int) (float64, bool) {
	for i, cb := range c.Bits {
		if cb == b {
			return c.Units[u].Distortion[i], true
		}
	}
	return 0, false
}

// TotalWeights is Σ weights over all units.
func (c *Curves) TotalWeights() int64 {
	var n int64
	for _, u := range c.Units {
		n += u.Weights
	}
	return n
}

// curvesFile is the wire form; pointers tell a missing field from a zero.
type curvesFile struct {
	Format *string          `json:"format"`
	Bits   []int            `json:"bits"`
	Units  []curveUnitFile  `json:"units"`
	Meta   *json.RawMessage `json:"meta"`
}

type curveUnitFile struct {
	Layer      *string   `json:"layer"`
	Group      *int      `json:"group"`
	Channels   []int     `json:"channels"`
	Weights    *int64    `json:"weights"`
	Distortion []float64 `json:"distortion"`
}

// ReadCurvesFile reads and validates a curves.json file.
func ReadCurvesFile(path string) (*Curves, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseCurves(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseCurves decodes and validates curves.json content.
func ParseCurves(data []byte) (*Curves, error) {
	var f curvesFile
	if err := decodeStrict(data, &f); err != nil {
		return nil, err
	}
	if f.Format == nil {
		return nil, fmt.Errorf("missing field \"format\"")
	}
	if *f.Format != CurvesFormat {
		return nil, fmt.Errorf("format %q is not %q", *f.Format, CurvesFormat)
	}
	if err := validateBits(f.Bits); err != nil {
		return nil, err
	}
	if len(f.Units) == 0 {
		return nil, fmt.Errorf("units: the list is empty or missing")
	}
	c := &Curves{Bits: f.Bits, Units: make([]CurveUnit, len(f.Units))}
	if f.Meta != nil {
		if err := json.Unmarshal(*f.Meta, &c.Meta); err != nil {
			return nil, fmt.Errorf("meta: %v", err)
		}
	}
	seen := make(map[UnitID]int, len(f.Units))
	for i, fu := range f.Units {
		u, err := fu.unit()
		if err != nil {
			return nil, fmt.Errorf("units[%d]%s: %w", i, fu.label(), err)
		}
		if len(u.Distortion) != len(f.Bits) {
			return nil, fmt.Errorf("units[%d]%s: distortion has %d entries, bits has %d", i, fu.label(), len(u.Distortion), len(f.Bits))
		}
		for j, d := range u.Distortion {
			if math.IsNaN(d) || math.IsInf(d, 0) || d < 0 {
				return nil, fmt.Errorf("units[%d]%s: distortion[%d] (bits %d) is %v; want a finite value ≥ 0", i, fu.label(), j, f.Bits[j], d)
			}
		}
		if j, dup := seen[u.UnitID]; dup {
			return nil, fmt.Errorf("units[%d]%s: duplicate of units[%d]", i, fu.label(), j)
		}
		seen[u.UnitID] = i
		c.Units[i] = u
	}
	return c, nil
}

func (fu *curveUnitFile) label() string { return unitLabel(fu.Layer, fu.Group) }

func unitLabel(layer *string, group *int) string {
	switch {
	case layer != nil && group != nil:
		return fmt.Sprintf(" (layer %q group %d)", *layer, *group)
	case layer != nil:
		return fmt.Sprintf(" (layer %q)", *layer)
	}
	return ""
}

func (fu *curveUnitFile) unit() (CurveUnit, error) {
	id, ch, w, err := unitHeader(fu.Layer, fu.Group, fu.Channels, fu.Weights)
	if err != nil {
		return CurveUnit{}, err
	}
	if fu.Distortion == nil {
		return CurveUnit{}, fmt.Errorf("missing field \"distortion\"")
	}
	return CurveUnit{UnitID: id, Channels: ch, Weights: w, Distortion: fu.Distortion}, nil
}

// unitHeader validates the fields curves and allocations share.
func unitHeader(layer *string, group *int, channels []int, weights *int64) (UnitID, [2]int, int64, error) {
	switch {
	case layer == nil:
		return UnitID{}, [2]int{}, 0, fmt.Errorf("missing field \"layer\"")
	case *layer == "":
		return UnitID{}, [2]int{}, 0, fmt.Errorf("layer is empty")
	case group == nil:
		return UnitID{}, [2]int{}, 0, fmt.Errorf("missing field \"group\"")
	case *group < 0:
		return UnitID{}, [2]int{}, 0, fmt.Errorf("group %d is negative", *group)
	case channels == nil:
		return UnitID{}, [2]int{}, 0, fmt.Errorf("missing field \"channels\"")
	case len(channels) != 2:
		return UnitID{}, [2]int{}, 0, fmt.Errorf("channels has %d entries; want [lo, hi]", len(channels))
	case channels[0] < 0 || channels[1] <= channels[0]:
		return UnitID{}, [2]int{}, 0, fmt.Errorf("channels [%d, %d] is not a non-empty range [lo, hi) with lo ≥ 0", channels[0], channels[1])
	case weights == nil:
		return UnitID{}, [2]int{}, 0, fmt.Errorf("missing field \"weights\"")
	case *weights <= 0:
		return UnitID{}, [2]int{}, 0, fmt.Errorf("weights %d is not positive", *weights)
	case *weights%int64(channels[1]-channels[0]) != 0:
		return UnitID{}, [2]int{}, 0, fmt.Errorf("weights %d is not a multiple of the %d channels", *weights, channels[1]-channels[0])
	}
	return UnitID{Layer: *layer, Group: *group}, [2]int{channels[0], channels[1]}, *weights, nil
}

func validateBits(bits []int) error {
	if len(bits) == 0 {
		return fmt.Errorf("bits: the list is empty or missing")
	}
	for i, b := range bits {
		if b < MinBits || b > MaxBits {
			return fmt.Errorf("bits[%d] = %d is outside %d..%d", i, b, MinBits, MaxBits)
		}
		if i > 0 && b <= bits[i-1] {
			return fmt.Errorf("bits[%d] = %d: bits must be strictly increasing", i, b)
		}
	}
	return nil
}

// decodeStrict decodes one JSON value, rejecting unknown fields and trailing
// data, and reports syntax errors with a line and column.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("trailing data after the JSON value")
	}
	return nil
}

func jsonError(data []byte, err error) error {
	var off int64 = -1
	switch e := err.(type) {
	case *json.SyntaxError:
		off = e.Offset
	case *json.UnmarshalTypeError:
		off = e.Offset
		if e.Field != "" {
			err = fmt.Errorf("field %q: cannot use %s as %s", e.Field, e.Value, e.Type)
		}
	}
	if err == io.EOF {
		return fmt.Errorf("empty file")
	}
	if off < 0 || off > int64(len(data)) {
		return err
	}
	line, col := 1, 1
	for _, ch := range data[:off] {
		if ch == '\n' {
			line++
			col = 1
		} else {
			col++
		}
	}
	return fmt.Errorf("line %d col %d: %v", line, col, err)
}

// WriteCurvesFile validates c and writes it atomically.
func WriteCurvesFile(path string, c *Curves) error {
	data, err := MarshalCurves(c)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return atomicfile.WriteBytes(path, data)
}

// MarshalCurves encodes c as curves.json after checking that it would read
// back: a writer never produces a file its reader rejects.
func MarshalCurves(c *Curves) ([]byte, error) {
	units := make([]any, len(c.Units))
	for i, u := range c.Units {
		units[i] = curveUnitWire{u.Layer, u.Group, u.Channels, u.Weights, u.Distortion}
	}
	meta := c.Meta
	if meta == nil {
		meta = map[string]any{}
	}
	data, err := marshalDoc("format", CurvesFormat, "bits", c.Bits, "units", units, "meta", meta)
	if err != nil {
		return nil, err
	}
	if _, err := ParseCurves(data); err != nil {
		return nil, fmt.Errorf("refusing to write invalid curves: %w", err)
	}
	return data, nil
}

type curveUnitWire struct {
	Layer      string    `json:"layer"`
	Group      int       `json:"group"`
	Channels   [2]int    `json:"channels"`
	Weights    int64     `json:"weights"`
	Distortion []float64 `json:"distortion"`
}

// marshalDoc writes a document with one top-level field per line and one
// list element (unit) per line: readable, diffable and compact. fields are
// name/value pairs in output order; a []any value is written as a list.
func marshalDoc(fields ...any) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("{\n")
	for i := 0; i < len(fields); i += 2 {
		name, val := fields[i].(string), fields[i+1]
		fmt.Fprintf(&buf, " %q: ", name)
		if list, ok := val.([]any); ok {
			buf.WriteString("[\n")
			for j, el := range list {
				b, err := marshalCompact(el)
				if err != nil {
					return nil, fmt.Errorf("%s[%d]: %w", name, j, err)
				}
				buf.WriteString("  ")
				buf.Write(b)
				if j < len(list)-1 {
					buf.WriteByte(',')
				}
				buf.WriteByte('\n')
			}
			buf.WriteString(" ]")
		} else {
			b, err := marshalCompact(val)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			buf.Write(b)
		}
		if i < len(fields)-2 {
			buf.WriteByte(',')
		}
		buf.WriteByte('\n')
	}
	buf.WriteString("}\n")
	return buf.Bytes(), nil
}

func marshalCompact(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
