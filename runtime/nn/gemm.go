package nn

import (
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/internal/bufpool"
)

// Register tile of the fp32 micro-kernel: MR rows of A × NR columns of B.
const (
	MR = 6
	NR = 16
	kc = 256 // K blocking: one packed B panel block (kc×NR floats) stays in L1
)

// ParallelFor runs fn over [0,n) split into chunks of at least grain
// indices, on up to backend.Threads() goroutines (the caller's included). It
// returns when all chunks are done.
func ParallelFor(n, grain int, fn func(lo, hi int)) {
	if n <= 0 {
		return
	}
	if grain < 1 {
		grain = 1
	}
	workers := backend.Threads()
	chunks := (n + grain - 1) / grain
	if workers > chunks {
		workers = chunks
	}
	if workers <= 1 {
		fn(0, n)
		return
	}
	// Dynamic scheduling over ~4 chunks per worker for load balance.
	size := (n + workers*4 - 1) / (workers * 4)
	if size < grain {
		size = grain
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	work := func() {
		for {
			lo := int(next.Add(int64(size))) - size
			if lo >= n {
				return
			}
			hi := lo + size
			if hi > n {
				hi = n
			}
			fn(lo, hi)
		}
	}
	wg.Add(workers - 1)
	for w := 1; w < workers; w++ {
		go func() { defer wg.Done(); work() }()
	}
	work()
	wg.Wait()
}

// scratch holds per-call buffers (packed panels, im2col blocks,
// channels-last copies) across calls and garbage collections. Slices are
// never shared between concurrent calls.
var scratch bufpool.Slices[float32]

// GetScratch returns a float32 slice of length n (contents undefined).
func GetScratch(n int) *[]float32 { return scratch.Get(n) }

// PutScratch returns a slice obtained from GetScratch.
func PutScratch(p *[]float32) { scratch.Put(p) }

// PackedLen is the number of floats PackB needs for a K×N matrix.
func PackedLen(K, N int) int { return ((N + NR - 1) / NR) * NR * K }

// PackB packs the K×N matrix B into dst (length PackedLen(K, N)) as column
// panels of NR: dst[p*K*NR + k*NR + j] = B[k, p*NR+j], zero-padded. With
// transB, b holds Bᵀ (N×K row-major, ldb ≥ K), as torch Linear weights
// do; otherwise b is K×N row-major with ldb ≥ N.
func PackB(dst []float32, transB bool, K, N int, b []float32, ldb int) {
	panels := (N + NR - 1) / NR
	for p := 0; p < panels; p++ {
		packPanel(dst[p*K*NR:(p+1)*K*NR], transB, K, N, b, ldb, p*NR)
	}
}

func packPanel(dst []float32, transB bool, K, N int, b []float32, ldb int, j0 int) {
	w := N - j0
	if w > NR {
		w = NR
	}
	if transB {
		if w < NR {
			clear(dst)
		}
		dst = dst[:K*NR]
		k0 := 0
		if w == NR {
			k0 = packT16(dst, b[j0*ldb:], ldb, K) // full panels: 8×8 transposes where available
		}
		j := 0
		// Four source rows per sweep: one bounds check per 4 stores.
		for ; j+4 <= w; j += 4 {
			r0 := b[(j0+j)*ldb:][:K]
			r1 := b[(j0+j+1)*ldb:][:K]
			r2 := b[(j0+j+2)*ldb:][:K]
			r3 := b[(j0+j+3)*ldb:][:K]
			for k := k0; k < K; k++ {
				d := dst[k*NR+j : k*NR+j+4 : k*NR+j+4]
				d[0], d[1], d[2], d[3] = r0[k], r1[k], r2[k], r3[k]
			}
		}
		for ; j < w; j++ {
			row := b[(j0+j)*ldb:][:K]
			for k := k0; k < K; k++ {
				dst[k*NR+j] = row[k]
			}
		}
		return
	}
	for k := 0; k < K; k++ {
		d := dst[k*NR : k*NR+NR]
		src := b[k*ldb+j0 : k*ldb+j0+w]
		copy(d, src)
		if w < NR {
			clear(d[w:])
		}
	}
}

// Packed is a constant right-hand matrix (K×N) packed once for repeated
// products, e.g. a Linear layer's weight.
type Packed struct {
	K, N int
	Data []float32
}

// NewPacked packs B (see PackB for the layout of b).
func NewPacked(transB bool, K, N int, b []float32, ldb int) *Packed {
	p := &Packed{K: K, N: N, Data: make([]float32, PackedLen(K, N))}
	PackB(p.Data, transB, K, N, b, ldb)
	return p
}

// MulPacked computes C[M×N] = A[M×K]·B (+ C when accumulate) for a packed
// B, on one goroutine. A is row-major with leading dimension lda, C with ldc.
func MulPacked(M int, a []float32, lda int, bp []float32, K, N int, c []float32, ldc int, accumulate bool) {
	if M == 0 || N == 0 {
		return
	}
	if K == 0 {
		if !accumulate {
			for i := 0; i < M; i++ {
				clear(c[i*ldc : i*ldc+N])
			}
		}
		return
	}
	panels := (N + NR - 1) / NR
	if M > 1 && (lda < K || ldc < N) {
		panic(fmt.Sprintf("nn.MulPacked: M=%d K=%d N=%d with lda=%d ldc=%d (want lda ≥ K, ldc ≥ N)", M, K, N, lda, ldc))
	}
	// These checks cover every tile: the full 6×16 tiles run the unchecked
	// micro-kernel on pointers (a checked call per tile cost 2–4% CPU time
	// on attention-sized products), the edge tiles copy through Go slices.
	_ = a[(M-1)*lda+K-1]
	_ = c[(M-1)*ldc+N-1]
	_ = bp[panels*K*NR-1]
	// Edge tiles: partial panels compute into tmpC; row tails also copy
	// their A strip (zero-padded) into tmpA, taken from the pool only when
	// needed (a zeroed stack array would cost a 6 KiB clear per call, which
	// the small attention products pay on every head).
	var tmpC [MR * NR]float32
	var tmpA *[]float32
	avx2 := fp32AVX2() // once per product: one kernel for all its tiles
	for k0 := 0; k0 < K; k0 += kc {
		kb := K - k0
		if kb > kc {
			kb = kc
		}
		acc := accumulate || k0 > 0
		for p := 0; p < panels; p++ {
			bpp := &bp[p*K*NR+k0*NR]
			j0 := p * NR
			w := N - j0
			if w > NR {
				w = NR
			}
			i := 0
			if w == NR {
				for ; i+MR <= M; i += MR {
					kernel(avx2, kb, &a[i*lda+k0], lda, bpp, &c[i*ldc+j0], ldc, acc)
				}
			}
			for ; i < M; i += MR {
				h := M - i
				if h > MR {
					h = MR
				}
				ap, la := &a[i*lda+k0], lda
				if h < MR {
					if tmpA == nil {
						tmpA = GetScratch(MR * kc)
					}
					ta := *tmpA
					for r := 0; r < MR; r++ {
						dst := ta[r*kb : r*kb+kb]
						if r < h {
							copy(dst, a[(i+r)*lda+k0:(i+r)*lda+k0+kb])
						} else {
							clear(dst)
						}
					}
					ap, la = &ta[0], kb
				}
				if acc {
					for r := 0; r < h; r++ {
						copy(tmpC[r*NR:r*NR+w], c[(i+r)*ldc+j0:(i+r)*ldc+j0+w])
					}
				}
				kernel(avx2, kb, ap, la, bpp, &tmpC[0], NR, acc)
				for r := 0; r < h; r++ {
					copy(c[(i+r)*ldc+j0:(i+r)*ldc+j0+w], tmpC[r*NR:r*NR+w])
				}
			}
		}
	}
	if tmpA != nil {
		PutScratch(tmpA)
	}
}

// MatMul computes C = A·B (+C when accumulate) on one goroutine; B is
// K×N (transB false, leading dim ldb) or given as Bᵀ (N×K, transB true).
// It packs B into pooled scratch.
func MatMul(transB bool, M, N, K int, a []float32, lda int, b []float32, ldb int, c []float32, ldc int, accumulate bool) {
	if M == 0 || N == 0 {
		return
	}
	s := GetScratch(PackedLen(K, N))
	PackB(*s, transB, K, N, b, ldb)
	MulPacked(M, a, lda, *s, K, N, c, ldc, accumulate)
	PutScratch(s)
}

// rowBlockFor picks the rows per parallel task: large enough that each
// packed B panel (kc×NR, in L1) is reused over many row strips, small
// enough to give every goroutine several tasks.
func rowBlockFor(M, workers int) int {
	rb := (M + 4*workers - 1) / (4 * workers)
	rb = (rb + MR - 1) / MR * MR
	return min(max(rb, 4*MR), 20*MR)
}

// MulPackedParallel is MulPacked split across backend.Threads() goroutines (by
// row blocks, or by column panels when M is small).
func MulPackedParallel(M int, a []float32, lda int, p *Packed, c []float32, ldc int, accumulate bool) {
	K, N := p.K, p.N
	panels := (N + NR - 1) / NR
	if M >= 4*MR*backend.Threads() || panels == 1 {
		rowBlock := rowBlockFor(M, backend.Threads())
		ParallelFor((M+rowBlock-1)/rowBlock, 1, func(lo, hi int) {
			r0, r1 := lo*rowBlock, hi*rowBlock
			if r1 > M {
				r1 = M
			}
			MulPacked(r1-r0, a[r0*lda:], lda, p.Data, K, N, c[r0*ldc:], ldc, accumulate)
		})
		return
	}
	ParallelFor(panels, 1, func(lo, hi int) {
		j0 := lo * NR
		j1 := hi * NR
		if j1 > N {
			j1 = N
		}
		MulPacked(M, a, lda, p.Data[lo*K*NR:], K, j1-j0, c[j0:], ldc, accumulate)
	})
}

// kernelGo is the pure-Go twin of the micro-kernel vecmath.Sgemm6x16:
// C[MR×NR] (+)= A[MR×k] (leading dim lda) · Bp[k×NR] (one packed panel),
// multiplying and adding (two roundings) where the assembly fuses them.
func kernelGo(k int, a *float32, lda int, b *float32, c *float32, ldc int, acc bool) {
	A := unsafe.Slice(a, (MR-1)*lda+k)
	B := unsafe.Slice(b, k*NR)
	C := unsafe.Slice(c, (MR-1)*ldc+NR)
	var t [MR][NR]float32
	for kk := 0; kk < k; kk++ {
		bp := B[kk*NR : kk*NR+NR : kk*NR+NR]
		for r := 0; r < MR; r++ {
			av := A[r*lda+kk]
			tr := &t[r]
			for j := 0; j < NR; j++ {
				tr[j] += av * bp[j]
			}
		}
	}
	for r := 0; r < MR; r++ {
		row := C[r*ldc : r*ldc+NR]
		if acc {
			for j := range row {
				row[j] += t[r][j]
			}
		} else {
			copy(row, t[r][:])
		}
	}
}
