package torchckpt

import (
	"encoding/binary"
	"fmt"

	"github.com/nlpodyssey/gopickle/types"

	"github.com/flbq/flbq/runtime/safetensors"
)

// NumPy arrays, as detectron2's .pkl checkpoints hold them: the pickle
// calls numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b') and
// sets its state (version, shape, dtype, fortran_order, raw bytes); a
// dtype is numpy.dtype(code, False, True) with state (version, byte
// order, ...). Python 3 pickles bytes at protocol 2 as
// _codecs.encode(text, "latin1"). Only plain numeric dtypes are read:
// object arrays (which would unpickle arbitrary objects) are refused.

// numpyClasses are the classes the numpy support allows.
var numpyClasses = map[string]bool{
	"numpy.core.multiarray._reconstruct": true, "numpy._core.multiarray._reconstruct": true,
	"numpy.ndarray": true, "numpy.dtype": true, "_codecs.encode": true,
}

type ndarrayClass struct{}

type reconstruct struct{}

func (reconstruct) Call(args ...any) (any, error) {
	if len(args) < 1 {
		return nil, fmt.Errorf("numpy _reconstruct: no arguments")
	}
	if _, ok := args[0].(ndarrayClass); !ok {
		return nil, fmt.Errorf("numpy _reconstruct of a %s, not numpy.ndarray", typeName(args[0]))
	}
	return &ndarray{}, nil
}

// ndarray is a NumPy array whose state has been set.
type ndarray struct {
	shape   []int
	dtype   *npDType
	fortran bool
	data    []byte
	set     bool
}

func (a *ndarray) PySetState(state any) error {
	t, ok := state.(*types.Tuple)
	if !ok || t.Len() != 5 {
		return fmt.Errorf("numpy array state: want (version, shape, dtype, fortran, data), got %v", state)
	}
	shape, err := intTuple(t.Get(1), "numpy shape")
	if err != nil {
		return err
	}
	dt, ok := t.Get(2).(*npDType)
	if !ok {
		return fmt.Errorf("numpy array state: dtype is a %s", typeName(t.Get(2)))
	}
	if dt.dtype == "" {
		return fmt.Errorf("numpy dtype %q is not a plain numeric type (object arrays are not read)", dt.code)
	}
	fortran, ok := t.Get(3).(bool)
	if !ok {
		return fmt.Errorf("numpy array state: fortran flag %v", t.Get(3))
	}
	var data []byte
	switch d := t.Get(4).(type) {
	case []byte:
		data = d
	case string: // a protocol-0/1 byte string
		data = []byte(d)
	default:
		return fmt.Errorf("numpy array state: data is a %s, not bytes", typeName(d))
	}
	n := 1
	for _, s := range shape {
		if s != 0 && n > len(data)/s {
			return fmt.Errorf("numpy array: shape %v needs more than its %d bytes", shape, len(data))
		}
		n *= s
	}
	if n*size(dt.dtype) != len(data) {
		return fmt.Errorf("numpy array: shape %v of %s needs %d bytes, has %d", shape, dt.code, n*size(dt.dtype), len(data))
	}
	*a = ndarray{shape: shape, dtype: dt, fortran: fortran, data: data, set: true}
	return nil
}

// tensor converts the array to a contiguous little-endian row-major tensor.
func (a *ndarray) tensor() (*Tensor, error) {
	if !a.set {
		return nil, fmt.Errorf("numpy array without state")
	}
	es := size(a.dtype.dtype)
	raw := append([]byte(nil), a.data...)
	if a.dtype.bigEndian && es > 1 {
		for i := 0; i < len(raw); i += es {
			for l, r := i, i+es-1; l < r; l, r = l+1, r-1 {
				raw[l], raw[r] = raw[r], raw[l]
			}
		}
	}
	t := &Tensor{DType: a.dtype.dtype, Shape: append([]int(nil), a.shape...), Raw: raw}
	if a.fortran && len(a.shape) > 1 {
		// Column-major: gather through reversed strides.
		stride := make([]int, len(a.shape))
		s := 1
		for i := range a.shape {
			stride[i] = s
			s *= a.shape[i]
		}
		st := &storageRef{dtype: a.dtype.dtype, numel: t.Elems(), data: raw}
		return materialize(&tensorRef{storage: st, size: a.shape, stride: stride})
	}
	return t, nil
}

// npDType is a numpy.dtype: its type code and, after its state, byte order.
type npDType struct {
	code      string
	dtype     safetensors.DType // "" for anything but a plain number or bool
	bigEndian bool
}

var npCodes = map[string]safetensors.DType{
	"f4": safetensors.F32, "f8": safetensors.F64, "f2": safetensors.F16, "i8": safetensors.I64, "i4": safetensors.I32, "i2": safetensors.I16, "i1": safetensors.I8, "u1": safetensors.U8, "b1": safetensors.Bool,
}

type dtypeClass struct{}

func (dtypeClass) Call(args ...any) (any, error) {
	if len(args) < 1 {
		return nil, fmt.Errorf("numpy.dtype: no arguments")
	}
	code, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("numpy.dtype(%v)", args[0])
	}
	return &npDType{code: code, dtype: npCodes[code]}, nil
}

func (d *npDType) PySetState(state any) error {
	t, ok := state.(*types.Tuple)
	if !ok || t.Len() < 2 {
		return fmt.Errorf("numpy dtype state %v", state)
	}
	switch t.Get(1) {
	case "<", "|", "=":
		d.bigEndian = binary.NativeEndian.Uint16([]byte{1, 0}) != 1 && t.Get(1) == "="
	case ">":
		d.bigEndian = true
	default:
		return fmt.Errorf("numpy dtype byte order %v", t.Get(1))
	}
	return nil
}

// codecsEncode is _codecs.encode(text, "latin1"): how Python 3 pickles
// bytes at protocol 2.
type codecsEncode struct{}

func (codecsEncode) Call(args ...any) (any, error) {
	if len(args) != 2 {
		return nil, fmt.Errorf("_codecs.encode: %d arguments", len(args))
	}
	s, ok1 := args[0].(string)
	enc, ok2 := args[1].(string)
	if !ok1 || !ok2 || (enc != "latin1" && enc != "latin-1") {
		return nil, fmt.Errorf("_codecs.encode(%v, %v): only latin1 text is decoded", args[0], args[1])
	}
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xff {
			return nil, fmt.Errorf("_codecs.encode: %q is not latin1", r)
		}
		out = append(out, byte(r))
	}
	return out, nil
}

// findNumpyClass resolves the numpy classes (ok false: not one of them).
func findNumpyClass(full string) (any, bool) {
	if !numpyClasses[full] {
		return nil, false
	}
	switch full {
	case "numpy.ndarray":
		return ndarrayClass{}, true
	case "numpy.dtype":
		return dtypeClass{}, true
	case "_codecs.encode":
		return codecsEncode{}, true
	}
	return reconstruct{}, true
}
