package kernels

import (
	"runtime"
	"testing"
	"time"

	"github.com/flbq/flbq/runtime/cputime"
)

// cpuLoop runs f b.N times on a locked OS thread and reports the thread's
// CPU time per op ("cpu-ns/op"; 0 off Linux), which the load of other processes on a
// shared machine perturbs far less than wall time.
func cpuLoop(b *testing.B, f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var cpu time.Duration
	for b.Loop() {
		t0 := cputime.Thread()
		f()
		cpu += cputime.Thread() - t0
	}
	b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
}
