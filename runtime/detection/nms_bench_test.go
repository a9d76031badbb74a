package detection

import (
	"math/rand"
	"testing"
)

// randomBoxes returns n boxes of 10–200 px in a 512×512 image and scores.
func randomBoxes(r *rand.Rand, n int) ([]float32, []float32) {
	b := make([]float32, 4*n)
	s := make([]float32, n)
	for i := 0; i < n; i++ {
		x, y := r.Float32()*500, r.Float32()*500
		w, h := 10+r.Float32()*190, 10+r.Float32()*190
		b[4*i], b[4*i+1], b[4*i+2], b[4*i+3] = x, y, x+w, y+h
		s[i] = r.Float32()
	}
	return b, s
}

// BenchmarkNMS is one class of Mask R-CNN's post-processing at
// box_score_thresh 0: 1000 proposals, IoU 0.5.
//
//	go test ./runtime/detection -run '^$' -bench NMS -cpu 1
func BenchmarkNMS(b *testing.B) {
	boxes, scores := randomBoxes(rand.New(rand.NewSource(1)), 1000)
	order := ArgsortDesc(scores)
	for b.Loop() {
		nmsSorted(boxes, order, 0.5)
	}
}
