// Package safetensors reads and writes the safetensors format
// (https://github.com/huggingface/safetensors): an 8-byte little-endian
// header length, a JSON header mapping tensor names to
// {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
// byte buffer that follows the header) plus an optional "__metadata__"
// string map, then the raw little-endian tensor bytes.
//
// Parse validates the whole header before any tensor memory is allocated:
// header length bounds, known dtypes, non-negative shapes whose element
// count stays below MaxElements, byte sizes that agree with dtype×shape,
// offsets that lie inside the buffer, do not overlap and leave no holes,
// and no duplicate names. Every error names the offending tensor.
//
// Float tensors stored as F32, F16 or BF16 are returned as float32
// (Float32); integer buffers such as Swin's relative_position_index are
// returned by Int64. Write produces files atomically through
// runtime/atomicfile. flbq keeps its model configuration as JSON under the
// metadata key ConfigKey ("flbq.config").
package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/flbq/flbq/runtime/atomicfile"
)

// ConfigKey is the __metadata__ key under which flbq stores a model's JSON configuration.
const ConfigKey = "flbq.config"

// Limits applied by Parse.
const (
	MaxHeaderBytes = 100 << 20 // as the reference implementation
	MaxElements    = 1 << 34   // per tensor; larger shapes are rejected as absurd
	MaxRank        = 8
)

// DType is a safetensors element type name ("F32", "F16", "BF16", "I64", ...).
type DType string

// Known element types.
const (
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	F64  DType = "F64"
	I64  DType = "I64"
	I32  DType = "I32"
	I16  DType = "I16"
	I8   DType = "I8"
	U8   DType = "U8"
	Bool DType = "BOOL"
)

var dtypeSize = map[DType]int64{F32: 4, F16: 2, BF16: 2, F64: 8, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, Bool: 1}

// Size returns the element size in bytes (0 for an unknown dtype).
func (d DType) Size() int64 { return dtypeSize[d] }

// IsFloat reports whether Float32 can convert tensors of this dtype.
func (d DType) IsFloat() bool { return d == F32 || d == F16 || d == BF16 || d == F64 }

// IsInt reports whether Int64 can convert tensors of this dtype.
func (d DType) IsInt() bool {
	return d == I64 || d == I32 || d == I16 || d == I8 || d == U8 || d == Bool
}

// Info describes one tensor of a file.
type Info struct {
	Name  string
	DType DType
	Shape []int
	Begin int64 // offsets in the data buffer
	End   int64
}

// Numel is the number of elements.
func (t Info) Numel() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// File is a parsed safetensors file held in memory.
type File struct {
	Metadata map[string]string
	infos    map[string]*Info
	names    []string // sorted
	data     []byte
}

// Open reads and parses the file at path.
func Open(path string) (*File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return nil, fmt.Errorf("%s: is a directory", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// Parse validates buf as a safetensors file. The returned File references
// buf (no copy).
func Parse(buf []byte) (*File, error) {
	if len(buf) < 8 {
		return nil, fmt.Errorf("safetensors: truncated file (%d bytes, need at least 8)", len(buf))
	}
	n := binary.LittleEndian.Uint64(buf[:8])
	if n < 2 {
		return nil, fmt.Errorf("safetensors: header length %d too small", n)
	}
	if n > MaxHeaderBytes {
		return nil, fmt.Errorf("safetensors: header length %d exceeds the %d-byte limit", n, MaxHeaderBytes)
	}
	if n > uint64(len(buf)-8) {
		return nil, fmt.Errorf("safetensors: truncated file: header length %d but only %d bytes follow", n, len(buf)-8)
	}
	header := buf[8 : 8+n]
	data := buf[8+n:]
	raw, err := decodeObject(header)
	if err != nil {
		return nil, fmt.Errorf("safetensors: header: %w", err)
	}
	f := &File{infos: map[string]*Info{}, data: data}
	for _, kv := range raw {
		if kv.key == "__metadata__" {
			md := map[string]string{}
			if err := json.Unmarshal(kv.val, &md); err != nil {
				return nil, fmt.Errorf("safetensors: __metadata__ must map strings to strings: %v", err)
			}
			f.Metadata = md
			continue
		}
		info, err := parseInfo(kv.key, kv.val)
		if err != nil {
			return nil, err
		}
		f.infos[kv.key] = info
		f.names = append(f.names, kv.key)
	}
	sort.Strings(f.names)
	// Offsets: inside the buffer, no overlap, no holes.
	byBegin := make([]*Info, 0, len(f.names))
	for _, name := range f.names {
		info := f.infos[name]
		if info.End > int64(len(data)) {
			return nil, fmt.Errorf("safetensors: tensor %q: data_offsets [%d, %d] run past the end of the %d-byte data buffer (truncated file?)", name, info.Begin, info.End, len(data))
		}
		byBegin = append(byBegin, info)
	}
	sort.SliceStable(byBegin, func(i, j int) bool {
		if byBegin[i].Begin != byBegin[j].Begin {
			return byBegin[i].Begin < byBegin[j].Begin
		}
		return byBegin[i].End < byBegin[j].End
	})
	var pos int64
	var prev string
	for _, info := range byBegin {
		if info.Begin < pos {
			return nil, fmt.Errorf("safetensors: tensor %q: data_offsets [%d, %d] overlap tensor %q (which ends at %d)", info.Name, info.Begin, info.End, prev, pos)
		}
		if info.Begin > pos {
			return nil, fmt.Errorf("safetensors: tensor %q: data_offsets start at %d, leaving a hole after byte %d", info.Name, info.Begin, pos)
		}
		pos = info.End
		prev = info.Name
	}
	if pos != int64(len(data)) {
		return nil, fmt.Errorf("safetensors: %d trailing bytes after the last tensor", int64(len(data))-pos)
	}
	return f, nil
}

type rawKV struct {
	key string
	val json.RawMessage
}

// decodeObject decodes a JSON object keeping key order and rejecting duplicates.
func decodeObject(b []byte) ([]rawKV, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("not a JSON object")
	}
	seen := map[string]bool{}
	var out []rawKV
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		key, ok := tok.(string)
		if !ok {
			return nil, errors.New("object key is not a string")
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("entry %q: %v", key, err)
		}
		if seen[key] {
			return nil, fmt.Errorf("duplicate entry %q", key)
		}
		seen[key] = true
		out = append(out, rawKV{key, v})
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	// Only whitespace (the spec pads with spaces) may follow.
	rest, _ := io.ReadAll(dec.Buffered())
	if len(strings.TrimRight(string(rest), " \t\r\n\x00")) != 0 {
		return nil, errors.New("trailing data after the JSON object")
	}
	return out, nil
}

func parseInfo(name string, raw json.RawMessage) (*Info, error) {
	var h struct {
		DType   *string        `json:"dtype"`
		Shape   *[]json.Number `json:"shape"`
		Offsets *[]json.Number `json:"data_offsets"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("safetensors: tensor %q: bad header entry: %v", name, err)
	}
	if h.DType == nil || h.Shape == nil || h.Offsets == nil {
		return nil, fmt.Errorf("safetensors: tensor %q: header entry needs dtype, shape and data_offsets", name)
	}
	dt := DType(*h.DType)
	if dt.Size() == 0 {
		return nil, fmt.Errorf("safetensors: tensor %q: unsupported dtype %q", name, *h.DType)
	}
	if len(*h.Shape) > MaxRank {
		return nil, fmt.Errorf("safetensors: tensor %q: rank %d exceeds %d", name, len(*h.Shape), MaxRank)
	}
	info := &Info{Name: name, DType: dt, Shape: make([]int, len(*h.Shape))}
	numel := int64(1)
	for i, d := range *h.Shape {
		v, err := strconv.ParseInt(string(d), 10, 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("safetensors: tensor %q: bad dimension %s in shape", name, d)
		}
		if v > MaxElements || (v > 0 && numel > MaxElements/v) {
			return nil, fmt.Errorf("safetensors: tensor %q: absurd shape %v (more than %d elements)", name, *h.Shape, int64(MaxElements))
		}
		numel *= v
		info.Shape[i] = int(v)
	}
	if len(*h.Offsets) != 2 {
		return nil, fmt.Errorf("safetensors: tensor %q: data_offsets must have two entries", name)
	}
	var off [2]int64
	for i, o := range *h.Offsets {
		v, err := strconv.ParseInt(string(o), 10, 64)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("safetensors: tensor %q: bad data offset %s", name, o)
		}
		off[i] = v
	}
	if off[1] < off[0] {
		return nil, fmt.Errorf("safetensors: tensor %q: data_offsets [%d, %d] end before they begin", name, off[0], off[1])
	}
	if want := numel * dt.Size(); off[1]-off[0] != want {
		return nil, fmt.Errorf("safetensors: tensor %q: %s%v needs %d bytes but data_offsets [%d, %d] hold %d", name, dt, info.Shape, want, off[0], off[1], off[1]-off[0])
	}
	info.Begin, info.End = off[0], off[1]
	return info, nil
}

// Names returns the tensor names in sorted order.
func (f *File) Names() []string { return append([]string(nil), f.names...) }

// Info returns a tensor's description.
func (f *File) Info(name string) (Info, bool) {
	i, ok := f.infos[name]
	if !ok {
		return Info{}, false
	}
	return *i, true
}

// Raw returns a tensor's bytes (a view into the file).
func (f *File) Raw(name string) ([]byte, error) {
	i, ok := f.infos[name]
	if !ok {
		return nil, fmt.Errorf("tensor %q: missing", name)
	}
	return f.data[i.Begin:i.End], nil
}

// Float32 converts a floating-point tensor (F32, F16, BF16, F64) to float32.
func (f *File) Float32(name string) ([]float32, []int, error) {
	i, ok := f.infos[name]
	if !ok {
		return nil, nil, fmt.Errorf("tensor %q: missing", name)
	}
	if !i.DType.IsFloat() {
		return nil, nil, fmt.Errorf("tensor %q: dtype %s, want a floating-point type (F32, F16, BF16)", name, i.DType)
	}
	b := f.data[i.Begin:i.End]
	n := i.Numel()
	out := make([]float32, n)
	switch i.DType {
	case F32:
		for k := range out {
			out[k] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*k:]))
		}
	case F64:
		for k := range out {
			out[k] = float32(math.Float64frombits(binary.LittleEndian.Uint64(b[8*k:])))
		}
	case F16:
		for k := range out {
			out[k] = HalfToFloat32(binary.LittleEndian.Uint16(b[2*k:]))
		}
	case BF16:
		for k := range out {
			out[k] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*k:])) << 16)
		}
	}
	return out, append([]int(nil), i.Shape...), nil
}

// Int64 converts an integer tensor to int64.
func (f *File) Int64(name string) ([]int64, []int, error) {
	i, ok := f.infos[name]
	if !ok {
		return nil, nil, fmt.Errorf("tensor %q: missing", name)
	}
	if !i.DType.IsInt() {
		return nil, nil, fmt.Errorf("tensor %q: dtype %s, want an integer type", name, i.DType)
	}
	b := f.data[i.Begin:i.End]
	out := make([]int64, i.Numel())
	for k := range out {
		switch i.DType {
		case I64:
			out[k] = int64(binary.LittleEndian.Uint64(b[8*k:]))
		case I32:
			out[k] = int64(int32(binary.LittleEndian.Uint32(b[4*k:])))
		case I16:
			out[k] = int64(int16(binary.LittleEndian.Uint16(b[2*k:])))
		case I8:
			out[k] = int64(int8(b[k]))
		case U8, Bool:
			out[k] = int64(b[k])
		}
	}
	return out, append([]int(nil), i.Shape...), nil
}

// HalfToFloat32 converts an IEEE 754 binary16 value.
func HalfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // inf/nan
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		// subnormal: normalise
		e := uint32(127 - 15 + 1)
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		mant &= 0x3ff
		return math.Float32frombits(sign | e<<23 | mant<<13)
	default:
		return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
	}
}

// Tensor is one entry to write.
type Tensor struct {
	Name  string
	DType DType // F32 or I64 (default F32), or any dtype with Raw
	Shape []int
	F32   []float32
	I64   []int64
	// Raw, when not nil, is the little-endian data of any dtype, written as is.
	Raw []byte
}

// Encode serialises tensors (sorted by name) and metadata.
func Encode(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	ts := append([]Tensor(nil), tensors...)
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	var hdr bytes.Buffer
	hdr.WriteByte('{')
	first := true
	if len(metadata) > 0 {
		mb, err := json.Marshal(metadata) // map keys are sorted
		if err != nil {
			return err
		}
		hdr.WriteString(`"__metadata__":`)
		hdr.Write(mb)
		first = false
	}
	var off int64
	seen := map[string]bool{}
	for i := range ts {
		t := &ts[i]
		if t.DType == "" {
			t.DType = F32
		}
		if seen[t.Name] || t.Name == "__metadata__" || t.Name == "" {
			return fmt.Errorf("safetensors: tensor %q: duplicate or reserved name", t.Name)
		}
		seen[t.Name] = true
		n := 1
		for _, d := range t.Shape {
			if d < 0 {
				return fmt.Errorf("safetensors: tensor %q: negative dimension", t.Name)
			}
			n *= d
		}
		var have int
		switch {
		case t.Raw != nil:
			if t.DType.Size() == 0 {
				return fmt.Errorf("safetensors: tensor %q: unknown dtype %q", t.Name, t.DType)
			}
			if int64(len(t.Raw))%t.DType.Size() != 0 {
				return fmt.Errorf("safetensors: tensor %q: %d raw bytes are not whole %s elements", t.Name, len(t.Raw), t.DType)
			}
			have = int(int64(len(t.Raw)) / t.DType.Size())
		case t.DType == F32:
			have = len(t.F32)
		case t.DType == I64:
			have = len(t.I64)
		default:
			return fmt.Errorf("safetensors: tensor %q: writer supports F32 and I64 (other dtypes through Raw), not %s", t.Name, t.DType)
		}
		if have != n {
			return fmt.Errorf("safetensors: tensor %q: shape %v has %d elements, data has %d", t.Name, t.Shape, n, have)
		}
		if !first {
			hdr.WriteByte(',')
		}
		first = false
		nb, _ := json.Marshal(t.Name)
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		sb, _ := json.Marshal(shape)
		size := int64(n) * t.DType.Size()
		fmt.Fprintf(&hdr, `%s:{"dtype":"%s","shape":%s,"data_offsets":[%d,%d]}`, nb, t.DType, sb, off, off+size)
		off += size
	}
	hdr.WriteByte('}')
	for hdr.Len()%8 != 0 {
		hdr.WriteByte(' ')
	}
	var lb [8]byte
	binary.LittleEndian.PutUint64(lb[:], uint64(hdr.Len()))
	if _, err := w.Write(lb[:]); err != nil {
		return err
	}
	if _, err := w.Write(hdr.Bytes()); err != nil {
		return err
	}
	buf := make([]byte, 0, 1<<16)
	for _, t := range ts {
		switch {
		case t.Raw != nil:
			if _, err := w.Write(buf); err != nil {
				return err
			}
			buf = buf[:0]
			if _, err := w.Write(t.Raw); err != nil {
				return err
			}
		case t.DType == F32:
			for _, v := range t.F32 {
				buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
				if len(buf) >= 1<<16-8 {
					if _, err := w.Write(buf); err != nil {
						return err
					}
					buf = buf[:0]
				}
			}
		case t.DType == I64:
			for _, v := range t.I64 {
				buf = binary.LittleEndian.AppendUint64(buf, uint64(v))
				if len(buf) >= 1<<16-8 {
					if _, err := w.Write(buf); err != nil {
						return err
					}
					buf = buf[:0]
				}
			}
		}
	}
	_, err := w.Write(buf)
	return err
}

// Write writes tensors and metadata to path atomically.
func Write(path string, tensors []Tensor, metadata map[string]string) error {
	return atomicfile.Write(path, func(w io.Writer) error { return Encode(w, tensors, metadata) })
}
