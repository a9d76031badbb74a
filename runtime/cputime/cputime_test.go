package cputime

import (
	"runtime"
	"testing"
	"time"
)

// TestClocksAdvance checks that both clocks count a busy loop (Linux; the
// other platforms report 0): the thread clock must reach 10 ms within 10 s
// of wall time, and the process clock must have counted at least half of it
// (rusage ticks are coarser).
func TestClocksAdvance(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("CPU clocks are read on Linux only")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	t0, p0 := Thread(), Process()
	x := 1.0
	for start := time.Now(); Thread()-t0 < 10*time.Millisecond; {
		for i := 0; i < 1000; i++ {
			x = x*1.0000001 + 1e-9
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("thread CPU clock advanced %v in 10 s of busy loop (x=%g)", Thread()-t0, x)
		}
	}
	if dt, dp := Thread()-t0, Process()-p0; dp < dt/2 {
		t.Fatalf("busy loop: thread CPU %v but process CPU %v", dt, dp)
	}
}
