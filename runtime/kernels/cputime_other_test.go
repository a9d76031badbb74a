//go:build !linux

package kernels

import "testing"

// cpuLoop runs f b.N times (thread CPU time is reported on Linux only).
func cpuLoop(b *testing.B, f func()) {
	for b.Loop() {
		f()
	}
}
