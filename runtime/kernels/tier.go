// Package kernels runs quantized linear layers (F-LBQ weights of 1–8 bits per
// channel tile, int8 dynamic activations) on the generated micro-kernels of
// generated/kernels. It owns the kernel ABI as seen by the model runtime:
// the activation quantizer, multi-threaded GEMM, the per-layer QLinear type
// and a pure-Go reference oracle; the micro-kernels' ABI is runtime/kernels/kabi.
//
// The computation, for a weight matrix packed by runtime/qformat, is
//
//	y[m,n] = sx[m]·sw[n]·(Σk q[n,k]·x[m,k] − z[n]·Σk x[m,k]) + bias[n]
//
// with the integer part accumulated exactly in int32 (K ≤ qformat.MaxK).
//
// # Tiers and threads
//
// Every call runs the kernel table of the tier that runtime/backend reports
// active ("vnni": AVX-512 VNNI VPDPBUSD, "avx2": VPMADDUBSW+VPMADDWD, "purego")
// and splits its work across at most backend.Threads() goroutines. Every tier
// computes bit-identical int32 accumulators and float32 outputs.
package kernels

import (
	gk "github.com/flbq/flbq/generated/kernels"
	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/kernels/kabi"
)

// tables[t] is the kernel table that tier t runs: its own, or the best
// compiled one below it.
var tables = func() (ts [backend.VNNI + 1]*kabi.Table) {
	for t := backend.PureGo; t <= backend.VNNI; t++ {
		for _, tab := range gk.Tables {
			if tab.Tier <= t && (ts[t] == nil || tab.Tier > ts[t].Tier) {
				ts[t] = tab
			}
		}
	}
	return ts
}()

// table returns the kernel table of the active backend tier.
func table() *kabi.Table { return tables[backend.Active()] }

// Peak runs the register-only int8 multiply-accumulate loop of tier t for
// iters iterations and returns the multiply-accumulates performed (0 if the
// tier has no peak loop or this CPU cannot run it).
func Peak(t backend.Tier, iters int) int64 {
	if !backend.CanRun(t) || iters <= 0 || t > backend.VNNI {
		return 0
	}
	tab := tables[t]
	if tab.Tier != t || tab.Peak == nil {
		return 0
	}
	tab.Peak(iters)
	return int64(iters) * int64(tab.PeakMACs)
}
