package qmodel_test

import (
	"testing"

	"github.com/flbq/flbq/generated/shapesswin"
)

// BenchmarkGeneratedNew times the bundled model's generated constructor:
// parse the embedded blob, dequantize the 8-bit heads, build the detector.
func BenchmarkGeneratedNew(b *testing.B) {
	for b.Loop() {
		if _, err := shapesswin.New(); err != nil {
			b.Fatal(err)
		}
	}
}
