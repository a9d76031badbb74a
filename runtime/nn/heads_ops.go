package nn

// ReLU applies max(x, 0) in place (torch.relu; NaN stays NaN), split
// across backend.Threads() goroutines for large inputs.
func ReLU(x []float32) {
	ParallelFor(len(x), 1<<15, func(lo, hi int) { ReLUSerial(x[lo:hi]) })
}

// ReLUSerial is ReLU on the calling goroutine.
func ReLUSerial(x []float32) {
	for i, v := range x {
		if v < 0 {
			x[i] = 0
		}
	}
}
