// Package cputime reads CPU clocks for benchmarks: on a shared machine the
// CPU time of the measured code moves far less with other processes' load
// than wall time does.
package cputime

import "time"

// Thread returns the calling OS thread's CPU time (0 where the platform
// has no per-thread clock); pin the goroutine with runtime.LockOSThread
// around a measurement.
func Thread() time.Duration { return thread() }

// Process returns the process's user+system CPU time (0 where unsupported).
func Process() time.Duration { return process() }
