package kernels

import (
	"sync"
	"sync/atomic"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/kernels/kabi"
	"github.com/flbq/flbq/runtime/qformat"
)

const (
	// kChunk is the depth unpacked at once (kChunk·16 bytes stay in L1).
	kChunk = 512
	// xSlabBytes bounds the activation rows one work item sweeps (kept in L2).
	xSlabBytes = 256 << 10
	// parallelMACs is the problem size below which one goroutine is used.
	parallelMACs = 1 << 19
	maxRowBlock  = 512
	// fusedMaxRows is the most rows a work item runs through the fused
	// unpack+dot kernel; larger items amortize Unpack over more rows
	// (BenchmarkTile, thread CPU time: fused is 1.3–1.9× faster at 1 row
	// for b ≤ 6, about even at 4, and up to 1.5× slower at b = 5, 6 from
	// 256 rows on, where it re-unpacks two bit planes per block of 4 rows).
	fusedMaxRows = 16
)

// noFused disables the fused kernels (benchmarks compare both paths).
var noFused bool

// lastTier records the tier of the latest gemm call (tests assert it).
var lastTier atomic.Pointer[kabi.Table]

type workspace struct {
	unp []byte
	acc []int32
	// zs and bias hold one tile's epilogue operands (kept here rather than
	// on the stack, where passing them to a func value would heap-allocate).
	zs   [qformat.TileN]int32
	bias [qformat.TileN]float32
}

var wsPool = sync.Pool{New: func() any {
	return &workspace{unp: qformat.AlignedBytes(kChunk * qformat.TileN), acc: make([]int32, maxRowBlock*qformat.TileN)}
}}

// epilogue receives the accumulators acc[r·16+j] = Σk (q−off)·x for rows
// m0..m0+rows-1 and channels tile·16+j (off: the tier's weight offset).
type epilogue func(tile, m0, rows int, acc []int32, off int32, ws *workspace)

// rowBlock returns the rows of activations one work item handles.
func rowBlock(M, KP int) int {
	mc := xSlabBytes / KP
	mc = min(max(mc, 16), maxRowBlock) &^ 7
	return min(mc, M)
}

// gemm computes the exact accumulators of W·xᵀ for all rows and tiles with
// tier t on up to backend.Threads() goroutines and hands them to ep.
func gemm(t *kabi.Table, w *qformat.Matrix, a *Activations, ep epilogue) {
	lastTier.Store(t)
	M, KP := a.M, a.KP
	if M == 0 {
		return
	}
	nt := w.Tiles()
	mc := rowBlock(M, KP)
	mb := (M + mc - 1) / mc
	items := mb * nt
	threads := backend.Threads()
	if int64(M)*int64(nt*qformat.TileN)*int64(KP) < parallelMACs {
		threads = 1
	}
	threads = min(threads, items)
	run := func(next func() int) {
		ws := wsPool.Get().(*workspace)
		defer wsPool.Put(ws)
		for i := next(); i < items; i = next() {
			m0 := i / nt * mc
			tileItem(t, w, a, i%nt, m0, min(mc, M-m0), ws, ep)
		}
	}
	if threads <= 1 {
		i := -1
		run(func() int { i++; return i })
		return
	}
	var ctr atomic.Int64
	ctr.Store(-1)
	next := func() int { return int(ctr.Add(1)) }
	var wg sync.WaitGroup
	for g := 1; g < threads; g++ {
		wg.Add(1)
		go func() { defer wg.Done(); run(next) }()
	}
	run(next)
	wg.Wait()
}

// tileItem accumulates one tile over rows m0..m0+rows-1.
func tileItem(t *kabi.Table, w *qformat.Matrix, a *Activations, tile, m0, rows int, ws *workspace, ep epilogue) {
	b := int(w.TileBits[tile])
	data := w.Tile(tile)
	KP := a.KP
	acc := ws.acc[:rows*qformat.TileN]
	clear(acc)
	x := a.Q[m0*KP:]
	if fused := t.Fused[b]; fused != nil && rows <= fusedMaxRows && !noFused {
		// Few rows: unpack in registers, streaming the packed tile once per
		// block of rows instead of writing and re-reading an unpacked copy.
		fused(acc, data, x, KP, rows, KP/qformat.BlockK)
		ep(tile, m0, rows, acc, t.WeightOffset[b], ws)
		return
	}
	unpack, dot := t.Unpack[b], t.Dot[b]
	bb := qformat.BlockBytes(b)
	for k0 := 0; k0 < KP; k0 += kChunk {
		kc := min(kChunk, KP-k0)
		blocks := kc / qformat.BlockK
		unpack(ws.unp, data[k0/qformat.BlockK*bb:], blocks)
		groups := kc / qformat.KGroup
		if k0+kc > a.K {
			// Skip the k-groups that are all padding (zero activations):
			// with K = 16 that halves the work.
			groups = (a.K - k0 + qformat.KGroup - 1) / qformat.KGroup
		}
		dot(acc, ws.unp, x[k0:], KP, rows, groups)
	}
	ep(tile, m0, rows, acc, t.WeightOffset[b], ws)
}
