package torchckpt

import (
	"encoding/binary"
	"fmt"
)

// scanPickle walks the opcodes of the pickle at the start of b without
// decoding them and returns its length (through STOP). It checks every
// length the pickle states against the bytes that follow: gopickle
// allocates a stated length before reading it, so a forged 8-byte length
// would otherwise exhaust memory. Opcode argument sizes are those of
// CPython's Lib/pickletools.py.
func scanPickle(b []byte) (int, error) {
	pos := 0
	need := func(n uint64, op byte) error {
		if n > uint64(len(b)-pos) {
			return fmt.Errorf("pickle byte %d: opcode %q states %d bytes, %d remain", pos, op, n, len(b)-pos)
		}
		return nil
	}
	line := func(op byte) error {
		for i := pos; i < len(b); i++ {
			if b[i] == '\n' {
				pos = i + 1
				return nil
			}
		}
		return fmt.Errorf("pickle byte %d: opcode %q: unterminated line", pos, op)
	}
	for pos < len(b) {
		op := b[pos]
		start := pos
		pos++
		var fixed int       // bytes of a fixed-size argument
		var counted int = 0 // bytes of a length prefix
		switch op {
		case '.': // STOP
			return pos, nil
		case 'q', 'h', 'K', 0x82, 0x80: // BINPUT BINGET BININT1 EXT1 PROTO
			fixed = 1
		case 'M', 0x83: // BININT2 EXT2
			fixed = 2
		case 'J', 'r', 'j', 0x84: // BININT LONG_BINPUT LONG_BINGET EXT4
			fixed = 4
		case 'G': // BINFLOAT
			fixed = 8
		case 0x95: // FRAME: an 8-byte frame length, then the framed opcodes
			if err := need(8, op); err != nil {
				return 0, err
			}
			n := binary.LittleEndian.Uint64(b[pos:])
			pos += 8
			if err := need(n, op); err != nil {
				return 0, err
			}
			continue
		case 'U', 'C', 0x8c, 0x8a: // SHORT_BINSTRING SHORT_BINBYTES SHORT_BINUNICODE LONG1
			counted = 1
		case 'T', 'B', 'X', 0x8b: // BINSTRING BINBYTES BINUNICODE LONG4
			counted = 4
		case 0x8e, 0x8d, 0x96: // BINBYTES8 BINUNICODE8 BYTEARRAY8
			counted = 8
		case 'I', 'L', 'F', 'S', 'V', 'P', 'g', 'p': // INT LONG FLOAT STRING UNICODE PERSID GET PUT
			if err := line(op); err != nil {
				return 0, err
			}
			continue
		case 'c', 'i': // GLOBAL INST: module and name lines
			if err := line(op); err != nil {
				return 0, err
			}
			if err := line(op); err != nil {
				return 0, err
			}
			continue
		case '(', '0', '1', '2', 'N', 'Q', 'R', 'a', 'b', 'd', '}', 'e', 'l', ']', 'o', 's', 't', ')', 'u',
			0x81, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8f, 0x90, 0x91, 0x92, 0x93, 0x94, 0x97, 0x98:
			continue
		default:
			return 0, fmt.Errorf("pickle byte %d: unknown opcode 0x%02x", start, op)
		}
		if fixed > 0 {
			if err := need(uint64(fixed), op); err != nil {
				return 0, err
			}
			pos += fixed
			continue
		}
		if err := need(uint64(counted), op); err != nil {
			return 0, err
		}
		var n uint64
		switch counted {
		case 1:
			n = uint64(b[pos])
		case 4:
			n = uint64(binary.LittleEndian.Uint32(b[pos:]))
		case 8:
			n = binary.LittleEndian.Uint64(b[pos:])
		}
		pos += counted
		if err := need(n, op); err != nil {
			return 0, err
		}
		pos += int(n)
	}
	return 0, fmt.Errorf("pickle byte %d: truncated pickle (no STOP)", pos)
}
