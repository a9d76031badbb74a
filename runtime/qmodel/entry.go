package qmodel

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	gk "github.com/flbq/flbq/generated/kernels"
	"github.com/flbq/flbq/runtime/kernels"
	"github.com/flbq/flbq/runtime/qformat"
)

// Entry is a layer's specialised entry point in a generated package: the
// layer's shape as constants and Tiles, a generated function that runs the
// layer's runs of bit-widths on one block of rows by calling Block.Run once
// per run (tile range and bit-width as constants).
type Entry struct {
	N, K  int
	Tiles func(b *Block)
}

// Tuning of the entry driver; the same values as runtime/kernels' generic
// path (results are exact integers either way, so they never change outputs).
const (
	kChunk       = 512       // depth unpacked at once (kChunk·16 bytes stay in L1)
	xSlabBytes   = 256 << 10 // activation rows of one block (kept in L2)
	maxRowBlock  = 512
	fusedMaxRows = 16      // fused unpack+dot up to this many rows
	parallelMACs = 1 << 19 // below: one goroutine
)

// Block is one block of activation rows and a range of tiles of a layer,
// handed to Entry.Tiles. Its methods use the generated micro-kernels of
// the active tier directly.
type Block struct {
	tier     *gk.Tier
	w        *qformat.Matrix
	bias     []float32
	a        *kernels.Activations // rows m0.. of the layer's input
	dst      []float32            // row m0 of the output
	n        int
	tile0    int // tiles [tile0, tile1) are this block's share
	tile1    int
	ws       *entryScratch
	recorded []uint8 // when not nil, Run only records the bit-widths
}

type entryScratch struct {
	unp  []byte
	acc  []int32
	zs   [qformat.TileN]int32
	bias [qformat.TileN]float32
}

var scratchPool = sync.Pool{New: func() any {
	return &entryScratch{unp: qformat.AlignedBytes(kChunk * qformat.TileN), acc: make([]int32, maxRowBlock*qformat.TileN)}
}}

// Run computes the outputs of tiles [tile0, tile1) (16 channels each), all
// at bits bits, for the block's rows.
func (b *Block) Run(tile0, tile1, bits int) {
	if b.recorded != nil {
		for t := tile0; t < tile1 && t < len(b.recorded); t++ {
			b.recorded[t] = uint8(bits)
		}
		return
	}
	tile0, tile1 = max(tile0, b.tile0), min(tile1, b.tile1)
	t, a, w, ws := b.tier, b.a, b.w, b.ws
	rows, KP := a.M, a.KP
	off := t.WeightOffset[bits]
	fused := t.Fused[bits]
	if rows > fusedMaxRows {
		fused = nil
	}
	unpack, dot := t.Unpack[bits], t.Dot[bits]
	bb := qformat.BlockBytes(bits)
	acc := ws.acc[:rows*qformat.TileN]
	for tile := tile0; tile < tile1; tile++ {
		data := w.Tile(tile)
		clear(acc)
		if fused != nil {
			fused(acc, data, a.Q, KP, rows, KP/qformat.BlockK)
		} else {
			for k0 := 0; k0 < KP; k0 += kChunk {
				kc := min(kChunk, KP-k0)
				unpack(ws.unp, data[k0/qformat.BlockK*bb:], kc/qformat.BlockK)
				groups := kc / qformat.KGroup
				if k0+kc > a.K { // skip all-padding k-groups
					groups = (a.K - k0 + qformat.KGroup - 1) / qformat.KGroup
				}
				dot(acc, ws.unp, a.Q[k0:], KP, rows, groups)
			}
		}
		b.epilogue(tile, acc, off)
	}
}

// epilogue is runtime/kernels' QLinear epilogue: scales, zero points, bias.
func (b *Block) epilogue(tile int, acc []int32, off int32) {
	w, a, ws, N := b.w, b.a, b.ws, b.n
	n0 := tile * qformat.TileN
	nn := min(qformat.TileN, N-n0)
	for j := range ws.zs {
		ws.zs[j] = w.Zero[n0+j] - off
	}
	clear(ws.bias[:])
	if b.bias != nil {
		copy(ws.bias[:], b.bias[n0:n0+nn])
	}
	if nn == qformat.TileN {
		b.tier.Epilogue(b.dst[n0:], N, acc, a.M, a.Sum, a.Scale, ws.zs[:], w.Scale[n0:], ws.bias[:])
		return
	}
	for r := 0; r < a.M; r++ {
		for j := 0; j < nn; j++ {
			// The conversion forbids a fused multiply-add, as in runtime/kernels.
			b.dst[r*N+n0+j] = float32(float32(acc[r*qformat.TileN+j]-ws.zs[j]*a.Sum[r])*(a.Scale[r]*w.Scale[n0+j])) + ws.bias[j]
		}
	}
}

// activeTier is the generated tier runtime/kernels currently uses.
func activeTier() *gk.Tier {
	name := kernels.ActiveTier()
	for _, t := range gk.Tiers {
		if t.Name == name {
			return t
		}
	}
	panic("qmodel: no generated tier " + name)
}

// checkEntry verifies a generated entry point against the packed layer:
// same shape, and its runs give every tile the blob's bit-width.
func checkEntry(name string, e Entry, w *qformat.Matrix) error {
	if e.Tiles == nil || e.N != w.N || e.K != w.K {
		return fmt.Errorf("layer %s: entry point has N=%d K=%d, the blob N=%d K=%d", name, e.N, e.K, w.N, w.K)
	}
	b := Block{recorded: make([]uint8, len(w.TileBits))}
	e.Tiles(&b)
	for t, bits := range w.TileBits {
		if b.recorded[t] != bits {
			return fmt.Errorf("layer %s: entry point runs tile %d at %d bits, the blob packs it at %d", name, t, b.recorded[t], bits)
		}
	}
	return nil
}

// entryOp runs a layer through its generated entry point: the rows are cut
// into blocks (and, when there are fewer blocks than threads, the tiles
// into ranges); each block's activations are quantized once and then run
// through every tile of its range.
type entryOp struct {
	e    Entry
	q    *kernels.QLinear
	acts sync.Pool // *[]kernels.Activations, one per row block
}

func (o *entryOp) Forward(dst, x []float32, M int) {
	N, K, w := o.e.N, o.e.K, o.q.W
	if M < 0 || len(x) < M*K || len(dst) < M*N {
		panic(fmt.Sprintf("qmodel: layer N=%d K=%d: len(x) = %d, len(dst) = %d for M = %d", N, K, len(x), len(dst), M))
	}
	if M == 0 {
		return
	}
	t := activeTier()
	KP := qformat.PaddedK(K)
	tiles := qformat.PaddedN(N) / qformat.TileN
	mc := min(min(max(xSlabBytes/KP, 16), maxRowBlock)&^7, M)
	blocks := (M + mc - 1) / mc
	threads := runtime.GOMAXPROCS(0)
	if int64(M)*int64(tiles*qformat.TileN)*int64(KP) < parallelMACs {
		threads = 1
	}
	split := 1 // tile ranges per row block
	if blocks < threads {
		split = min((threads+blocks-1)/blocks, tiles)
	}
	ap, _ := o.acts.Get().(*[]kernels.Activations)
	if ap == nil {
		ap = new([]kernels.Activations)
	}
	if len(*ap) < blocks {
		*ap = make([]kernels.Activations, blocks)
	}
	acts := *ap
	defer o.acts.Put(ap)
	quant := func(i int) {
		m0 := i * mc
		rows := min(mc, M-m0)
		if err := kernels.QuantizeActivations(&acts[i], x[m0*K:(m0+rows)*K], rows, K); err != nil {
			panic(err)
		}
	}
	item := func(i int, ws *entryScratch) {
		bi, s := i/split, i%split
		b := Block{tier: t, w: w, bias: o.q.Bias, a: &acts[bi], dst: dst[bi*mc*N:], n: N,
			tile0: tiles * s / split, tile1: tiles * (s + 1) / split, ws: ws}
		o.e.Tiles(&b)
	}
	items := blocks * split
	if threads = min(threads, items); threads <= 1 {
		ws := scratchPool.Get().(*entryScratch)
		for i := 0; i < blocks; i++ {
			quant(i)
		}
		for i := 0; i < items; i++ {
			item(i, ws)
		}
		scratchPool.Put(ws)
		return
	}
	parallel(threads, blocks, func(i int, _ *entryScratch) { quant(i) })
	parallel(threads, items, item)
}

// parallel runs f(0..n-1) on threads goroutines (the caller's included).
func parallel(threads, n int, f func(i int, ws *entryScratch)) {
	var next atomic.Int64
	run := func() {
		ws := scratchPool.Get().(*entryScratch)
		defer scratchPool.Put(ws)
		for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
			f(i, ws)
		}
	}
	var wg sync.WaitGroup
	for g := 1; g < threads; g++ {
		wg.Add(1)
		go func() { defer wg.Done(); run() }()
	}
	run()
	wg.Wait()
}
