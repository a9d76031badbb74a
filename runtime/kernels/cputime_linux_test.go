package kernels

import (
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// threadCPU returns the calling thread's CPU time in nanoseconds.
func threadCPU() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) != nil {
		return 0
	}
	return ts.Nano()
}

// cpuLoop runs f b.N times on a locked OS thread and reports the thread's
// CPU time per op ("cpu-ns/op"), which the load of other processes on a
// shared machine perturbs far less than wall time.
func cpuLoop(b *testing.B, f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var cpu int64
	for b.Loop() {
		t0 := threadCPU()
		f()
		cpu += threadCPU() - t0
	}
	b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
}
