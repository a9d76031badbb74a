package nn

import (
	"fmt"
	"sync"

	"github.com/flbq/flbq/runtime/tensor"
)

// Conv2d is torch.nn.Conv2d with groups=1 and dilation 1: Weight is
// [OutC, InC, KH, KW] (torch layout), Bias [OutC] or nil.
//
// Every convolution runs channels-last as one product (GEMM): each output
// pixel's patch, whole input-channel vectors in (ky, kx, ci) order, is a
// row of an im2col block, multiplied by the weight as a Linear. Setting
// that Linear's Impl (an integer kernel, a fake-quant twin) changes every
// later Forward, so the fp32 and the quantized convolutions share this one
// path.
type Conv2d struct {
	Name                         string
	InC, OutC, KH, KW            int
	StrideH, StrideW, PadH, PadW int
	Weight, Bias                 []float32

	once sync.Once
	gemm *Linear
}

// NewConv2d returns a square-kernel convolution with the given stride and padding.
func NewConv2d(name string, inC, outC, k, stride, pad int, weight, bias []float32) *Conv2d {
	return &Conv2d{Name: name, InC: inC, OutC: outC, KH: k, KW: k, StrideH: stride, StrideW: stride, PadH: pad, PadW: pad, Weight: weight, Bias: bias}
}

// OutSize returns the output spatial size for an h×w input.
func (c *Conv2d) OutSize(h, w int) (int, int) {
	return (h+2*c.PadH-c.KH)/c.StrideH + 1, (w+2*c.PadW-c.KW)/c.StrideW + 1
}

// Check validates the weight and bias sizes.
func (c *Conv2d) Check() error {
	if len(c.Weight) != c.OutC*c.InC*c.KH*c.KW {
		return fmt.Errorf("%s: weight has %d elements, want %d", c.Name, len(c.Weight), c.OutC*c.InC*c.KH*c.KW)
	}
	if c.Bias != nil && len(c.Bias) != c.OutC {
		return fmt.Errorf("%s: bias has %d elements, want %d", c.Name, len(c.Bias), c.OutC)
	}
	return nil
}

// GEMMOrder returns, for each element of the GEMM weight ([OutC, KH·KW·InC],
// (ky, kx, ci) order), the index of the torch weight element it holds.
func (c *Conv2d) GEMMOrder() []int {
	kk := c.KH * c.KW
	order := make([]int, c.OutC*kk*c.InC)
	for o := 0; o < c.OutC; o++ {
		for k := 0; k < kk; k++ {
			for ci := 0; ci < c.InC; ci++ {
				order[(o*kk+k)*c.InC+ci] = (o*c.InC+ci)*kk + k
			}
		}
	}
	return order
}

// GEMM returns the convolution's product: a Linear from KH·KW·InC patch
// values (ky, kx, ci) to OutC, named like the convolution. It is built on
// the first call; Weight must not change afterwards.
func (c *Conv2d) GEMM() *Linear {
	c.once.Do(func() {
		c.gemm = NewLinear(c.Name, c.KH*c.KW*c.InC, c.OutC, Reorder(c.Weight, c.GEMMOrder()), c.Bias)
	})
	return c.gemm
}

// Reorder returns src permuted: out[i] = src[order[i]].
func Reorder[T any](src []T, order []int) []T {
	out := make([]T, len(order))
	for i, j := range order {
		out[i] = src[j]
	}
	return out
}

// im2colFloats is the size of one im2col block (8 MB): large enough that
// every block is a well-parallelised GEMM, small enough to stay cheap.
const im2colFloats = 1 << 21

// Forward computes the convolution of an NCHW tensor.
func (c *Conv2d) Forward(x *tensor.Tensor) *tensor.Tensor {
	n, cin, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	if cin != c.InC {
		panic(fmt.Sprintf("%s: input has %d channels, want %d", c.Name, cin, c.InC))
	}
	oh, ow := c.OutSize(h, w)
	out := tensor.New(n, c.OutC, oh, ow)
	c.ForwardInto(out.Data, x.Data, n, h, w)
	return out
}

// ForwardInto writes the convolution of x ([n, InC, h, w]) into dst
// ([n, OutC, oh, ow]), through channels-last copies of both.
func (c *Conv2d) ForwardInto(dst, x []float32, n, h, w int) {
	oh, ow := c.OutSize(h, w)
	if oh <= 0 || ow <= 0 || n == 0 {
		return
	}
	xl := GetScratch(n * h * w * c.InC)
	ToNHWC((*xl)[:n*h*w*c.InC], x, n, c.InC, h*w)
	yl := GetScratch(n * oh * ow * c.OutC)
	c.ForwardNHWC((*yl)[:n*oh*ow*c.OutC], (*xl)[:n*h*w*c.InC], n, h, w)
	PutScratch(xl)
	ToNCHW(dst, (*yl)[:n*oh*ow*c.OutC], n, c.OutC, oh*ow)
	PutScratch(yl)
}

// ForwardNHWC writes the convolution of channels-last x ([n, h, w, InC])
// into dst ([n, oh, ow, OutC]).
func (c *Conv2d) ForwardNHWC(dst, x []float32, n, h, w int) {
	oh, ow := c.OutSize(h, w)
	if oh <= 0 || ow <= 0 || n == 0 {
		return
	}
	g := c.GEMM()
	rows := n * oh * ow
	if c.KH == 1 && c.KW == 1 && c.StrideH == 1 && c.StrideW == 1 && c.PadH == 0 && c.PadW == 0 {
		g.Forward(dst[:rows*c.OutC], x[:rows*c.InC], rows)
		return
	}
	K := g.In
	block := max(im2colFloats/K, 1)
	cols := GetScratch(min(block, rows) * K)
	for r0 := 0; r0 < rows; r0 += block {
		nr := min(block, rows-r0)
		b := (*cols)[:nr*K]
		ParallelFor(nr, 32, func(lo, hi int) { c.im2col(b, x, h, w, oh, ow, r0, lo, hi) })
		g.Forward(dst[r0*c.OutC:(r0+nr)*c.OutC], b, nr)
	}
	PutScratch(cols)
}

// im2col writes rows [r0+lo, r0+hi) of the batch's patch matrix (row r:
// image r/(oh·ow), output pixel r%(oh·ow)) into dst, whose row 0 is r0.
func (c *Conv2d) im2col(dst, x []float32, h, w, oh, ow, r0, lo, hi int) {
	ci := c.InC
	K := c.KH * c.KW * ci
	for r := r0 + lo; r < r0+hi; r++ {
		img, q := r/(oh*ow), r%(oh*ow)
		iy0, ix0 := (q/ow)*c.StrideH-c.PadH, (q%ow)*c.StrideW-c.PadW
		row := dst[(r-r0)*K : (r-r0+1)*K]
		src := x[img*h*w*ci : (img+1)*h*w*ci]
		k := 0
		for ky := 0; ky < c.KH; ky++ {
			iy := iy0 + ky
			for kx := 0; kx < c.KW; kx++ {
				ix := ix0 + kx
				seg := row[k*ci : (k+1)*ci]
				if iy >= 0 && iy < h && ix >= 0 && ix < w {
					copy(seg, src[(iy*w+ix)*ci:(iy*w+ix+1)*ci])
				} else {
					clear(seg)
				}
				k++
			}
		}
	}
}

// ConvTranspose2d is torch.nn.ConvTranspose2d with kernel size equal to
// the stride and no padding (the non-overlapping 2×2/stride-2 upsampling of
// ViTDet's simple feature pyramid and Mask R-CNN's mask head). Weight is
// [InC, OutC, K, K] (torch layout). Like Conv2d it runs channels-last as one
// product: each input pixel's channels times a Linear to its K×K block of
// outputs, (dy, dx, o) order.
type ConvTranspose2d struct {
	Name         string
	InC, OutC, K int
	Weight, Bias []float32

	once sync.Once
	gemm *Linear
}

// Check validates the weight and bias sizes.
func (c *ConvTranspose2d) Check() error {
	if len(c.Weight) != c.OutC*c.InC*c.K*c.K {
		return fmt.Errorf("%s: weight has %d elements, want %d", c.Name, len(c.Weight), c.OutC*c.InC*c.K*c.K)
	}
	if c.Bias != nil && len(c.Bias) != c.OutC {
		return fmt.Errorf("%s: bias has %d elements, want %d", c.Name, len(c.Bias), c.OutC)
	}
	return nil
}

// GEMMOrder returns, for each element of the GEMM weight
// ([K·K·OutC, InC], rows in (dy, dx, o) order), the index of the torch
// weight element it holds.
func (c *ConvTranspose2d) GEMMOrder() []int {
	kk := c.K * c.K
	order := make([]int, kk*c.OutC*c.InC)
	for k := 0; k < kk; k++ {
		for o := 0; o < c.OutC; o++ {
			for ci := 0; ci < c.InC; ci++ {
				order[(k*c.OutC+o)*c.InC+ci] = (ci*c.OutC+o)*kk + k
			}
		}
	}
	return order
}

// GEMMChannel is the output channel of GEMM row r (rows are (dy, dx, o)).
func (c *ConvTranspose2d) GEMMChannel(r int) int { return r % c.OutC }

// GEMM returns the transposed convolution's product: a Linear from InC to
// K·K·OutC, named like the layer, bias repeated per (dy, dx). It is built
// on the first call; Weight must not change afterwards.
func (c *ConvTranspose2d) GEMM() *Linear {
	c.once.Do(func() {
		kk := c.K * c.K
		var b []float32
		if c.Bias != nil {
			b = make([]float32, kk*c.OutC)
			for k := 0; k < kk; k++ {
				copy(b[k*c.OutC:], c.Bias)
			}
		}
		c.gemm = NewLinear(c.Name, c.InC, kk*c.OutC, Reorder(c.Weight, c.GEMMOrder()), b)
	})
	return c.gemm
}

// Forward upsamples an NCHW tensor by K.
func (c *ConvTranspose2d) Forward(x *tensor.Tensor) *tensor.Tensor {
	n, cin, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	if cin != c.InC {
		panic(fmt.Sprintf("%s: input has %d channels, want %d", c.Name, cin, c.InC))
	}
	k := c.K
	out := tensor.New(n, c.OutC, h*k, w*k)
	xl := GetScratch(n * h * w * c.InC)
	ToNHWC((*xl)[:n*h*w*c.InC], x.Data, n, c.InC, h*w)
	yl := GetScratch(len(out.Data))
	c.ForwardNHWC((*yl)[:len(out.Data)], (*xl)[:n*h*w*c.InC], n, h, w)
	PutScratch(xl)
	ToNCHW(out.Data, (*yl)[:len(out.Data)], n, c.OutC, h*k*w*k)
	PutScratch(yl)
	return out
}

// ForwardNHWC writes the upsampling of channels-last x ([n, h, w, InC])
// into dst ([n, h·K, w·K, OutC]).
func (c *ConvTranspose2d) ForwardNHWC(dst, x []float32, n, h, w int) {
	g := c.GEMM()
	rows := n * h * w
	if rows == 0 {
		return
	}
	t := GetScratch(rows * g.Out)
	y := (*t)[:rows*g.Out]
	g.Forward(y, x[:rows*c.InC], rows)
	k, oc := c.K, c.OutC
	ow := w * k
	ParallelFor(rows, 64, func(lo, hi int) {
		for p := lo; p < hi; p++ {
			img, q := p/(h*w), p%(h*w)
			iy, ix := q/w, q%w
			src := y[p*g.Out : (p+1)*g.Out]
			for dy := 0; dy < k; dy++ {
				for dx := 0; dx < k; dx++ {
					o := ((img*h*k+iy*k+dy)*ow + ix*k + dx) * oc
					copy(dst[o:o+oc], src[(dy*k+dx)*oc:(dy*k+dx+1)*oc])
				}
			}
		}
	})
	PutScratch(t)
}

// ToNHWC writes the channels-last copy of x ([n, c, hw]) into dst ([n, hw, c]).
func ToNHWC(dst, x []float32, n, c, hw int) { transposeBatch(dst, x, n, c, hw) }

// ToNCHW writes the channels-first copy of x ([n, hw, c]) into dst ([n, c, hw]).
func ToNCHW(dst, x []float32, n, c, hw int) { transposeBatch(dst, x, n, hw, c) }

// transposeBatch transposes n row-major r×s matrices, in 64×64 tiles
// (cache-friendly on both sides), across goroutines.
func transposeBatch(dst, x []float32, n, r, s int) {
	const t = 32
	tr, ts := (r+t-1)/t, (s+t-1)/t
	ParallelFor(n*tr*ts, 16, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			img, rest := j/(tr*ts), j%(tr*ts)
			i0, k0 := (rest/ts)*t, (rest%ts)*t
			i1, k1 := min(i0+t, r), min(k0+t, s)
			src, out := x[img*r*s:(img+1)*r*s], dst[img*r*s:(img+1)*r*s]
			for i := i0; i < i1; i++ {
				row := src[i*s+k0 : i*s+k1]
				col := out[k0*r+i:]
				for kk, v := range row {
					col[kk*r] = v
				}
			}
		}
	})
}
