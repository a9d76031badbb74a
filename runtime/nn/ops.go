package nn

import (
	"fmt"
	"math"
)

// LayerNorm normalises each of rows vectors of length c in x into dst
// (dst may alias x): y = (x-mean)/sqrt(var+eps)·w + b, biased variance as
// torch.nn.LayerNorm. With AVX2 and c a multiple of 8 the statistics are
// accumulated in float32 lanes (two passes), otherwise in float64.
func LayerNorm(dst, x []float32, rows, c int, w, b []float32, eps float32) {
	checkLayerNorm(dst, x, rows, c, w, b)
	grain := max(64, 4096/max(c, 1)) // rows of small c are cheap: fewer, larger chunks
	ParallelFor(rows, grain, func(lo, hi int) {
		layerNormRows(dst[lo*c:hi*c], x[lo*c:hi*c], hi-lo, c, w, b, eps)
	})
}

// LayerNormSerial is LayerNorm on the calling goroutine.
func LayerNormSerial(dst, x []float32, rows, c int, w, b []float32, eps float32) {
	checkLayerNorm(dst, x, rows, c, w, b)
	if rows > 0 {
		layerNormRows(dst, x, rows, c, w, b, eps)
	}
}

// checkLayerNorm panics on short slices before any kernel reads them.
func checkLayerNorm(dst, x []float32, rows, c int, w, b []float32) {
	if rows < 0 || c < 1 || len(x) < rows*c || len(dst) < rows*c || len(w) < c || len(b) < c {
		panic(fmt.Sprintf("nn.LayerNorm: rows=%d c=%d with len(x)=%d len(dst)=%d len(w)=%d len(b)=%d",
			rows, c, len(x), len(dst), len(w), len(b)))
	}
}

// layerNormRowsGo is the pure-Go twin of the LayerNorm kernel (float64
// statistics).
func layerNormRowsGo(dst, x []float32, rows, c int, w, b []float32, eps float32) {
	for r := 0; r < rows; r++ {
		layerNormRow(dst[r*c:r*c+c], x[r*c:r*c+c], w, b, eps)
	}
}

func layerNormRow(dst, x, w, b []float32, eps float32) {
	var s float64
	for _, v := range x {
		s += float64(v)
	}
	mean := s / float64(len(x))
	var q float64
	for _, v := range x {
		d := float64(v) - mean
		q += d * d
	}
	inv := 1 / math.Sqrt(q/float64(len(x))+float64(eps))
	m32, i32 := float32(mean), float32(inv)
	w = w[:len(x)]
	b = b[:len(x)]
	dst = dst[:len(x)]
	for i, v := range x {
		dst[i] = (v-m32)*i32*w[i] + b[i]
	}
}

// LayerNorm2d normalises an NCHW map over its channels at every pixel
// (ViTDet's LayerNorm2d), in place-capable: dst may alias x.
func LayerNorm2d(dst, x []float32, n, c, hw int, w, b []float32, eps float32) {
	ParallelFor(n*hw, 256, func(lo, hi int) {
		for idx := lo; idx < hi; idx++ {
			img, p := idx/hw, idx%hw
			base := img * c * hw
			var s float64
			for ch := 0; ch < c; ch++ {
				s += float64(x[base+ch*hw+p])
			}
			mean := s / float64(c)
			var q float64
			for ch := 0; ch < c; ch++ {
				d := float64(x[base+ch*hw+p]) - mean
				q += d * d
			}
			inv := float32(1 / math.Sqrt(q/float64(c)+float64(eps)))
			m := float32(mean)
			for ch := 0; ch < c; ch++ {
				i := base + ch*hw + p
				dst[i] = (x[i]-m)*inv*w[ch] + b[ch]
			}
		}
	})
}

// GELU applies the exact (erf) GELU in place: x·½·(1+erf(x/√2)).
func GELU(x []float32) {
	ParallelFor(len(x), 4096, func(lo, hi int) { GELUSerial(x[lo:hi]) })
}

// GELUSerial is GELU on the calling goroutine.
func GELUSerial(x []float32) { gelu(x) }

// geluGo is the pure-Go twin of the GELU kernel.
func geluGo(x []float32) {
	for i, v := range x {
		x[i] = 0.5 * v * (1 + Erf(v*0.70710678118654752440))
	}
}

// Erf is a float32 error function (rational approximation on [-4,4] as in
// Eigen's generic_fast_erf_float; max error a few ulp).
func Erf(x float32) float32 {
	if x > 4 {
		x = 4
	} else if x < -4 {
		x = -4
	}
	x2 := x * x
	// Coefficients of the numerator, alpha_1..alpha_13 (odd polynomial).
	p := float32(-2.72614225801306e-10)
	p = p*x2 + 2.77068142495902e-08
	p = p*x2 - 2.10102402082508e-06
	p = p*x2 - 5.69250639462346e-05
	p = p*x2 - 7.34990630326855e-04
	p = p*x2 - 2.95459980854025e-03
	p = p*x2 - 1.60960333262415e-02
	p = p * x
	q := float32(-1.45660718464996e-05)
	q = q*x2 - 2.13374055278905e-04
	q = q*x2 - 1.68282697438203e-03
	q = q*x2 - 7.37332916720468e-03
	q = q*x2 - 1.42647390514189e-02
	r := p / q
	if r > 1 {
		return 1
	}
	if r < -1 {
		return -1
	}
	return r
}

// Exp is a float32 exp accurate to about 1 ulp over the float32 range
// (Cody–Waite reduction and a degree-6 polynomial); Exp(x) = 0 for x < -104.
func Exp(x float32) float32 {
	if x > 88.72283 {
		return float32(math.Inf(1))
	}
	if x != x {
		return x
	}
	if x < -103.9 {
		return 0
	}
	// x = n·ln2 + r, |r| <= ln2/2; n rounded with the 1.5·2^23 trick.
	const magic = 12582912
	kf := x*1.44269504088896341 + magic
	n := kf - magic
	ni := int32(math.Float32bits(kf)) - 0x4B400000
	r := x - n*0.693359375
	r = r - n*-2.12194440e-4
	p := float32(1.9875691500e-4)
	p = p*r + 1.3981999507e-3
	p = p*r + 8.3334519073e-3
	p = p*r + 4.1665795894e-2
	p = p*r + 1.6666665459e-1
	p = p*r + 5.0000001201e-1
	y := p*r*r + r + 1
	if ni > 127 {
		return y * 2 * math.Float32frombits(uint32(ni-1+127)<<23)
	}
	if ni < -126 {
		// subnormal result: scale in two steps
		return y * math.Float32frombits(uint32(ni+126+127)<<23) * math.Float32frombits(uint32(-126+127)<<23)
	}
	return y * math.Float32frombits(uint32(ni+127)<<23)
}

// SoftmaxRow replaces x by softmax(x) (max-subtracted, as torch).
func SoftmaxRow(x []float32) {
	if len(x) == 0 {
		return
	}
	softmaxRow(x)
}

// Add adds src to dst element-wise (len(dst) ≥ len(src)), e.g. a residual.
func Add(dst, src []float32) {
	if len(dst) < len(src) {
		panic(fmt.Sprintf("nn.Add: len(dst)=%d < len(src)=%d", len(dst), len(src)))
	}
	add(dst, src)
}

// addGo is the pure-Go twin of the Add kernel.
func addGo(dst, src []float32) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] += v
	}
}

// softmaxRowGo is the pure-Go twin of the softmax kernel (len(x) ≥ 1).
func softmaxRowGo(x []float32) {
	m := x[0]
	for _, v := range x[1:] {
		if v > m {
			m = v
		}
	}
	var s float32
	for i, v := range x {
		e := Exp(v - m)
		x[i] = e
		s += e
	}
	inv := 1 / s
	for i := range x {
		x[i] *= inv
	}
}

// Softmax applies SoftmaxRow to each of rows rows of length n.
func Softmax(x []float32, rows, n int) {
	ParallelFor(rows, 16, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			SoftmaxRow(x[r*n : r*n+n])
		}
	})
}

// MaxPool2d is torch.nn.functional.max_pool2d (floor mode, dilation 1,
// padding with -inf) on an NCHW tensor of n·c planes.
func MaxPool2d(x []float32, nc, h, w, kernel, stride, pad int) ([]float32, int, int) {
	oh := (h+2*pad-kernel)/stride + 1
	ow := (w+2*pad-kernel)/stride + 1
	if oh < 0 {
		oh = 0
	}
	if ow < 0 {
		ow = 0
	}
	out := make([]float32, nc*oh*ow)
	ParallelFor(nc, 1, func(lo, hi int) {
		for p := lo; p < hi; p++ {
			src := x[p*h*w : (p+1)*h*w]
			dst := out[p*oh*ow : (p+1)*oh*ow]
			for oy := 0; oy < oh; oy++ {
				for ox := 0; ox < ow; ox++ {
					m := float32(math.Inf(-1))
					for ky := 0; ky < kernel; ky++ {
						iy := oy*stride - pad + ky
						if iy < 0 || iy >= h {
							continue
						}
						for kx := 0; kx < kernel; kx++ {
							ix := ox*stride - pad + kx
							if ix < 0 || ix >= w {
								continue
							}
							if v := src[iy*w+ix]; v > m || v != v {
								m = v
							}
						}
					}
					dst[oy*ow+ox] = m
				}
			}
		}
	})
	return out, oh, ow
}

// BilerpAcc adds one bilinear sample over a pixel's channels to acc:
// acc[c] += ((w[0]·a1[c] + w[1]·a2[c]) + w[2]·a3[c]) + w[3]·a4[c], every
// product and sum rounded on its own (torchvision's RoIAlign order; the
// a slices are the four taps' channel vectors, at least len(acc) long).
func BilerpAcc(acc, a1, a2, a3, a4 []float32, w *[4]float32) {
	if len(a1) < len(acc) || len(a2) < len(acc) || len(a3) < len(acc) || len(a4) < len(acc) {
		panic(fmt.Sprintf("nn.BilerpAcc: taps of %d, %d, %d, %d values for %d channels", len(a1), len(a2), len(a3), len(a4), len(acc)))
	}
	bilerpAcc(acc, a1, a2, a3, a4, w)
}

// bilerpAccGo is the pure-Go twin of the BilerpAcc kernel.
func bilerpAccGo(acc, a1, a2, a3, a4 []float32, w *[4]float32) {
	a1, a2, a3, a4 = a1[:len(acc)], a2[:len(acc)], a3[:len(acc)], a4[:len(acc)]
	for c := range acc {
		t := float32(w[0]*a1[c]) + float32(w[1]*a2[c])
		t = t + float32(w[2]*a3[c])
		t = t + float32(w[3]*a4[c])
		acc[c] += t
	}
}
