package nn

import (
	"math"
	"math/rand"
	"testing"

	"github.com/flbq/flbq/runtime/tensor"
)

func TestExpErf(t *testing.T) {
	var maxRelExp, maxErf float64
	for x := -103.0; x < 88.7; x += 0.0137 {
		got := float64(Exp(float32(x)))
		want := math.Exp(float64(float32(x)))
		if want > 1e-37 {
			maxRelExp = math.Max(maxRelExp, math.Abs(got-want)/want)
		}
	}
	if maxRelExp > 3e-7 {
		t.Errorf("Exp max relative error %g", maxRelExp)
	}
	if Exp(-200) != 0 || !math.IsInf(float64(Exp(100)), 1) || Exp(0) != 1 {
		t.Errorf("Exp edge cases: %g %g %g", Exp(-200), Exp(100), Exp(0))
	}
	for x := -6.0; x < 6; x += 0.001 {
		maxErf = math.Max(maxErf, math.Abs(float64(Erf(float32(x)))-math.Erf(float64(float32(x)))))
	}
	if maxErf > 5e-7 {
		t.Errorf("Erf max abs error %g", maxErf)
	}
}

func TestSoftmaxLayerNorm(t *testing.T) {
	x := []float32{1, 2, 3, -1000}
	SoftmaxRow(x)
	e := []float64{math.Exp(-2), math.Exp(-1), 1}
	s := e[0] + e[1] + e[2]
	for i := 0; i < 3; i++ {
		if math.Abs(float64(x[i])-e[i]/s) > 1e-6 {
			t.Errorf("softmax[%d] = %g, want %g", i, x[i], e[i]/s)
		}
	}
	if x[3] != 0 {
		t.Errorf("softmax[3] = %g", x[3])
	}
	y := []float32{1, 2, 3, 4}
	LayerNorm(y, y, 1, 4, []float32{1, 1, 1, 2}, []float32{0, 0, 0, 1}, 0)
	// mean 2.5, var 1.25
	want := []float64{-1.5 / math.Sqrt(1.25), -0.5 / math.Sqrt(1.25), 0.5 / math.Sqrt(1.25), 2*1.5/math.Sqrt(1.25) + 1}
	for i := range y {
		if math.Abs(float64(y[i])-want[i]) > 1e-6 {
			t.Errorf("layernorm[%d] = %g, want %g", i, y[i], want[i])
		}
	}
}

func naiveConv(x []float32, n, cin, h, w int, c *Conv2d) []float32 {
	oh, ow := c.OutSize(h, w)
	out := make([]float32, n*c.OutC*oh*ow)
	for b := 0; b < n; b++ {
		for co := 0; co < c.OutC; co++ {
			for oy := 0; oy < oh; oy++ {
				for ox := 0; ox < ow; ox++ {
					var s float64
					if c.Bias != nil {
						s = float64(c.Bias[co])
					}
					for ci := 0; ci < cin; ci++ {
						for ky := 0; ky < c.KH; ky++ {
							for kx := 0; kx < c.KW; kx++ {
								iy, ix := oy*c.StrideH-c.PadH+ky, ox*c.StrideW-c.PadW+kx
								if iy >= 0 && iy < h && ix >= 0 && ix < w {
									s += float64(x[((b*cin+ci)*h+iy)*w+ix]) * float64(c.Weight[((co*cin+ci)*c.KH+ky)*c.KW+kx])
								}
							}
						}
					}
					out[((b*c.OutC+co)*oh+oy)*ow+ox] = float32(s)
				}
			}
		}
	}
	return out
}

func TestConv2d(t *testing.T) {
	r := rand.New(rand.NewSource(3))
	for _, c := range []struct{ n, cin, cout, h, w, kh, kw, s, p int }{
		{1, 3, 5, 9, 13, 3, 3, 1, 1}, {2, 4, 17, 20, 15, 3, 3, 2, 1}, {1, 8, 7, 300, 3, 1, 1, 1, 0},
		{1, 3, 4, 16, 20, 4, 4, 4, 0}, {1, 2, 3, 7, 9, 2, 3, 1, 0},
	} {
		conv := &Conv2d{Name: "c", InC: c.cin, OutC: c.cout, KH: c.kh, KW: c.kw, StrideH: c.s, StrideW: c.s, PadH: c.p, PadW: c.p,
			Weight: randSlice(r, c.cout*c.cin*c.kh*c.kw), Bias: randSlice(r, c.cout)}
		if err := conv.Check(); err != nil {
			t.Fatal(err)
		}
		x := tensor.From(randSlice(r, c.n*c.cin*c.h*c.w), c.n, c.cin, c.h, c.w)
		got := conv.Forward(x)
		want := naiveConv(x.Data, c.n, c.cin, c.h, c.w, conv)
		if d := tensor.MaxAbsDiff(got.Data, want); d > 1e-4 {
			t.Errorf("%+v: max|Δ| %g", c, d)
		}
	}
}

func TestConvTranspose2d(t *testing.T) {
	r := rand.New(rand.NewSource(4))
	n, cin, cout, h, w, k := 2, 5, 3, 7, 300, 2
	ct := &ConvTranspose2d{Name: "d", InC: cin, OutC: cout, K: k, Weight: randSlice(r, cin*cout*k*k), Bias: randSlice(r, cout)}
	x := tensor.From(randSlice(r, n*cin*h*w), n, cin, h, w)
	got := ct.Forward(x)
	for b := 0; b < n; b++ {
		for co := 0; co < cout; co++ {
			for y := 0; y < h*k; y++ {
				for xx := 0; xx < w*k; xx++ {
					s := float64(ct.Bias[co])
					for ci := 0; ci < cin; ci++ {
						s += float64(x.Data[((b*cin+ci)*h+y/k)*w+xx/k]) * float64(ct.Weight[((ci*cout+co)*k+y%k)*k+xx%k])
					}
					if g := got.Data[((b*cout+co)*h*k+y)*w*k+xx]; math.Abs(float64(g)-s) > 1e-4 {
						t.Fatalf("(%d,%d,%d,%d) = %g, want %g", b, co, y, xx, g, s)
					}
				}
			}
		}
	}
}

func TestResizeNearestAndPool(t *testing.T) {
	x := []float32{1, 2, 3, 4, 5, 6} // 2×3
	got := ResizeNearest(x, 1, 2, 3, 3, 5)
	// torch: scale h 2/3 → rows 0,0,1; w 3/5 → cols 0,0,1,1,2
	want := []float32{1, 1, 2, 2, 3, 1, 1, 2, 2, 3, 4, 4, 5, 5, 6}
	if tensor.MaxAbsDiff(got, want) != 0 {
		t.Errorf("nearest = %v", got)
	}
	p, oh, ow := MaxPool2d(x, 1, 2, 3, 1, 2, 0)
	if oh != 1 || ow != 2 || p[0] != 1 || p[1] != 3 {
		t.Errorf("maxpool k1s2 = %v %dx%d", p, oh, ow)
	}
	p, oh, ow = MaxPool2d(x, 1, 2, 3, 2, 2, 0)
	if oh != 1 || ow != 1 || p[0] != 5 {
		t.Errorf("maxpool k2s2 = %v %dx%d", p, oh, ow)
	}
}

// ReLUSerial's branch-free form zeroes exactly what v < 0 zeroes (and
// keeps -0, NaNs of either sign and the infinities' sign rules).
func TestReLUSpecialValues(t *testing.T) {
	vals := []float32{0, float32(math.Copysign(0, -1)), 1, -1, float32(math.Inf(1)), float32(math.Inf(-1)),
		float32(math.NaN()), -float32(math.NaN()), math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32,
		math.MaxFloat32, -math.MaxFloat32}
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 1000; i++ {
		vals = append(vals, float32(r.NormFloat64()))
	}
	got := append([]float32(nil), vals...)
	ReLU(got)
	for i, v := range vals {
		want := v
		if v < 0 {
			want = 0
		}
		if math.Float32bits(got[i]) != math.Float32bits(want) {
			t.Fatalf("relu(%v) = %v, want %v", v, got[i], want)
		}
	}
}
