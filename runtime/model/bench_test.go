package model

import (
	"fmt"
	"math/rand"
	"testing"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/tensor"
)

// Real-size configurations (random weights) for speed benchmarks.
var (
	swinT = &Config{Family: "swin", Task: "detection", PatchSize: Ints{4, 4}, EmbedDim: 96, Depths: Ints{2, 2, 6, 2},
		NumHeads: Ints{3, 6, 12, 24}, WindowSize: Ints{7, 7}, MLPRatio: 4, OutNorms: true, OutChannels: 256}
	vitB = &Config{Family: "vit", Task: "detection", PatchSize: Ints{16}, ImageSize: 224, NumLayers: 12, NumHeads: Ints{12},
		HiddenDim: 768, MLPDim: 3072, OutChannels: 256}
)

func benchModel(b *testing.B, cfg *Config) *Model {
	c := *cfg
	c.setDefaults()
	if err := c.Validate(); err != nil {
		b.Fatal(err)
	}
	m, err := Build(&c, NewRandomWeights(1))
	if err != nil {
		b.Fatal(err)
	}
	return m
}

func randomImage(h, w int) *tensor.Tensor {
	r := rand.New(rand.NewSource(3))
	x := tensor.New(1, 3, h, w)
	for i := range x.Data {
		x.Data[i] = float32(r.NormFloat64())
	}
	return x
}

// BenchmarkBackbone times the fp32 backbone (and, separately, the feature
// pyramid) of Swin-T and ViT-B at 512×512 and 800×1216 on backend.Threads() goroutines.
func BenchmarkBackbone(b *testing.B) {
	for _, mc := range []struct {
		name string
		cfg  *Config
	}{{"SwinT", swinT}, {"ViTB", vitB}} {
		var m *Model
		for _, sz := range [][2]int{{512, 512}, {800, 1216}} {
			x := randomImage(sz[0], sz[1])
			b.Run(fmt.Sprintf("%s/%dx%d/backbone", mc.name, sz[0], sz[1]), func(b *testing.B) {
				if m == nil {
					m = benchModel(b, mc.cfg)
				}
				m.Backbone.Forward(x, nil) // warm-up: weight packing
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					m.Backbone.Forward(x, nil)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "images/s")
				b.ReportMetric(float64(backend.Threads()), "threads")
			})
			b.Run(fmt.Sprintf("%s/%dx%d/pyramid", mc.name, sz[0], sz[1]), func(b *testing.B) {
				if m == nil {
					m = benchModel(b, mc.cfg)
				}
				feats := m.Backbone.Forward(x, nil)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					m.Pyramid.Forward(feats)
				}
			})
		}
	}
}
