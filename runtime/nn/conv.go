package nn

import (
	"fmt"
	"sync"

	"github.com/flbq/flbq/runtime/tensor"
)

// Conv2d is torch.nn.Conv2d with groups=1 and dilation 1: Weight is
// [OutC, InC, KH, KW] (torch layout), Bias [OutC] or nil. It runs as
// im2col (written directly into the GEMM's packed panel layout, one block
// of output pixels at a time) times the weight matrix, split over pixel
// blocks across backend.Threads() goroutines.
type Conv2d struct {
	Name                         string
	InC, OutC, KH, KW            int
	StrideH, StrideW, PadH, PadW int
	Weight, Bias                 []float32
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

// pixBlock is the number of output pixels per im2col block (a multiple of NR).
const pixBlock = 16 * NR

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

// ForwardInto writes the convolution of x ([n, InC, h, w]) into dst ([n, OutC, oh, ow]).
func (c *Conv2d) ForwardInto(dst, x []float32, n, h, w int) {
	oh, ow := c.OutSize(h, w)
	if oh <= 0 || ow <= 0 {
		return
	}
	npix := oh * ow
	K := c.InC * c.KH * c.KW
	blocks := (npix + pixBlock - 1) / pixBlock
	ParallelFor(n*blocks, 1, func(lo, hi int) {
		s := GetScratch(K * pixBlock)
		for t := lo; t < hi; t++ {
			img, blk := t/blocks, t%blocks
			p0 := blk * pixBlock
			np := npix - p0
			if np > pixBlock {
				np = pixBlock
			}
			xi := x[img*c.InC*h*w : (img+1)*c.InC*h*w]
			c.im2colPacked(*s, xi, h, w, oh, ow, p0, np)
			o := dst[img*c.OutC*npix:]
			MulPacked(c.OutC, c.Weight, K, *s, K, np, o[p0:], npix, false)
			if c.Bias != nil {
				for co := 0; co < c.OutC; co++ {
					row := o[co*npix+p0 : co*npix+p0+np]
					b := c.Bias[co]
					for i := range row {
						row[i] += b
					}
				}
			}
		}
		PutScratch(s)
	})
}

// im2colPacked writes the K×np patch matrix of output pixels [p0, p0+np)
// in packed-panel layout.
func (c *Conv2d) im2colPacked(dst, x []float32, h, w, oh, ow, p0, np int) {
	K := c.InC * c.KH * c.KW
	panels := (np + NR - 1) / NR
	if c.KH == 1 && c.KW == 1 && c.StrideH == 1 && c.StrideW == 1 && c.PadH == 0 && c.PadW == 0 {
		for p := 0; p < panels; p++ {
			packPanel(dst[p*K*NR:(p+1)*K*NR], false, K, p0+np, x, h*w, p0+p*NR)
		}
		return
	}
	var iy0, ix0 [NR]int
	for p := 0; p < panels; p++ {
		pd := dst[p*K*NR : (p+1)*K*NR]
		wdt := np - p*NR
		if wdt > NR {
			wdt = NR
		}
		for j := 0; j < wdt; j++ {
			q := p0 + p*NR + j
			iy0[j] = (q/ow)*c.StrideH - c.PadH
			ix0[j] = (q%ow)*c.StrideW - c.PadW
		}
		k := 0
		for ci := 0; ci < c.InC; ci++ {
			plane := x[ci*h*w : (ci+1)*h*w]
			for ky := 0; ky < c.KH; ky++ {
				for kx := 0; kx < c.KW; kx++ {
					row := pd[k*NR : k*NR+NR]
					for j := 0; j < wdt; j++ {
						iy, ix := iy0[j]+ky, ix0[j]+kx
						if iy >= 0 && iy < h && ix >= 0 && ix < w {
							row[j] = plane[iy*w+ix]
						} else {
							row[j] = 0
						}
					}
					for j := wdt; j < NR; j++ {
						row[j] = 0
					}
					k++
				}
			}
		}
	}
}

// ConvTranspose2d is torch.nn.ConvTranspose2d with kernel size equal to
// the stride and no padding (the non-overlapping 2×2/stride-2 upsampling of
// ViTDet's simple feature pyramid and Mask R-CNN's mask head). Weight is
// [InC, OutC, K, K] (torch layout).
type ConvTranspose2d struct {
	Name         string
	InC, OutC, K int
	Weight, Bias []float32
	once         sync.Once
	wt           []float32 // [OutC*K*K, InC]
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

// Forward upsamples an NCHW tensor by K.
func (c *ConvTranspose2d) Forward(x *tensor.Tensor) *tensor.Tensor {
	n, cin, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	if cin != c.InC {
		panic(fmt.Sprintf("%s: input has %d channels, want %d", c.Name, cin, c.InC))
	}
	c.once.Do(func() {
		kk := c.K * c.K
		c.wt = make([]float32, c.OutC*kk*c.InC)
		for ci := 0; ci < c.InC; ci++ {
			for r := 0; r < c.OutC*kk; r++ {
				c.wt[r*c.InC+ci] = c.Weight[ci*c.OutC*kk+r]
			}
		}
	})
	k := c.K
	oh, ow := h*k, w*k
	out := tensor.New(n, c.OutC, oh, ow)
	npix := h * w
	M := c.OutC * k * k
	blocks := (npix + pixBlock - 1) / pixBlock
	ParallelFor(n*blocks, 1, func(lo, hi int) {
		pk := GetScratch(c.InC * pixBlock)
		tmp := GetScratch(M * pixBlock)
		for t := lo; t < hi; t++ {
			img, blk := t/blocks, t%blocks
			p0 := blk * pixBlock
			np := npix - p0
			if np > pixBlock {
				np = pixBlock
			}
			xi := x.Data[img*c.InC*npix : (img+1)*c.InC*npix]
			for p := 0; p*NR < np; p++ {
				packPanel((*pk)[p*c.InC*NR:(p+1)*c.InC*NR], false, c.InC, p0+np, xi, npix, p0+p*NR)
			}
			MulPacked(M, c.wt, c.InC, *pk, c.InC, np, *tmp, np, false)
			o := out.Data[img*c.OutC*oh*ow:]
			for co := 0; co < c.OutC; co++ {
				var b float32
				if c.Bias != nil {
					b = c.Bias[co]
				}
				for dy := 0; dy < k; dy++ {
					for dx := 0; dx < k; dx++ {
						row := (*tmp)[((co*k+dy)*k+dx)*np : ((co*k+dy)*k+dx)*np+np]
						for i, v := range row {
							q := p0 + i
							y, xx := q/w, q%w
							o[co*oh*ow+(y*k+dy)*ow+xx*k+dx] = v + b
						}
					}
				}
			}
		}
		PutScratch(pk)
		PutScratch(tmp)
	})
	return out
}
