package model

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/flbq/flbq/runtime/safetensors"
	"github.com/flbq/flbq/runtime/tensor"
)

// golden is one fixture file's tensors grouped by case.
type golden struct {
	f     *safetensors.File
	cases []string
}

func loadGolden(t testing.TB, model string) *golden {
	t.Helper()
	f, err := safetensors.Open(filepath.Join("testdata", "golden_"+model+".safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	g := &golden{f: f}
	seen := map[string]bool{}
	for _, n := range f.Names() {
		c := n[:strings.IndexByte(n, '/')]
		if !seen[c] {
			seen[c] = true
			g.cases = append(g.cases, c)
		}
	}
	sort.Strings(g.cases)
	return g
}

func (g *golden) get(t testing.TB, name string) *tensor.Tensor {
	t.Helper()
	d, shape, err := g.f.Float32(name)
	if err != nil {
		t.Fatal(err)
	}
	return tensor.From(d, shape...)
}

func (g *golden) has(name string) bool { _, ok := g.f.Info(name); return ok }

func loadModel(t testing.TB, name string) *Model {
	t.Helper()
	m, err := Load(filepath.Join("testdata", name+".safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkClose asserts max|Δ| ≤ 1e-4·max|golden| and equal shapes.
func checkClose(t testing.TB, what string, got, want *tensor.Tensor) {
	t.Helper()
	if !tensor.SameShape(got.Shape, want.Shape) {
		t.Errorf("%s: shape %v, want %v", what, got.Shape, want.Shape)
		return
	}
	d := tensor.MaxAbsDiff(got.Data, want.Data)
	tol := 1e-4 * tensor.MaxAbs(want.Data)
	if !(d <= tol) {
		t.Errorf("%s: max|Δ| = %.3g > %.3g (1e-4·max|golden|)", what, d, tol)
	} else if testing.Verbose() {
		t.Logf("%s %v: max|Δ| = %.2g (%.2g of max|golden|)", what, got.Shape, d, d/tensor.MaxAbs(want.Data))
	}
}

func TestDetectionGoldens(t *testing.T) {
	for _, name := range []string{"swin_tiny", "vitdet_tiny"} {
		t.Run(name, func(t *testing.T) {
			m := loadModel(t, name)
			g := loadGolden(t, name)
			for _, c := range g.cases {
				x := g.get(t, c+"/input")
				bb, pyr := m.Features(x, nil)
				for k, o := range bb {
					checkClose(t, fmt.Sprintf("%s/backbone.%d", c, k), o, g.get(t, fmt.Sprintf("%s/backbone.%d", c, k)))
				}
				for k, o := range pyr {
					n := c + "/" + PyramidNames[k]
					checkClose(t, n, o, g.get(t, n))
				}
			}
		})
	}
}

func TestClassifierGoldens(t *testing.T) {
	m := loadModel(t, "vitcls_tiny")
	g := loadGolden(t, "vitcls_tiny")
	for _, c := range g.cases {
		checkClose(t, c+"/logits", m.Classifier.Forward(g.get(t, c+"/input"), nil), g.get(t, c+"/logits"))
	}
}

// One model used from several goroutines gives identical results.
func TestConcurrentUse(t *testing.T) {
	m := loadModel(t, "swin_tiny")
	g := loadGolden(t, "swin_tiny")
	x := g.get(t, "raw_odd/input")
	ref, refP := m.Features(x, nil)
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bb, p := m.Features(x, nil)
			for k := range bb {
				if tensor.MaxAbsDiff(bb[k].Data, ref[k].Data) != 0 {
					errs <- fmt.Sprintf("backbone.%d differs", k)
				}
			}
			for k := range p {
				if tensor.MaxAbsDiff(p[k].Data, refP[k].Data) != 0 {
					errs <- fmt.Sprintf("%s differs", PyramidNames[k])
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
