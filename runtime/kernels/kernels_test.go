package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	gk "github.com/flbq/flbq/generated/kernels"
	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/backend/backendtest"
	"github.com/flbq/flbq/runtime/kernels/kabi"
	"github.com/flbq/flbq/runtime/qformat"
)

// forEachTier runs f with every compiled tier active in turn (skipping the
// ones this CPU cannot run, unless FLBQ_TEST_REQUIRE_TIER requires them), on
// that tier's kernel table.
func forEachTier(t *testing.T, f func(t *testing.T, tier *kabi.Table)) {
	t.Helper()
	backendtest.ForEachTier(t, func(t *testing.T, tier backend.Tier) {
		tab := table()
		if tab.Tier != tier {
			t.Fatalf("tier %s active but table() is %s's", tier, tab.Name())
		}
		f(t, tab)
	})
}

func TestMain(m *testing.M) { backendtest.Main(m) }

func TestTiersPresent(t *testing.T) {
	if len(gk.Tables) != len(backend.Compiled()) {
		t.Fatalf("%d kernel tables for compiled tiers %v", len(gk.Tables), backend.Compiled())
	}
	for i, tier := range backend.Compiled() {
		tab := gk.Tables[i]
		if tab.Tier != tier || tables[tier] != tab {
			t.Fatalf("table %d is %s's, want %s's", i, tab.Name(), tier)
		}
		if tab.MaxAbs == nil || tab.QuantRow == nil || tab.QuantRows == nil || tab.Epilogue == nil {
			t.Fatalf("tier %s has nil functions", tier)
		}
		for b := 1; b <= 8; b++ {
			if tab.Unpack[b] == nil || tab.Dot[b] == nil {
				t.Fatalf("tier %s lacks b=%d kernels", tier, b)
			}
		}
	}
	t.Logf("compiled tiers %v, usable here %v, active %s", backend.Compiled(), backend.Usable(), backend.Active())
}

// TestUnpackTwins checks every tier's unpacker against qformat.UnpackBlock.
func TestUnpackTwins(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	forEachTier(t, func(t *testing.T, tier *kabi.Table) {
		for b := 1; b <= 8; b++ {
			for _, blocks := range []int{1, 2, 5} {
				src := make([]byte, blocks*qformat.BlockBytes(b)+3)
				for i := range src {
					src[i] = byte(rng.Uint32())
				}
				dst := make([]byte, blocks*qformat.BlockWeights+7)
				tier.Unpack[b](dst, src, blocks)
				var want [qformat.BlockWeights]uint8
				for sb := 0; sb < blocks; sb++ {
					qformat.UnpackBlock(&want, src[sb*qformat.BlockBytes(b):], b)
					for i, v := range want {
						if got := dst[sb*qformat.BlockWeights+i]; got != v-uint8(tier.WeightOffset[b]) {
							t.Fatalf("b=%d block %d byte %d: got %d, want %d−%d", b, sb, i, got, v, tier.WeightOffset[b])
						}
					}
				}
			}
		}
	})
}

// naiveDot is the twin of every DotFunc (weights interpreted as unsigned, or
// as int8 when the tier's unpacker applied an offset).
func naiveDot(acc []int32, w []byte, x []int8, ldx, rows, groups int, signed bool) {
	for r := 0; r < rows; r++ {
		for j := 0; j < 16; j++ {
			for k := 0; k < groups*4; k++ {
				wv := int32(w[k/4*64+j*4+k%4])
				if signed {
					wv = int32(int8(w[k/4*64+j*4+k%4]))
				}
				acc[r*16+j] += wv * int32(x[r*ldx+k])
			}
		}
	}
}

func TestDotTwins(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	forEachTier(t, func(t *testing.T, tier *kabi.Table) {
		for b := 1; b <= 8; b++ {
			signed := tier.WeightOffset[b] != 0
			// Rows hit every register block (VNNI: 16, 8, 4, 1; AVX2: 4, 1), groups odd and even.
			for _, sh := range [][2]int{{1, 1}, {3, 5}, {4, 8}, {9, 3}, {17, 40}, {16, 2}, {29, 7}, {31, 1}, {48, 6}, {12, 3}} {
				rows, groups := sh[0], sh[1]
				ldx := groups*4 + 5
				w := make([]byte, groups*64)
				x := make([]int8, rows*ldx)
				for i := range w {
					w[i] = byte(rng.IntN(1<<b)) - byte(tier.WeightOffset[b])
				}
				for i := range x {
					x[i] = int8(rng.IntN(255) - 127)
				}
				// Extremes on a few rows: all ±127 against the largest weights.
				for i := range groups * 4 {
					x[i] = 127
					if rows > 1 {
						x[ldx+i] = -127
					}
				}
				for i := range 64 {
					w[i] = byte(1<<b-1) - byte(tier.WeightOffset[b])
				}
				got := make([]int32, rows*16)
				want := make([]int32, rows*16)
				for i := range got {
					got[i] = int32(i) * 7
					want[i] = got[i]
				}
				tier.Dot[b](got, w, x, ldx, rows, groups)
				naiveDot(want, w, x, ldx, rows, groups, signed)
				for i := range got {
					if got[i] != want[i] {
						t.Fatalf("b=%d rows=%d groups=%d: acc[%d] = %d, want %d", b, rows, groups, i, got[i], want[i])
					}
				}
			}
		}
	})
}

// TestFusedTwins checks every tier's fused unpack+dot kernels against
// qformat.UnpackBlock and naiveDot, with extreme weights and activations.
func TestFusedTwins(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	forEachTier(t, func(t *testing.T, tier *kabi.Table) {
		for b := 1; b <= 8; b++ {
			fused := tier.Fused[b]
			if fused == nil {
				continue
			}
			off := tier.WeightOffset[b]
			for _, sh := range [][2]int{{1, 1}, {3, 2}, {4, 1}, {5, 3}, {9, 4}, {17, 2}} {
				rows, blocks := sh[0], sh[1]
				for _, extreme := range []bool{false, true} {
					ldx := blocks*qformat.BlockK + 5
					src := make([]byte, blocks*qformat.BlockBytes(b)+3)
					x := make([]int8, (rows-1)*ldx+blocks*qformat.BlockK)
					for i := range src {
						src[i] = byte(rng.Uint32())
						if extreme {
							src[i] = 0xff
						}
					}
					for i := range x {
						x[i] = int8(rng.IntN(255) - 127)
						if extreme {
							x[i] = 127
							if (i/ldx)%2 == 1 {
								x[i] = -127
							}
						}
					}
					w := make([]byte, blocks*qformat.BlockWeights)
					var blk [qformat.BlockWeights]uint8
					for sb := 0; sb < blocks; sb++ {
						qformat.UnpackBlock(&blk, src[sb*qformat.BlockBytes(b):], b)
						for i, v := range blk {
							w[sb*qformat.BlockWeights+i] = v - uint8(off)
						}
					}
					got := make([]int32, rows*16)
					want := make([]int32, rows*16)
					for i := range got {
						got[i] = int32(i)*7 - 50
						want[i] = got[i]
					}
					fused(got, src, x, ldx, rows, blocks)
					naiveDot(want, w, x, ldx, rows, blocks*qformat.GroupsPerBlock, off != 0)
					for i := range got {
						if got[i] != want[i] {
							t.Fatalf("b=%d rows=%d blocks=%d extreme=%v: acc[%d] = %d, want %d", b, rows, blocks, extreme, i, got[i], want[i])
						}
					}
				}
			}
		}
	})
}

func TestActivationTwins(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	forEachTier(t, func(t *testing.T, tier *kabi.Table) {
		for n := 0; n < 200; n += 1 + n/7 {
			x := make([]float32, n)
			for i := range x {
				switch rng.IntN(4) {
				case 0: // exact half-way points of the rounding
					x[i] = (float32(rng.IntN(254)) - 127 + 0.5) / 127 * 3
				default:
					x[i] = float32(rng.NormFloat64() * 3)
				}
			}
			if n > 3 {
				x[n/2] = -3 // maxabs → −127
			}
			if got, want := tier.MaxAbs(x), qformat.MaxAbs(x); got != want {
				t.Fatalf("n=%d: MaxAbs %g, want %g", n, got, want)
			}
			inv, _ := qformat.ActInv(qformat.MaxAbs(x))
			got := make([]int8, n)
			sum := tier.QuantRow(got, x, inv)
			want := make([]int8, n)
			var wsum int32
			for i, v := range x {
				want[i] = qformat.QuantizeAct(v, inv)
				wsum += int32(want[i])
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("n=%d: q[%d] = %d, want %d (x=%g inv=%g)", n, i, got[i], want[i], x[i], inv)
				}
			}
			if sum != wsum {
				t.Fatalf("n=%d: sum %d, want %d", n, sum, wsum)
			}
		}
	})
}

type shape struct{ M, K, N int }

func randomLayer(rng *rand.Rand, n, k int, tileBits []uint8) (*QLinear, error) {
	w := make([]float32, n*k)
	for i := range w {
		w[i] = float32(rng.NormFloat64()) * 0.1
	}
	bias := make([]float32, n)
	for i := range bias {
		bias[i] = float32(rng.NormFloat64())
	}
	return QuantizeLinear(w, n, k, tileBits, qformat.MinMax, bias)
}

func randomX(rng *rand.Rand, m, k int) []float32 {
	x := make([]float32, m*k)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// checkLayer compares every usable tier with the reference on one layer.
func checkLayer(t *testing.T, l *QLinear, x []float32, M int, tag string) {
	t.Helper()
	wantY, xq, wantAcc, err := ReferenceForward(l.W, l.Bias, x, M)
	if err != nil {
		t.Fatal(err)
	}
	N := l.W.N
	for _, bt := range backend.Usable() {
		tier := tables[bt]
		y := make([]float32, M*N)
		if err := l.forward(tier, y, x, M); err != nil {
			t.Fatal(err)
		}
		if lastTier.Load() != tier {
			t.Fatalf("%s: backend %s ran, want %s", tag, lastTier.Load().Name(), tier.Name())
		}
		var a Activations
		a.resize(M, l.W.K)
		quantizeRows(tier, &a, x, 0, M)
		for m := 0; m < M; m++ {
			for k := 0; k < l.W.K; k++ {
				if a.Q[m*a.KP+k] != xq[m*l.W.K+k] {
					t.Fatalf("%s %s: activation [%d,%d] differs", tag, tier.Name(), m, k)
				}
			}
		}
		acc := make([]int32, M*N)
		if err := l.accumulate(tier, acc, &a); err != nil {
			t.Fatal(err)
		}
		for i := range acc {
			if acc[i] != wantAcc[i] {
				t.Fatalf("%s %s: acc[%d,%d] = %d, want %d", tag, tier.Name(), i/N, i%N, acc[i], wantAcc[i])
			}
			if d := math.Abs(float64(y[i] - wantY[i])); d > 1e-5*math.Max(1, math.Abs(float64(wantY[i]))) {
				t.Fatalf("%s %s: y[%d] = %g, want %g", tag, tier.Name(), i, y[i], wantY[i])
			}
		}
	}
}

func TestQLinearShapes(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	shapes := []shape{{1, 3, 1}, {2, 70, 17}, {3, 97, 33}, {7, 130, 16}, {196, 66, 40}, {197, 35, 24}, {5, 3072, 20}, {9, 1000, 48}}
	for b := 1; b <= 8; b++ {
		for _, s := range shapes {
			l, err := randomLayer(rng, s.N, s.K, qformat.UniformBits(s.N, b))
			if err != nil {
				t.Fatal(err)
			}
			checkLayer(t, l, randomX(rng, s.M, s.K), s.M, fmt.Sprintf("b=%d %dx%dx%d", b, s.M, s.K, s.N))
		}
	}
}

func TestQLinearExtremes(t *testing.T) {
	for b := 1; b <= 8; b++ {
		qmax := uint8(1<<b - 1)
		for _, z := range []int32{0, int32(qmax)} {
			M, K, N := 3, 3072, 18
			q := make([]uint8, N*K)
			for i := range q {
				q[i] = qmax
				if z != 0 {
					q[i] = 0
				}
			}
			scale := make([]float32, N)
			zero := make([]int32, N)
			for i := range scale {
				scale[i], zero[i] = 1, z
			}
			m, err := qformat.Pack(q, N, K, qformat.UniformBits(N, b), scale, zero)
			if err != nil {
				t.Fatal(err)
			}
			l, err := NewQLinear(m, nil)
			if err != nil {
				t.Fatal(err)
			}
			x := make([]float32, M*K)
			for i := 0; i < K; i++ {
				x[i] = 1                        // row 0: all +127
				x[K+i] = -1                     // row 1: all −127
				x[2*K+i] = float32(1 - 2*(i&1)) // row 2: ±127
			}
			checkLayer(t, l, x, M, fmt.Sprintf("extreme b=%d z=%d", b, z))
			var a Activations
			QuantizeActivations(&a, x, M, K)
			acc := make([]int32, M*N)
			l.Accumulate(acc, &a)
			want := int32(qmax) * 127 * int32(K)
			if z != 0 {
				want = -want // q = 0 against zero point qmax
			}
			if acc[0] != want || acc[N] != -want || acc[2*N] != 0 {
				t.Fatalf("b=%d z=%d: extreme accumulators %d %d %d, want ±%d, 0", b, z, acc[0], acc[N], acc[2*N], want)
			}
		}
	}
}

func TestMixedBitsLayer(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	tb := []uint8{1, 8, 3, 3, 5, 2, 7, 4, 6}
	N := len(tb)*16 - 5
	l, err := randomLayer(rng, N, 200, tb)
	if err != nil {
		t.Fatal(err)
	}
	checkLayer(t, l, randomX(rng, 13, 200), 13, "mixed")
}

func TestThreads(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	M, K, N := 300, 256, 64
	l, err := randomLayer(rng, N, K, qformat.UniformBits(N, 4))
	if err != nil {
		t.Fatal(err)
	}
	x := randomX(rng, M, K)
	y1 := make([]float32, M*N)
	y4 := make([]float32, M*N)
	defer backend.SetThreads(backend.SetThreads(1))
	l.Forward(y1, x, M)
	backend.SetThreads(4)
	l.Forward(y4, x, M)
	for i := range y1 {
		if y1[i] != y4[i] {
			t.Fatalf("threads change y[%d]: %g vs %g", i, y1[i], y4[i])
		}
	}
}

func TestMaxK(t *testing.T) {
	K := qformat.MaxK + 1
	m, err := qformat.Pack(make([]uint8, 16*K), 16, K, qformat.UniformBits(16, 1), make([]float32, 16), make([]int32, 16))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewQLinear(m, nil); err == nil {
		t.Fatalf("K = %d accepted", K)
	}
}

func TestErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(19, 20))
	l, _ := randomLayer(rng, 16, 32, qformat.UniformBits(16, 2))
	if l.Forward(make([]float32, 16), make([]float32, 31), 1) == nil {
		t.Fatal("short x accepted")
	}
	if l.Forward(make([]float32, 15), make([]float32, 32), 1) == nil {
		t.Fatal("short dst accepted")
	}
	y := make([]float32, 32)
	if err := FakeQuantize(y, []float32{1, 0.5, -1, 0}, 1, 4); err != nil || y[1] != 64.0/127 {
		t.Fatalf("fake quant %v %v", err, y[:4])
	}
}

func FuzzQLinear(f *testing.F) {
	f.Add(uint64(1), uint8(3), uint16(5), uint16(40), uint8(17), uint8(0))
	f.Add(uint64(2), uint8(8), uint16(196), uint16(3), uint8(1), uint8(1))
	f.Fuzz(func(t *testing.T, seed uint64, b uint8, m, k uint16, n uint8, mixed uint8) {
		bits := int(b)%8 + 1
		M, K, N := int(m)%260, int(k)%700+1, int(n)%70+1
		rng := rand.New(rand.NewPCG(seed, 99))
		tb := qformat.UniformBits(N, bits)
		if mixed&1 != 0 {
			for i := range tb {
				tb[i] = uint8(rng.IntN(8) + 1)
			}
		}
		l, err := randomLayer(rng, N, K, tb)
		if err != nil {
			t.Fatal(err)
		}
		x := randomX(rng, M, K)
		wantY, _, wantAcc, err := ReferenceForward(l.W, l.Bias, x, M)
		if err != nil {
			t.Fatal(err)
		}
		y := make([]float32, M*N)
		if err := l.Forward(y, x, M); err != nil {
			t.Fatal(err)
		}
		var a Activations
		QuantizeActivations(&a, x, M, K)
		acc := make([]int32, M*N)
		l.Accumulate(acc, &a)
		for i := range y {
			if acc[i] != wantAcc[i] || y[i] != wantY[i] {
				t.Fatalf("%s: [%d] acc %d/%d y %g/%g", backend.Active(), i, acc[i], wantAcc[i], y[i], wantY[i])
			}
		}
	})
}

func TestEpilogueTwins(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	forEachTier(t, func(t *testing.T, tier *kabi.Table) {
		rows, ldy := 5, 19
		acc := make([]int32, rows*16)
		sum := make([]int32, rows)
		sx := make([]float32, rows)
		zs := make([]int32, 16)
		sw := make([]float32, 16)
		bias := make([]float32, 16)
		for i := range acc {
			acc[i] = int32(rng.IntN(1<<24)) - 1<<23
		}
		for i := range sum {
			sum[i], sx[i] = int32(rng.IntN(20000))-10000, rng.Float32()
		}
		for j := range zs {
			zs[j], sw[j], bias[j] = int32(rng.IntN(256))-128, rng.Float32(), float32(rng.NormFloat64())
		}
		y := make([]float32, (rows-1)*ldy+16)
		tier.Epilogue(y, ldy, acc, rows, sum, sx, zs, sw, bias)
		for r := 0; r < rows; r++ {
			for j := 0; j < 16; j++ {
				want := output(acc[r*16+j]-zs[j]*sum[r], sx[r], sw[j], bias[j])
				if y[r*ldy+j] != want {
					t.Fatalf("y[%d,%d] = %g, want %g", r, j, y[r*ldy+j], want)
				}
			}
		}
	})
}

// TestQuantizeActivationsPadded checks the whole-matrix activation quantizer
// (zero-padded rows when K is not a multiple of BlockK, split across
// goroutines for large M) against qformat.QuantizeRow, on every tier.
func TestQuantizeActivationsPadded(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	forEachTier(t, func(t *testing.T, tier *kabi.Table) {
		for _, mk := range [][2]int{{1, 1}, {3, 16}, {5, 31}, {2401, 16}, {7, 33}, {600, 130}, {4, 64}, {3, 8}, {9, 24}, {5, 40}, {2, 248}, {3, 256}, {2, 520}, {1, 3072}} {
			M, K := mk[0], mk[1]
			x := randomX(rng, M, K)
			for i := 0; i < M; i += 3 {
				clear(x[i*K : (i+1)*K]) // all-zero rows: scale 0
			}
			if M > 2 {
				x[K] = 1e-31 // a row below MinActScale
				for k := 1; k < K; k++ {
					x[K+k] = 0
				}
				for k := 0; k < K; k++ { // exact half-way points of the rounding
					x[2*K+k] = (float32(k%254) - 127 + 0.5) / 127 * 3
				}
				x[2*K] = -3
			}
			l, err := randomLayer(rng, 16, K, qformat.UniformBits(16, 4))
			if err != nil {
				t.Fatal(err)
			}
			a := new(Activations)
			a.resize(M, K)
			for i := range a.Q {
				a.Q[i] = 99 // the padding must be overwritten with zeros
			}
			l.quantize(tier, a, x)
			want := make([]int8, a.KP)
			for m := 0; m < M; m++ {
				scale, sum := qformat.QuantizeRow(want, x[m*K:(m+1)*K])
				if a.Scale[m] != scale || a.Sum[m] != sum {
					t.Fatalf("M=%d K=%d row %d: scale, sum = %g, %d, want %g, %d", M, K, m, a.Scale[m], a.Sum[m], scale, sum)
				}
				for k, v := range want {
					if got := a.Q[m*a.KP+k]; got != v {
						t.Fatalf("M=%d K=%d row %d: q[%d] = %d, want %d", M, K, m, k, got, v)
					}
				}
			}
		}
	})
}
