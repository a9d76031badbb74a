// Package torchckpt reads the tensors of a PyTorch checkpoint (torch.save of
// a state dict, or of a dict holding one under "state_dict" or "model") and
// of a detectron2 .pkl checkpoint (a pickled dict of NumPy arrays under
// "model") in Go, without Python, and without executing anything the file
// says.
//
// Both of torch.save's formats are read: the zip format (a data.pkl pickle
// plus one record per storage, under a folder named after the file's stem,
// "archive", or anything else: the folder is found, not assumed) and the
// legacy format (magic number, protocol, system info, the pickle, the
// storage keys, then each storage's element count and bytes), which
// mmdetection's published checkpoints use.
//
// The pickles are decoded by github.com/nlpodyssey/gopickle, which
// interprets the opcodes as data and calls nothing. On top of that, a
// pickle may only name the classes a state dict needs (AllowedClasses):
// any other class — os.system, builtins.eval, numpy, a module's own
// classes — fails the read, naming the class. Every size the file states
// is checked against the bytes it has before anything is allocated, and a
// panic inside the decoder on malformed input becomes an error.
package torchckpt

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/nlpodyssey/gopickle/pickle"
	"github.com/nlpodyssey/gopickle/types"

	"github.com/flbq/flbq/runtime/safetensors"
)

// storageDTypes maps torch's legacy storage classes (how every storage is
// named in a pickle) to their element type.
var storageDTypes = map[string]safetensors.DType{
	"FloatStorage": safetensors.F32, "HalfStorage": safetensors.F16, "BFloat16Storage": safetensors.BF16, "DoubleStorage": safetensors.F64,
	"LongStorage": safetensors.I64, "IntStorage": safetensors.I32, "ShortStorage": safetensors.I16, "CharStorage": safetensors.I8,
	"ByteStorage": safetensors.U8, "BoolStorage": safetensors.Bool,
}

// size returns the bytes per element of d.
func size(d safetensors.DType) int { return int(d.Size()) }

// AllowedClasses lists every class a checkpoint's pickles may name: tensor
// and parameter rebuilding, the typed storages, OrderedDict, torch's
// historical THNN backend marker, and NumPy's array reconstruction (for
// detectron2's .pkl files; numeric dtypes only). (copy_reg._reconstructor and object, which
// gopickle resolves itself, only build inert objects.)
func AllowedClasses() []string {
	cs := []string{"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
		"torch.nn.backends.thnn._get_thnn_function_backend"}
	for s := range storageDTypes {
		cs = append(cs, "torch."+s)
	}
	for c := range numpyClasses {
		cs = append(cs, c)
	}
	sort.Strings(cs)
	return cs
}

// Tensor is one named tensor of the state dict.
type Tensor struct {
	Name  string
	DType safetensors.DType
	Shape []int
	// Raw holds the elements contiguously in row-major order, little endian.
	Raw []byte
}

// Elems returns the number of elements.
func (t *Tensor) Elems() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Float32 returns the values as float32 (floating-point and integer types;
// integers beyond 2^24 lose precision).
func (t *Tensor) Float32() []float32 {
	n := t.Elems()
	out := make([]float32, n)
	r := t.Raw
	for i := range out {
		switch t.DType {
		case safetensors.F32:
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(r[4*i:]))
		case safetensors.F64:
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(r[8*i:])))
		case safetensors.F16:
			out[i] = safetensors.HalfToFloat32(binary.LittleEndian.Uint16(r[2*i:]))
		case safetensors.BF16:
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(r[2*i:])) << 16)
		case safetensors.I64:
			out[i] = float32(int64(binary.LittleEndian.Uint64(r[8*i:])))
		case safetensors.I32:
			out[i] = float32(int32(binary.LittleEndian.Uint32(r[4*i:])))
		case safetensors.I16:
			out[i] = float32(int16(binary.LittleEndian.Uint16(r[2*i:])))
		case safetensors.I8:
			out[i] = float32(int8(r[i]))
		default: // U8, BOOL
			out[i] = float32(r[i])
		}
	}
	return out
}

// Checkpoint is what Read returns.
type Checkpoint struct {
	// Root is where the state dict was found: "state_dict", "model" or ""
	// (the top level).
	Root string
	// Tensors in the file's order.
	Tensors []*Tensor
	// Format is "zip", "legacy" (torch.save's formats) or "pickle" (one
	// pickle of NumPy arrays, as detectron2 writes .pkl checkpoints).
	Format string
	// Classes are the class names of meta["CLASSES"] (mmdetection's
	// checkpoints record them there), nil when the file has none.
	Classes []string
}

// Lookup returns the tensor named name.
func (c *Checkpoint) Lookup(name string) (*Tensor, bool) {
	for _, t := range c.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return nil, false
}

// Read reads the state dict of the checkpoint at path. Errors name the file
// and, where one is at fault, the key, class or record.
func Read(path string) (*Checkpoint, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Decode reads a checkpoint held in memory (see Read).
func Decode(b []byte) (c *Checkpoint, err error) {
	defer func() {
		if r := recover(); r != nil { // gopickle on malformed input
			c, err = nil, fmt.Errorf("malformed pickle: %v", r)
		}
	}()
	var obj any
	format := "legacy"
	switch {
	case len(b) >= 4 && string(b[:4]) == "PK\x03\x04":
		format = "zip"
		obj, err = decodeZip(b)
	case isPlainPickle(b):
		format = "pickle"
		obj, err = decodePickle(b)
	default:
		obj, err = decodeLegacy(b)
	}
	if err != nil {
		return nil, err
	}
	root, entries, err := findStateDict(obj)
	if err != nil {
		return nil, err
	}
	c = &Checkpoint{Root: root, Format: format, Classes: metaClasses(obj)}
	prefix := ""
	if root != "" {
		prefix = root + "."
	}
	for _, e := range entries {
		var t *Tensor
		var err error
		switch v := e.value.(type) {
		case *tensorRef:
			t, err = materialize(v)
		case *ndarray:
			t, err = v.tensor()
		default:
			return nil, fmt.Errorf("state dict key %q: a %s, not a tensor", prefix+e.key, typeName(e.value))
		}
		if err != nil {
			return nil, fmt.Errorf("state dict key %q: %w", prefix+e.key, err)
		}
		t.Name = e.key
		c.Tensors = append(c.Tensors, t)
	}
	if len(c.Tensors) == 0 {
		return nil, errors.New("the state dict holds no tensors")
	}
	return c, nil
}

// storageRef is a storage named by a pickle: its element type, key and
// element count; data is filled in from the file's records.
type storageRef struct {
	dtype safetensors.DType
	key   string
	numel int
	data  []byte
}

// tensorRef is a tensor as the pickle describes it: a strided view of a
// storage.
type tensorRef struct {
	storage *storageRef
	offset  int
	size    []int
	stride  []int
}

// storageClass is the value an allowed storage class name resolves to.
type storageClass struct{ dtype safetensors.DType }

// rebuildTensor is torch._utils._rebuild_tensor_v2(storage, offset, size,
// stride, requires_grad, backward_hooks[, metadata]).
type rebuildTensor struct{}

func (rebuildTensor) Call(args ...any) (any, error) {
	if len(args) < 4 {
		return nil, fmt.Errorf("_rebuild_tensor_v2: %d arguments, want at least 4", len(args))
	}
	s, ok := args[0].(*storageRef)
	if !ok {
		return nil, fmt.Errorf("_rebuild_tensor_v2: storage is a %s", typeName(args[0]))
	}
	off, ok := args[1].(int)
	if !ok || off < 0 {
		return nil, fmt.Errorf("_rebuild_tensor_v2: bad storage offset %v", args[1])
	}
	size, err := intTuple(args[2], "size")
	if err != nil {
		return nil, err
	}
	stride, err := intTuple(args[3], "stride")
	if err != nil {
		return nil, err
	}
	if len(size) != len(stride) {
		return nil, fmt.Errorf("_rebuild_tensor_v2: size %v and stride %v differ in rank", size, stride)
	}
	return &tensorRef{storage: s, offset: off, size: size, stride: stride}, nil
}

// rebuildParameter is torch._utils._rebuild_parameter(data, requires_grad,
// backward_hooks): a Parameter is its tensor here.
type rebuildParameter struct{}

func (rebuildParameter) Call(args ...any) (any, error) {
	if len(args) < 1 {
		return nil, errors.New("_rebuild_parameter: no arguments")
	}
	t, ok := args[0].(*tensorRef)
	if !ok {
		return nil, fmt.Errorf("_rebuild_parameter: data is a %s", typeName(args[0]))
	}
	return t, nil
}

// thnnBackend is torch.nn.backends.thnn._get_thnn_function_backend, which
// old whole-module pickles name; it is never called for a state dict.
type thnnBackend struct{}

func (thnnBackend) Call(...any) (any, error) { return nil, nil }

func intTuple(v any, what string) ([]int, error) {
	t, ok := v.(*types.Tuple)
	if !ok {
		return nil, fmt.Errorf("_rebuild_tensor_v2: %s is a %s, not a tuple", what, typeName(v))
	}
	out := make([]int, t.Len())
	for i := range out {
		n, ok := t.Get(i).(int)
		if !ok || n < 0 {
			return nil, fmt.Errorf("_rebuild_tensor_v2: %s[%d] = %v", what, i, t.Get(i))
		}
		out[i] = n
	}
	return out, nil
}

// findClass resolves the allowed classes and refuses every other one.
func findClass(module, name string) (any, error) {
	full := module + "." + name
	if module == "torch" {
		if dt, ok := storageDTypes[name]; ok {
			return &storageClass{dt}, nil
		}
	}
	if v, ok := findNumpyClass(full); ok {
		return v, nil
	}
	switch full {
	case "torch._utils._rebuild_tensor_v2":
		return rebuildTensor{}, nil
	case "torch._utils._rebuild_parameter":
		return rebuildParameter{}, nil
	case "torch.nn.backends.thnn._get_thnn_function_backend":
		return thnnBackend{}, nil
	}
	return nil, fmt.Errorf("class %s is not allowed in a checkpoint (allowed: %s)", full, strings.Join(AllowedClasses(), ", "))
}

// storageSet collects the storages a pickle names, by key.
type storageSet struct {
	byKey map[string]*storageRef
}

func newStorageSet() *storageSet { return &storageSet{byKey: map[string]*storageRef{}} }

// persistentLoad resolves ('storage', class, key, location, numel[, view])
// records; maxElems bounds numel by the bytes the file could hold.
func (s *storageSet) persistentLoad(maxBytes int) func(any) (any, error) {
	return func(id any) (any, error) {
		t, ok := id.(*types.Tuple)
		if !ok || t.Len() < 5 {
			return nil, fmt.Errorf("persistent id %v: want ('storage', class, key, location, numel)", id)
		}
		if kind, _ := t.Get(0).(string); kind != "storage" {
			return nil, fmt.Errorf("persistent id of kind %v: only storages are allowed", t.Get(0))
		}
		cls, ok := t.Get(1).(*storageClass)
		if !ok {
			return nil, fmt.Errorf("persistent id: storage class %v", t.Get(1))
		}
		key, ok := t.Get(2).(string)
		if !ok {
			return nil, fmt.Errorf("persistent id: storage key %v", t.Get(2))
		}
		numel, ok := t.Get(4).(int)
		if !ok || numel < 0 || numel > maxBytes/size(cls.dtype) {
			return nil, fmt.Errorf("storage %q: %v elements of %s cannot fit in a file of %d bytes", key, t.Get(4), cls.dtype, maxBytes)
		}
		if t.Len() > 5 && t.Get(5) != nil {
			return nil, fmt.Errorf("storage %q: storage views are not supported", key)
		}
		if old, ok := s.byKey[key]; ok {
			if old.dtype != cls.dtype || old.numel != numel {
				return nil, fmt.Errorf("storage %q: named as %d×%s and %d×%s", key, old.numel, old.dtype, numel, cls.dtype)
			}
			return old, nil
		}
		r := &storageRef{dtype: cls.dtype, key: key, numel: numel}
		s.byKey[key] = r
		return r, nil
	}
}

// materialize gathers a strided view into a contiguous tensor.
func materialize(t *tensorRef) (*Tensor, error) {
	st := t.storage
	if st.data == nil && st.numel > 0 {
		return nil, fmt.Errorf("storage %q has no data in the file", st.key)
	}
	n := 1
	last := t.offset // highest element index the view touches
	for i, d := range t.size {
		if d == 0 {
			n = 0
			break
		}
		if n > math.MaxInt32/d {
			return nil, fmt.Errorf("shape %v too large", t.size)
		}
		n *= d
		last += (d - 1) * t.stride[i]
	}
	if n > 0 && last >= st.numel {
		return nil, fmt.Errorf("view (offset %d, shape %v, stride %v) runs past its storage of %d elements", t.offset, t.size, t.stride, st.numel)
	}
	es := size(st.dtype)
	out := &Tensor{DType: st.dtype, Shape: append([]int(nil), t.size...), Raw: make([]byte, n*es)}
	if n == 0 {
		return out, nil
	}
	// Walk the view in row-major order with an index odometer.
	idx := make([]int, len(t.size))
	src := t.offset
	for i := 0; i < n; i++ {
		copy(out.Raw[i*es:(i+1)*es], st.data[src*es:(src+1)*es])
		for d := len(idx) - 1; d >= 0; d-- {
			idx[d]++
			src += t.stride[d]
			if idx[d] < t.size[d] {
				break
			}
			src -= idx[d] * t.stride[d]
			idx[d] = 0
		}
	}
	return out, nil
}

func newUnpickler(r *bytes.Reader, s *storageSet, maxBytes int) pickle.Unpickler {
	u := pickle.NewUnpickler(r)
	u.FindClass = findClass
	u.PersistentLoad = s.persistentLoad(maxBytes)
	return u
}

// decodeZip reads the zip format: exactly one */data.pkl, and a record
// <folder>/data/<key> of the stated size for every storage.
func decodeZip(b []byte) (any, error) {
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return nil, fmt.Errorf("zip checkpoint: %w", err)
	}
	var pkl *zip.File
	records := map[string]*zip.File{}
	for _, f := range zr.File {
		// Sizes are checked against the compressed bytes before anything
		// is allocated: torch.save stores records uncompressed.
		switch {
		case f.Method == zip.Store && f.UncompressedSize64 != f.CompressedSize64:
			return nil, fmt.Errorf("zip record %s: stored, but %d bytes uncompressed vs %d", f.Name, f.UncompressedSize64, f.CompressedSize64)
		case f.Method == zip.Deflate && f.UncompressedSize64 > 1100*f.CompressedSize64:
			return nil, fmt.Errorf("zip record %s: %d bytes from %d compressed is beyond deflate's ratio", f.Name, f.UncompressedSize64, f.CompressedSize64)
		case f.Method != zip.Store && f.Method != zip.Deflate:
			return nil, fmt.Errorf("zip record %s: compression method %d", f.Name, f.Method)
		case f.CompressedSize64 > uint64(len(b)):
			return nil, fmt.Errorf("zip record %s: %d compressed bytes in a %d-byte file", f.Name, f.CompressedSize64, len(b))
		}
		records[f.Name] = f
		if path.Base(f.Name) == "data.pkl" && strings.Count(f.Name, "/") == 1 {
			if pkl != nil {
				return nil, fmt.Errorf("zip checkpoint: two pickles, %s and %s", pkl.Name, f.Name)
			}
			pkl = f
		}
		if path.Base(f.Name) == "constants.pkl" {
			return nil, errors.New("zip checkpoint: a TorchScript archive (constants.pkl), not a torch.save file")
		}
	}
	if pkl == nil {
		return nil, errors.New("zip checkpoint: no <folder>/data.pkl record")
	}
	folder := path.Dir(pkl.Name)
	if pkl.UncompressedSize64 > 1<<30 {
		return nil, fmt.Errorf("zip record %s: %d bytes, more than a state dict's pickle needs", pkl.Name, pkl.UncompressedSize64)
	}
	data, err := readRecord(pkl)
	if err != nil {
		return nil, err
	}
	n, err := scanPickle(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pkl.Name, err)
	}
	s := newStorageSet()
	var maxBytes int
	for _, f := range zr.File {
		maxBytes = max(maxBytes, int(min(f.UncompressedSize64, math.MaxInt32)))
	}
	u := newUnpickler(bytes.NewReader(data[:n]), s, maxBytes)
	obj, err := u.Load()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pkl.Name, truncated(err))
	}
	for _, key := range sortedKeys(s.byKey) {
		st := s.byKey[key]
		name := folder + "/data/" + key
		f, ok := records[name]
		if !ok {
			return nil, fmt.Errorf("storage %q: no record %s", key, name)
		}
		want := uint64(st.numel) * uint64(size(st.dtype))
		if f.UncompressedSize64 != want {
			return nil, fmt.Errorf("record %s: %d bytes, want %d (%d×%s)", name, f.UncompressedSize64, want, st.numel, st.dtype)
		}
		if st.data, err = readRecord(f); err != nil {
			return nil, err
		}
	}
	return obj, nil
}

// readRecord reads a zip record whose stated size was checked.
func readRecord(f *zip.File) ([]byte, error) {
	r, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("zip record %s: %w", f.Name, err)
	}
	defer r.Close()
	b := make([]byte, f.UncompressedSize64)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("zip record %s: %w", f.Name, err)
	}
	return b, nil
}

// isPlainPickle tells a single pickle (detectron2's .pkl) from torch's
// legacy format, which starts with a pickled integer.
func isPlainPickle(b []byte) bool {
	n, err := scanPickle(b)
	if err != nil {
		return false
	}
	if n == len(b) {
		return true
	}
	// A legacy file's first pickle is the magic number: PROTO 2, LONG1.
	return !(len(b) > 3 && b[0] == 0x80 && b[2] == 0x8a)
}

// decodePickle reads a file that is one pickle holding a dict of NumPy
// arrays, possibly under "model" (detectron2's .pkl).
func decodePickle(b []byte) (any, error) {
	n, err := scanPickle(b)
	if err != nil {
		return nil, err
	}
	s := newStorageSet()
	u := newUnpickler(bytes.NewReader(b[:n]), s, len(b))
	obj, err := u.Load()
	if err != nil {
		return nil, fmt.Errorf("pickle: %w", truncated(err))
	}
	return obj, nil
}

// legacyMagic is the first pickle of a legacy checkpoint: the integer
// 0x1950a86a20f9469cfc6c (torch/serialization.py MAGIC_NUMBER).
const legacyMagic = "0x1950a86a20f9469cfc6c"

// decodeLegacy reads torch.save's pre-1.6 format: five pickles, then the
// storages, each an 8-byte element count and its bytes.
func decodeLegacy(b []byte) (any, error) {
	off := 0
	s := newStorageSet()
	next := func(what string, withStorages bool) (any, error) {
		n, err := scanPickle(b[off:])
		if err != nil {
			return nil, fmt.Errorf("legacy checkpoint: %s at byte %d: %w", what, off, err)
		}
		var u pickle.Unpickler
		if withStorages {
			u = newUnpickler(bytes.NewReader(b[off:off+n]), s, len(b))
		} else {
			u = pickle.NewUnpickler(bytes.NewReader(b[off : off+n]))
			u.FindClass = findClass
		}
		v, err := u.Load()
		if err != nil {
			return nil, fmt.Errorf("legacy checkpoint: %s at byte %d: %w", what, off, truncated(err))
		}
		off += n
		return v, nil
	}
	magic, err := next("magic number", false)
	if err != nil {
		return nil, fmt.Errorf("not a PyTorch checkpoint (neither a zip archive nor a legacy torch.save file): %w", err)
	}
	if fmt.Sprintf("%#x", magic) != legacyMagic {
		return nil, fmt.Errorf("not a PyTorch checkpoint: first pickle is %v, not torch's magic number", magic)
	}
	proto, err := next("protocol version", false)
	if err != nil {
		return nil, err
	}
	if p, ok := proto.(int); !ok || p != 1001 {
		return nil, fmt.Errorf("legacy checkpoint: protocol version %v, want 1001", proto)
	}
	if _, err := next("system info", false); err != nil {
		return nil, err
	}
	obj, err := next("object", true)
	if err != nil {
		return nil, err
	}
	keysObj, err := next("storage keys", false)
	if err != nil {
		return nil, err
	}
	keys, ok := keysObj.(*types.List)
	if !ok {
		return nil, fmt.Errorf("legacy checkpoint: storage keys are a %s, not a list", typeName(keysObj))
	}
	for i := 0; i < keys.Len(); i++ {
		key, ok := keys.Get(i).(string)
		if !ok {
			return nil, fmt.Errorf("legacy checkpoint: storage key %d is %v", i, keys.Get(i))
		}
		st, ok := s.byKey[key]
		if !ok {
			return nil, fmt.Errorf("legacy checkpoint: storage %q listed but never named", key)
		}
		if len(b)-off < 8 {
			return nil, fmt.Errorf("legacy checkpoint: storage %q at byte %d: truncated", key, off)
		}
		if n := binary.LittleEndian.Uint64(b[off:]); n != uint64(st.numel) {
			return nil, fmt.Errorf("legacy checkpoint: storage %q at byte %d holds %d elements, the pickle says %d", key, off, n, st.numel)
		}
		off += 8
		nb := st.numel * size(st.dtype)
		if len(b)-off < nb {
			return nil, fmt.Errorf("legacy checkpoint: storage %q at byte %d: truncated (%d of %d bytes)", key, off, len(b)-off, nb)
		}
		st.data = b[off : off+nb : off+nb]
		off += nb
	}
	return obj, nil
}

// truncated names an end of input inside a pickle.
func truncated(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("truncated pickle (%w)", err)
	}
	return err
}

type entry struct {
	key   string
	value any
}

// dictEntries returns a pickled dict's entries in order (ok false for
// anything else); keys must be strings.
func dictEntries(v any) ([]entry, bool, error) {
	var out []entry
	add := func(k, val any) error {
		ks, ok := k.(string)
		if !ok {
			return fmt.Errorf("dict key %v is a %s, not a string", k, typeName(k))
		}
		out = append(out, entry{ks, val})
		return nil
	}
	switch d := v.(type) {
	case *types.Dict:
		for _, e := range *d {
			if err := add(e.Key, e.Value); err != nil {
				return nil, true, err
			}
		}
	case *types.OrderedDict:
		for el := d.List.Front(); el != nil; el = el.Next() {
			e := el.Value.(*types.OrderedDictEntry)
			if err := add(e.Key, e.Value); err != nil {
				return nil, true, err
			}
		}
	default:
		return nil, false, nil
	}
	return out, true, nil
}

// findStateDict picks the state dict: the "state_dict" or "model" entry of
// the top-level dict when that entry is a dict, else the top level.
func findStateDict(obj any) (string, []entry, error) {
	top, ok, err := dictEntries(obj)
	if err != nil {
		return "", nil, err
	}
	if !ok {
		return "", nil, fmt.Errorf("the checkpoint holds a value of type %s, not a dict", typeName(obj))
	}
	for _, root := range []string{"state_dict", "model"} {
		for _, e := range top {
			if e.key != root {
				continue
			}
			inner, ok, err := dictEntries(e.value)
			if err != nil {
				return "", nil, fmt.Errorf("%q: %w", root, err)
			}
			if ok {
				return root, inner, nil
			}
		}
	}
	return "", top, nil
}

// metaClasses returns obj["meta"]["CLASSES"] when it is a tuple or list
// of strings.
func metaClasses(obj any) []string {
	lookup := func(v any, key string) any {
		es, ok, err := dictEntries(v)
		if !ok || err != nil {
			return nil
		}
		for _, e := range es {
			if e.key == key {
				return e.value
			}
		}
		return nil
	}
	var items []any
	switch v := lookup(lookup(obj, "meta"), "CLASSES").(type) {
	case *types.Tuple:
		items = *v
	case *types.List:
		items = *v
	default:
		return nil
	}
	out := make([]string, len(items))
	for i, it := range items {
		s, ok := it.(string)
		if !ok {
			return nil
		}
		out[i] = s
	}
	return out
}

func sortedKeys(m map[string]*storageRef) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func typeName(v any) string {
	switch v := v.(type) {
	case nil:
		return "None"
	case *types.GenericObject:
		return "object"
	case *tensorRef:
		return "tensor"
	case *storageRef:
		return "storage"
	case string:
		return "string"
	case int, int64, *big.Int:
		return "int"
	case []byte:
		return "bytes"
	case float64:
		return "float"
	case bool:
		return "bool"
	case *types.Dict, *types.OrderedDict:
		return "dict"
	case *types.List:
		return "list"
	case *types.Tuple:
		return "tuple"
	default:
		return fmt.Sprintf("%T", v)
	}
}
