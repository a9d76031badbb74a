package cocomask

import (
	"fmt"
)

// String is the compressed COCO string form of the counts (rleToString):
// a LEB128-like code with 5 data bits per character, characters 48..111,
// and counts from the fourth on stored as differences to the count two
// places earlier.
func (r RLE) String() string {
	return string(r.AppendString(nil))
}

// AppendString appends the compressed string form of r's counts to dst.
func (r RLE) AppendString(dst []byte) []byte {
	for i, c := range r.Counts {
		x := int64(c)
		if i > 2 {
			x -= int64(r.Counts[i-2])
		}
		for more := true; more; {
			ch := byte(x & 0x1f)
			x >>= 5
			if ch&0x10 != 0 {
				more = x != -1
			} else {
				more = x != 0
			}
			if more {
				ch |= 0x20
			}
			dst = append(dst, ch+48)
		}
	}
	return dst
}

// FromString decodes the compressed string form (rleFrString) of an h×w
// mask. Unlike the C code it rejects characters outside 48..111, a string
// that ends inside a count, counts outside the uint32 range and runs that
// do not add up to h·w pixels.
func FromString(s string, h, w int) (RLE, error) {
	return FromBytes([]byte(s), h, w)
}

// FromBytes is FromString for a byte slice.
func FromBytes(s []byte, h, w int) (RLE, error) {
	if h < 0 || w < 0 || uint64(h)*uint64(w) > MaxPixels {
		return RLE{}, fmt.Errorf("bad mask size [%d, %d]", h, w)
	}
	// Every count takes at least one character.
	cnts := make([]uint32, 0, min(len(s), 1<<16))
	total := uint64(h) * uint64(w)
	var sum uint64
	for p := 0; p < len(s); {
		var x int64
		k := 0
		for more := true; more; {
			if p >= len(s) {
				return RLE{}, fmt.Errorf("compressed counts: string ends inside count %d", len(cnts))
			}
			if k >= 7 {
				return RLE{}, fmt.Errorf("compressed counts: count %d is too long (at byte %d)", len(cnts), p)
			}
			ch := s[p]
			if ch < 48 || ch > 111 {
				return RLE{}, fmt.Errorf("compressed counts: invalid character %q at byte %d", ch, p)
			}
			c := int64(ch - 48)
			x |= (c & 0x1f) << (5 * k)
			more = c&0x20 != 0
			p++
			k++
			if !more && c&0x10 != 0 {
				x |= -1 << (5 * k)
			}
		}
		m := len(cnts)
		if m > 2 {
			x += int64(cnts[m-2])
		}
		if x < 0 || x > int64(^uint32(0)) {
			return RLE{}, fmt.Errorf("compressed counts: count %d is %d, outside 0..2^32-1", m, x)
		}
		sum += uint64(x)
		if sum > total {
			return RLE{}, fmt.Errorf("compressed counts: runs exceed the %d pixels of a [%d, %d] mask", total, h, w)
		}
		cnts = append(cnts, uint32(x))
	}
	if sum != total {
		return RLE{}, fmt.Errorf("compressed counts: runs add up to %d pixels, want %d (size [%d, %d])", sum, total, h, w)
	}
	return RLE{H: h, W: w, Counts: cnts}, nil
}
