package qformat

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestPlanes(t *testing.T) {
	for b := MinBits; b <= MaxBits; b++ {
		sum := 0
		for _, p := range Planes(b) {
			if p != 1 && p != 2 && p != 4 && p != 8 {
				t.Fatalf("b=%d: plane width %d", b, p)
			}
			sum += p
		}
		if sum != b {
			t.Fatalf("b=%d: planes %v sum to %d", b, Planes(b), sum)
		}
		if BlockBytes(b) != BlockWeights*b/8 {
			t.Fatalf("b=%d: block bytes %d", b, BlockBytes(b))
		}
	}
	if MaxK != 66311 {
		t.Fatalf("MaxK = %d", MaxK)
	}
	if int64(MaxK)*255*127 > math.MaxInt32 || int64(MaxK+1)*255*127 <= math.MaxInt32 {
		t.Fatal("MaxK is not the largest exact K")
	}
}

func TestPackRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for b := MinBits; b <= MaxBits; b++ {
		for _, sh := range [][2]int{{1, 1}, {16, 32}, {17, 33}, {40, 100}, {5, 3072}} {
			n, k := sh[0], sh[1]
			q := make([]uint8, n*k)
			for i := range q {
				q[i] = uint8(rng.IntN(1 << b))
			}
			scale := make([]float32, n)
			zero := make([]int32, n)
			for i := range zero {
				zero[i] = int32(rng.IntN(1 << b))
				scale[i] = rng.Float32()
			}
			m, err := Pack(q, n, k, UniformBits(n, b), scale, zero)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Validate(); err != nil {
				t.Fatal(err)
			}
			if len(m.Data) != PaddedN(n)/TileN*PaddedK(k)*TileN*b/8 {
				t.Fatalf("b=%d %dx%d: %d bytes", b, n, k, len(m.Data))
			}
			got := m.Unpack()
			for i := range q {
				if got[i] != q[i] {
					t.Fatalf("b=%d %dx%d: q[%d] = %d after round trip, want %d", b, n, k, i, got[i], q[i])
				}
			}
		}
	}
}

func TestPackLayout(t *testing.T) {
	// b=3 = planes 2+1: the 2-bit plane holds bits 0..1, the 1-bit plane bit 2.
	n, k := 16, 32
	q := make([]uint8, n*k)
	q[0*k+0] = 5 // channel 0, k 0: group 0, byte 0; 5 = 0b101
	q[1*k+9] = 6 // channel 1, k 9: group 2, byte 1*4+1 = 5; 6 = 0b110
	m, err := Pack(q, n, k, UniformBits(n, 3), make([]float32, n), make([]int32, n))
	if err != nil {
		t.Fatal(err)
	}
	d := m.Data
	// 2-bit plane: block 0 holds groups 0..3 at bits 2t.
	if d[0] != 0b01 || d[5] != 0b10<<4 {
		t.Fatalf("2-bit plane bytes %08b %08b", d[0], d[5])
	}
	// 1-bit plane at offset 128: groups 0..7 at bit t.
	if d[128] != 1 || d[128+5] != 1<<2 {
		t.Fatalf("1-bit plane bytes %08b %08b", d[128], d[128+5])
	}
	if uintptr(len(d)) != 3*64 || AlignOK(d) == false {
		t.Fatal("size or alignment")
	}
}

func AlignOK(b []byte) bool { return len(b) == 0 || uintptrOf(b)%Align == 0 }

func TestMixedBits(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	n, k := 50, 70
	w := make([]float32, n*k)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	tb := []uint8{2, 8, 5, 1}
	m, err := QuantizeWeights(w, n, k, tb, MinMax)
	if err != nil {
		t.Fatal(err)
	}
	for c := 0; c < n; c++ {
		b := m.ChannelBits(c)
		if b != int(tb[c/16]) {
			t.Fatal("channel bits")
		}
	}
	q := m.Unpack()
	dq := m.Dequantize()
	for c := 0; c < n; c++ {
		b := m.ChannelBits(c)
		for kk := 0; kk < k; kk++ {
			if int(q[c*k+kk]) >= 1<<b {
				t.Fatalf("q out of range")
			}
			if d := math.Abs(float64(dq[c*k+kk] - w[c*k+kk])); d > float64(m.Scale[c])/2*1.0001 {
				t.Fatalf("channel %d (b=%d) k=%d: error %g > scale/2 = %g", c, b, kk, d, m.Scale[c]/2)
			}
		}
	}
}

func TestQuantizeRules(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	k := 512
	w := make([]float32, k)
	for i := range w {
		w[i] = float32(rng.NormFloat64())
	}
	w[7] = 12 // outlier: MSE clipping should win at low bits
	sse := func(r Rule, b int) float64 {
		q := make([]uint8, k)
		s, z, err := QuantizeChannel(q, w, b, r)
		if err != nil {
			t.Fatal(err)
		}
		return channelSSE(w, s, z, b)
	}
	for b := 2; b <= 4; b++ {
		if mm, ms := sse(MinMax, b), sse(MSE, b); !(ms < mm) {
			t.Fatalf("b=%d: mse rule %g not below minmax %g", b, ms, mm)
		}
	}
	q := make([]uint8, 3)
	s, z, _ := QuantizeChannel(q, []float32{0, 0, 0}, 4, MinMax)
	if s != 1 || z != 0 || q[0] != 0 {
		t.Fatal("zero channel")
	}
	if _, _, err := QuantizeChannel(q, []float32{0, float32(math.NaN()), 0}, 4, MinMax); err == nil {
		t.Fatal("NaN accepted")
	}
}

func TestQuantizeRow(t *testing.T) {
	x := []float32{0.5, -1, 0.25, 1.0 / 254, -1.0 / 254, 3.0 / 254}
	dst := make([]int8, 8)
	for i := range dst {
		dst[i] = 99
	}
	s, sum := QuantizeRow(dst, x)
	if s != 1.0/127 {
		t.Fatalf("scale %g", s)
	}
	// 0.5·127 = 63.5 → 64 (even); 1/254·127 = 0.5 → 0; 3/254·127 = 1.5 → 2.
	want := []int8{64, -127, 32, 0, 0, 2, 0, 0}
	for i := range want {
		if dst[i] != want[i] {
			t.Fatalf("dst = %v, want %v", dst, want)
		}
	}
	if sum != 64-127+32+2 {
		t.Fatalf("sum %d", sum)
	}
	s, sum = QuantizeRow(dst, []float32{0, 0, 1e-35})
	if s != 0 || sum != 0 || dst[2] != 0 {
		t.Fatal("tiny row")
	}
}
