package coco_test

import (
	"bytes"
	"encoding/json"
	"sync"
	"testing"

	"github.com/flbq/flbq/runtime/coco"
	"github.com/flbq/flbq/tools/data/cocosynth"
)

// benchImages is the size of the in-memory benchmark set (the full 5,000
// image run goes through the CLI; see docs/BENCHMARKS.md).
const benchImages = 1000

var benchSet = sync.OnceValues(func() (*coco.Dataset, []coco.Result) {
	return cocosynth.Generate(cocosynth.Options{Images: benchImages, DetsPerImage: 100, Seed: 1})
})

func benchEvaluate(b *testing.B, typ coco.IoUType) {
	gt, dets := benchSet()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := coco.Evaluate(gt, dets, typ, coco.Options{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(gt.Images))/b.Elapsed().Seconds(), "images/s")
}

func BenchmarkEvaluateBBox(b *testing.B) { benchEvaluate(b, coco.BBox) }
func BenchmarkEvaluateSegm(b *testing.B) { benchEvaluate(b, coco.Segm) }

func BenchmarkDecodeResults(b *testing.B) {
	_, dets := benchSet()
	var buf bytes.Buffer
	if err := coco.EncodeResults(&buf, dets); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(buf.Len()))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := coco.DecodeResults(bytes.NewReader(buf.Bytes())); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeDataset(b *testing.B) {
	gt, _ := benchSet()
	data, err := json.Marshal(gt)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := coco.DecodeDataset(bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
}
