package nn

import "math"

// Channels-last (NHWC) forms of the pyramid's resampling ops: each pixel's
// channels are contiguous, so every op moves whole channel vectors.

// ResizeNearestAddNHWC adds the nearest-neighbour resize of x
// ([n, h, w, c]) to dst ([n, oh, ow, c]): F.interpolate(mode="nearest")
// with the source indices of ResizeNearest.
func ResizeNearestAddNHWC(dst, x []float32, n, c, h, w, oh, ow int) {
	iy := nearestIndices(h, oh)
	ix := nearestIndices(w, ow)
	ParallelFor(n*oh, 4, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			img, oy := r/oh, r%oh
			src := x[(img*h+iy[oy])*w*c:]
			row := dst[r*ow*c : (r+1)*ow*c]
			for ox := 0; ox < ow; ox++ {
				Add(row[ox*c:(ox+1)*c], src[ix[ox]*c:(ix[ox]+1)*c])
			}
		}
	})
}

// MaxPool2dNHWC is MaxPool2d on a channels-last [n, h, w, c] tensor.
func MaxPool2dNHWC(x []float32, n, c, h, w, kernel, stride, pad int) ([]float32, int, int) {
	oh := max((h+2*pad-kernel)/stride+1, 0)
	ow := max((w+2*pad-kernel)/stride+1, 0)
	out := make([]float32, n*oh*ow*c)
	ParallelFor(n*oh, 4, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			img, oy := r/oh, r%oh
			for ox := 0; ox < ow; ox++ {
				d := out[((img*oh+oy)*ow+ox)*c : ((img*oh+oy)*ow+ox+1)*c]
				for i := range d {
					d[i] = float32(math.Inf(-1))
				}
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
						s := x[((img*h+iy)*w+ix)*c : ((img*h+iy)*w+ix+1)*c]
						for i, v := range s {
							if v > d[i] || v != v {
								d[i] = v
							}
						}
					}
				}
			}
		}
	})
	return out, oh, ow
}
