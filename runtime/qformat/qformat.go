// Package qformat is the packing contract between the quantizer, the kernel
// generator (gen/kernels) and the kernels (generated/kernels, runtime/kernels).
// It is the single source of truth for the bit layout; the generator imports
// these constants and tables instead of copying them.
//
// # Weights
//
// Weights are quantized per output channel, uniform and asymmetric:
//
//	w[n,k] ≈ Scale[n] · (q[n,k] − Zero[n]),   q ∈ [0, 2^b − 1],  b ∈ 1..8
//
// Scale is a float32. Zero is an integer in [0, 2^b − 1] (stored as int32), so
// the kernel's accumulator Σk q·x − Zero·Σk x is an exact integer.
//
// # Tiles and blocks
//
// Output channels are grouped in tiles of TileN = 16 channels; every tile has
// one bit-width (a channel group of 32 channels is two tiles). K is padded with
// zero weights to a multiple of BlockK = 32 and cut into superblocks of
// GroupsPerBlock = 8 k-groups of KGroup = 4 consecutive k values. The unpacked
// form of one k-group of one tile is GroupBytes = 64 bytes, byte j·4+i holding
// q[n0+j, k0+i] (channel j of the tile, k offset i inside the group): one zmm
// for VPDPBUSD, two ymm for VPMADDUBSW.
//
// # Bit planes
//
// A b-bit weight is stored as the bit planes of Planes(b) (widest first):
// 8 = 8, 7 = 4+2+1, 6 = 4+2, 5 = 4+1, 4 = 4, 3 = 2+1, 2 = 2, 1 = 1. Plane i has
// width p and shift s (PlaneShifts) and holds bits [s, s+p) of q. Inside a
// superblock the planes follow each other in that order; a plane of width p
// takes p blocks of 64 bytes, and block j of it holds the k-groups
// g = j·(8/p) + t, t = 0..8/p−1, group t in bits [t·p, t·p+p) of every byte.
// So a superblock of a b-bit tile is exactly b·64 bytes, a tile is
// KP/32 · b · 64 bytes, and unpacking a group is, per plane, one shift of a
// 64-byte block and one AND (plus an OR to merge planes).
//
// # Alignment and padding
//
// Tile offsets inside Matrix.Data are multiples of Align = 64 bytes and Data
// itself starts on a 64-byte boundary. Padded weights (k ≥ K, or channels
// n ≥ N in the last tile) are q = 0 with Scale = 0 and Zero = 0.
//
// # Activations
//
// Activations are quantized to int8 symmetrically per row (QuantizeRow):
// scale = maxabs/127, q = RoundToEven(x · (127/maxabs)) clamped to [−127, 127]
// (−128 is never produced), rows padded with zeros to KP.
package qformat

import (
	"errors"
	"fmt"
	"math"
	"unsafe"
)

const (
	// TileN is the number of output channels in a tile.
	TileN = 16
	// KGroup is the number of consecutive k values in a group (one dword).
	KGroup = 4
	// GroupsPerBlock is the number of k-groups in a superblock.
	GroupsPerBlock = 8
	// BlockK is the number of k values in a superblock; K is padded to it.
	BlockK = KGroup * GroupsPerBlock
	// GroupBytes is the size of one unpacked k-group of a tile.
	GroupBytes = TileN * KGroup
	// BlockWeights is the number of weights in a superblock of a tile.
	BlockWeights = TileN * BlockK
	// Align is the byte alignment of tiles in Matrix.Data.
	Align = 64
	// MinBits and MaxBits bound the weight bit-width.
	MinBits, MaxBits = 1, 8
	// ActMax is the largest activation magnitude: activations are in
	// [−ActMax, ActMax].
	ActMax = 127
	// MaxK is the largest K for which the int32 accumulator is exact:
	// |Σk (q−z)·x| ≤ 255·127·K and also Σk q·x ≤ 255·127·K must fit in int32,
	// so K ≤ ⌊(2³¹−1)/(255·127)⌋ = 66311.
	MaxK = math.MaxInt32 / (255 * ActMax)
)

var planes = [MaxBits + 1][]int{
	1: {1}, 2: {2}, 3: {2, 1}, 4: {4}, 5: {4, 1}, 6: {4, 2}, 7: {4, 2, 1}, 8: {8},
}

// Planes returns the bit-plane widths of a b-bit weight, widest first.
func Planes(b int) []int {
	checkBits(b)
	return append([]int(nil), planes[b]...)
}

// PlaneShifts returns the bit position of each plane of Planes(b).
func PlaneShifts(b int) []int {
	ps := Planes(b)
	sh := make([]int, len(ps))
	s := 0
	for i, p := range ps {
		sh[i] = s
		s += p
	}
	return sh
}

// PlaneOffsets returns the byte offset of each plane inside a superblock.
func PlaneOffsets(b int) []int {
	ps := Planes(b)
	off := make([]int, len(ps))
	o := 0
	for i, p := range ps {
		off[i] = o
		o += p * GroupBytes
	}
	return off
}

func checkBits(b int) {
	if b < MinBits || b > MaxBits {
		panic(fmt.Sprintf("qformat: bit-width %d out of range [%d, %d]", b, MinBits, MaxBits))
	}
}

// PaddedK rounds k up to a multiple of BlockK.
func PaddedK(k int) int { return (k + BlockK - 1) / BlockK * BlockK }

// PaddedN rounds n up to a multiple of TileN.
func PaddedN(n int) int { return (n + TileN - 1) / TileN * TileN }

// BlockBytes is the packed size of one superblock of a b-bit tile.
func BlockBytes(b int) int { checkBits(b); return b * GroupBytes }

// TileBytes is the packed size of a b-bit tile with padded depth kp.
func TileBytes(b, kp int) int { return kp / BlockK * BlockBytes(b) }

// Matrix is a packed weight matrix of N output channels × K inputs.
type Matrix struct {
	N, K int // logical shape
	KP   int // K padded to a multiple of BlockK
	// TileBits is the bit-width of each tile of TileN channels.
	TileBits []uint8
	// TileOff[t] is the byte offset of tile t in Data; TileOff[len] = len(Data).
	TileOff []int
	Data    []byte
	// Scale and Zero per output channel, padded to PaddedN(N).
	Scale []float32
	Zero  []int32
}

// Tiles returns the number of tiles.
func (m *Matrix) Tiles() int { return len(m.TileBits) }

// Tile returns the packed bytes of tile t.
func (m *Matrix) Tile(t int) []byte { return m.Data[m.TileOff[t]:m.TileOff[t+1]] }

// AlignedBytes returns a zeroed byte slice of length n whose first byte is
// Align-aligned.
func AlignedBytes(n int) []byte {
	buf := make([]byte, n+Align)
	off := int(uintptr(unsafe.Pointer(&buf[0])) & (Align - 1))
	if off != 0 {
		off = Align - off
	}
	return buf[off : off+n : off+n]
}

// Validate checks the internal consistency of m.
func (m *Matrix) Validate() error {
	if m.N <= 0 || m.K <= 0 {
		return fmt.Errorf("qformat: bad shape %d×%d", m.N, m.K)
	}
	if m.KP != PaddedK(m.K) {
		return fmt.Errorf("qformat: KP %d is not PaddedK(%d)", m.KP, m.K)
	}
	nt := PaddedN(m.N) / TileN
	if len(m.TileBits) != nt || len(m.TileOff) != nt+1 {
		return fmt.Errorf("qformat: %d tiles expected, have %d bit-widths and %d offsets", nt, len(m.TileBits), len(m.TileOff))
	}
	if len(m.Scale) != nt*TileN || len(m.Zero) != nt*TileN {
		return fmt.Errorf("qformat: scale/zero length %d/%d, want %d", len(m.Scale), len(m.Zero), nt*TileN)
	}
	off := 0
	for t, b := range m.TileBits {
		if b < MinBits || b > MaxBits {
			return fmt.Errorf("qformat: tile %d has bit-width %d", t, b)
		}
		if m.TileOff[t] != off {
			return fmt.Errorf("qformat: tile %d offset %d, want %d", t, m.TileOff[t], off)
		}
		off += TileBytes(int(b), m.KP)
		for j := 0; j < TileN; j++ {
			if z := m.Zero[t*TileN+j]; z < 0 || z > int32(1)<<b-1 {
				return fmt.Errorf("qformat: channel %d zero point %d out of [0, %d]", t*TileN+j, z, 1<<b-1)
			}
		}
	}
	if m.TileOff[nt] != off || len(m.Data) != off {
		return fmt.Errorf("qformat: data length %d, want %d", len(m.Data), off)
	}
	return nil
}

// Pack packs q (N×K row-major, channel-major) into the tile layout. tileBits
// gives the bit-width of each tile (len PaddedN(n)/TileN); every q[n,k] must
// be below 2^tileBits[n/TileN]. scale and zero have one entry per channel.
func Pack(q []uint8, n, k int, tileBits []uint8, scale []float32, zero []int32) (*Matrix, error) {
	if n <= 0 || k <= 0 {
		return nil, fmt.Errorf("qformat: bad shape %d×%d", n, k)
	}
	if len(q) != n*k {
		return nil, fmt.Errorf("qformat: len(q) = %d, want %d×%d", len(q), n, k)
	}
	if len(scale) != n || len(zero) != n {
		return nil, fmt.Errorf("qformat: len(scale), len(zero) = %d, %d, want %d", len(scale), len(zero), n)
	}
	nt := PaddedN(n) / TileN
	if len(tileBits) != nt {
		return nil, fmt.Errorf("qformat: %d tile bit-widths for %d tiles", len(tileBits), nt)
	}
	kp := PaddedK(k)
	m := &Matrix{N: n, K: k, KP: kp, TileBits: append([]uint8(nil), tileBits...), TileOff: make([]int, nt+1),
		Scale: make([]float32, nt*TileN), Zero: make([]int32, nt*TileN)}
	copy(m.Scale, scale)
	copy(m.Zero, zero)
	off := 0
	for t, b := range tileBits {
		if b < MinBits || b > MaxBits {
			return nil, fmt.Errorf("qformat: tile %d: bit-width %d out of range [1, 8]", t, b)
		}
		m.TileOff[t] = off
		off += TileBytes(int(b), kp)
	}
	m.TileOff[nt] = off
	m.Data = AlignedBytes(off)
	var tq [BlockWeights]uint8 // one superblock, unpacked layout
	for t, b8 := range tileBits {
		b := int(b8)
		max := uint8(1<<b - 1)
		for j := 0; j < TileN; j++ {
			c := t*TileN + j
			if c < n && (zero[c] < 0 || zero[c] > int32(max)) {
				return nil, fmt.Errorf("qformat: channel %d: zero point %d out of [0, %d]", c, zero[c], max)
			}
		}
		tile := m.Data[m.TileOff[t]:m.TileOff[t+1]]
		for sb := 0; sb < kp/BlockK; sb++ {
			for g := 0; g < GroupsPerBlock; g++ {
				for j := 0; j < TileN; j++ {
					for i := 0; i < KGroup; i++ {
						c, kk := t*TileN+j, sb*BlockK+g*KGroup+i
						var v uint8
						if c < n && kk < k {
							v = q[c*k+kk]
							if v > max {
								return nil, fmt.Errorf("qformat: q[%d,%d] = %d exceeds %d bits", c, kk, v, b)
							}
						}
						tq[g*GroupBytes+j*KGroup+i] = v
					}
				}
			}
			PackBlock(tile[sb*BlockBytes(b):(sb+1)*BlockBytes(b)], &tq, b)
		}
	}
	return m, nil
}

// PackBlock packs one superblock (unpacked layout: group g, byte j·4+i at
// g·64 + j·4 + i) of a b-bit tile into dst (BlockBytes(b) bytes).
func PackBlock(dst []byte, src *[BlockWeights]uint8, b int) {
	dst = dst[:BlockBytes(b)]
	clear(dst)
	shifts := PlaneShifts(b)
	offs := PlaneOffsets(b)
	for pi, p := range planes[b] {
		per := 8 / p
		mask := uint8(1<<p - 1)
		for g := 0; g < GroupsPerBlock; g++ {
			blk := offs[pi] + g/per*GroupBytes
			t := g % per
			for c := 0; c < GroupBytes; c++ {
				dst[blk+c] |= (src[g*GroupBytes+c] >> shifts[pi] & mask) << (t * p)
			}
		}
	}
}

// UnpackBlock is the inverse of PackBlock: it is the obviously-correct
// definition that the generated unpack kernels are tested against.
func UnpackBlock(dst *[BlockWeights]uint8, src []byte, b int) {
	src = src[:BlockBytes(b)]
	shifts := PlaneShifts(b)
	offs := PlaneOffsets(b)
	clear(dst[:])
	for pi, p := range planes[b] {
		per := 8 / p
		mask := uint8(1<<p - 1)
		for g := 0; g < GroupsPerBlock; g++ {
			blk := offs[pi] + g/per*GroupBytes
			t := g % per
			for c := 0; c < GroupBytes; c++ {
				dst[g*GroupBytes+c] |= (src[blk+c] >> (t * p) & mask) << shifts[pi]
			}
		}
	}
}

// Unpack returns the N×K matrix of quantized weights.
func (m *Matrix) Unpack() []uint8 {
	q := make([]uint8, m.N*m.K)
	var tq [BlockWeights]uint8
	for t, b8 := range m.TileBits {
		b := int(b8)
		tile := m.Tile(t)
		for sb := 0; sb < m.KP/BlockK; sb++ {
			UnpackBlock(&tq, tile[sb*BlockBytes(b):], b)
			for g := 0; g < GroupsPerBlock; g++ {
				for j := 0; j < TileN; j++ {
					for i := 0; i < KGroup; i++ {
						c, kk := t*TileN+j, sb*BlockK+g*KGroup+i
						if c < m.N && kk < m.K {
							q[c*m.K+kk] = tq[g*GroupBytes+j*KGroup+i]
						}
					}
				}
			}
		}
	}
	return q
}

// ChannelBits returns the bit-width of channel c.
func (m *Matrix) ChannelBits(c int) int { return int(m.TileBits[c/TileN]) }

// Dequantize returns the N×K float32 weights Scale·(q − Zero).
func (m *Matrix) Dequantize() []float32 {
	q := m.Unpack()
	w := make([]float32, len(q))
	for c := 0; c < m.N; c++ {
		for k := 0; k < m.K; k++ {
			w[c*m.K+k] = m.Scale[c] * float32(int32(q[c*m.K+k])-m.Zero[c])
		}
	}
	return w
}

// ErrNotFinite is returned for weights that are NaN or infinite.
var ErrNotFinite = errors.New("qformat: weight is not finite")
