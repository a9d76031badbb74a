package imageio

import "image"

// libjpeg's YCbCr → RGB tables (jdcolor.c build_ycc_rgb_table, 16-bit
// fixed point) and its "fancy" chroma upsampling (jdsample.c
// h2v1_fancy_upsample, h2v2_fancy_upsample): PIL, OpenCV and torchvision's
// decode_jpeg all decode with libjpeg(-turbo), and its triangle filter on
// subsampled chroma is most of the difference to the nearest-neighbour
// chroma of Go's color.YCbCrToRGB (up to 100 levels at colour edges).
var crR, cbB, crG, cbG [256]int32

func init() {
	const scale = 16
	fix := func(x float64) int32 { return int32(x*(1<<scale) + 0.5) }
	half := int32(1) << (scale - 1)
	for i := 0; i < 256; i++ {
		x := int32(i - 128)
		crR[i] = (fix(1.40200)*x + half) >> scale
		cbB[i] = (fix(1.77200)*x + half) >> scale
		crG[i] = -fix(0.71414) * x
		cbG[i] = -fix(0.34414)*x + half
	}
}

func clamp8(v int32) uint8 {
	if v < 0 {
		return 0
	}
	if v > 255 {
		return 255
	}
	return uint8(v)
}

// fromYCbCr converts a decoded JPEG's planes as libjpeg does. Chroma
// subsampled 2×1 (4:2:2) or 2×2 (4:2:0) is upsampled with libjpeg's fancy
// filter; other ratios (4:4:0, 4:1:1, 4:1:0) take the nearest sample.
func fromYCbCr(m *image.YCbCr, out *RGB) {
	b := m.Bounds()
	w, h := b.Dx(), b.Dy()
	var cb, cr []uint8 // full-resolution chroma, w×h
	switch {
	case m.SubsampleRatio == image.YCbCrSubsampleRatio422 && b.Min == (image.Point{}):
		cb, cr = fancyH2V1(m.Cb, m.CStride, w, h), fancyH2V1(m.Cr, m.CStride, w, h)
	case m.SubsampleRatio == image.YCbCrSubsampleRatio420 && b.Min == (image.Point{}):
		cb, cr = fancyH2V2(m.Cb, m.CStride, w, h), fancyH2V2(m.Cr, m.CStride, w, h)
	default:
		cb, cr = make([]uint8, w*h), make([]uint8, w*h)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				ci := m.COffset(b.Min.X+x, b.Min.Y+y)
				cb[y*w+x], cr[y*w+x] = m.Cb[ci], m.Cr[ci]
			}
		}
	}
	R, G, B := out.Pix[:w*h], out.Pix[w*h:2*w*h], out.Pix[2*w*h:]
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := y*w + x
			yv := int32(m.Y[m.YOffset(b.Min.X+x, b.Min.Y+y)])
			u, v := cb[i], cr[i]
			R[i] = clamp8(yv + crR[v])
			G[i] = clamp8(yv + (cbG[u]+crG[v])>>16)
			B[i] = clamp8(yv + cbB[u])
		}
	}
}

// fancyRow is h2v1_fancy_upsample on one row of n samples (sums of the
// vertical pass, weight one for h2v1, 4 for h2v2) into w outputs:
// 3/4 of the nearer and 1/4 of the further sample, with libjpeg's
// alternating rounding biases.
func fancyRow(dst []uint8, in []int32, w int, vertical bool) {
	n := len(in)
	put := func(i int, v int32) {
		if i < w {
			dst[i] = uint8(v)
		}
	}
	if n == 1 {
		for i := 0; i < w; i++ {
			if vertical {
				put(i, (in[0]*4+8)>>4)
			} else {
				put(i, in[0])
			}
		}
		return
	}
	if !vertical {
		put(0, in[0])
		put(1, (in[0]*3+in[1]+2)>>2)
		for c := 1; c < n-1; c++ {
			v := in[c] * 3
			put(2*c, (v+in[c-1]+1)>>2)
			put(2*c+1, (v+in[c+1]+2)>>2)
		}
		put(2*n-2, (in[n-1]*3+in[n-2]+1)>>2)
		put(2*n-1, in[n-1])
		return
	}
	put(0, (in[0]*4+8)>>4)
	put(1, (in[0]*3+in[1]+7)>>4)
	for c := 1; c < n-1; c++ {
		put(2*c, (in[c]*3+in[c-1]+8)>>4)
		put(2*c+1, (in[c]*3+in[c+1]+7)>>4)
	}
	put(2*n-2, (in[n-1]*3+in[n-2]+8)>>4)
	put(2*n-1, (in[n-1]*4+7)>>4)
}

// fancyH2V1 upsamples a 2×1-subsampled plane to w×h.
func fancyH2V1(p []uint8, stride, w, h int) []uint8 {
	n := (w + 1) / 2
	out := make([]uint8, w*h)
	row := make([]int32, n)
	for y := 0; y < h; y++ {
		for c := range row {
			row[c] = int32(p[y*stride+c])
		}
		fancyRow(out[y*w:(y+1)*w], row, w, false)
	}
	return out
}

// fancyH2V2 upsamples a 2×2-subsampled plane to w×h: each output row
// weighs its nearer input row 3 and the further 1 (the image's first and
// last rows are their own context rows).
func fancyH2V2(p []uint8, stride, w, h int) []uint8 {
	n, rows := (w+1)/2, (h+1)/2
	out := make([]uint8, w*h)
	sum := make([]int32, n)
	for y := 0; y < h; y++ {
		near := y / 2
		far := near - 1
		if y%2 == 1 {
			far = near + 1
		}
		far = min(max(far, 0), rows-1)
		for c := range sum {
			sum[c] = int32(p[near*stride+c])*3 + int32(p[far*stride+c])
		}
		fancyRow(out[y*w:(y+1)*w], sum, w, true)
	}
	return out
}
