// Package imageio decodes images (JPEG, PNG; standard library) to RGB and
// reproduces torchvision's preprocessing exactly:
//
//   - DetectionInput: GeneralizedRCNNTransform in eval mode — uint8 → float
//     /255, normalise with image_mean/image_std, resize so the short side is
//     min_size unless the long side would exceed max_size (the scale is
//     computed in float32 as torch does, the output size as
//     floor(size·scale) as interpolate(scale_factor=…,
//     recompute_scale_factor=True) does, bilinear with align_corners=False),
//     then zero-pad the batch to a multiple of 32.
//   - ClassificationInput: torchvision's ImageClassification preset on a
//     uint8 tensor (read_image + weights.transforms()): resize the short
//     side to resize_size (bilinear, no antialias, rounded back to uint8),
//     center crop, /255, normalise.
//
// Images are converted to 8-bit RGB as PIL's convert("RGB") does for the
// common cases (gray, paletted, RGBA with alpha dropped, 16-bit → 8-bit,
// CMYK via the standard library's conversion).
package imageio

import (
	"bufio"
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // register decoders
	_ "image/png"
	"io"
	"math"
	"os"

	"github.com/flbq/flbq/runtime/nn"
	"github.com/flbq/flbq/runtime/tensor"
)

// MaxPixels is the largest image (width×height) Decode accepts.
const MaxPixels = 100_000_000

// RGB is an 8-bit image in planar CHW order (R plane, G plane, B plane).
type RGB struct {
	W, H int
	Pix  []uint8 // 3·H·W
}

// Load decodes the image file at path.
func Load(path string) (*RGB, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	img, err := Decode(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return img, nil
}

// Decode reads a JPEG or PNG image, refusing empty and over-large ones
// before decoding pixels.
func Decode(r io.Reader) (*RGB, error) {
	br := bufio.NewReader(r)
	// Peek the header for the size check; DecodeConfig needs its own reader.
	head, _ := br.Peek(1 << 16)
	cfg, format, err := image.DecodeConfig(bytesReader(head))
	if err == nil {
		if cfg.Width <= 0 || cfg.Height <= 0 {
			return nil, fmt.Errorf("empty %s image (%dx%d)", format, cfg.Width, cfg.Height)
		}
		if int64(cfg.Width)*int64(cfg.Height) > MaxPixels {
			return nil, fmt.Errorf("%s image %dx%d exceeds the %d-pixel limit", format, cfg.Width, cfg.Height, MaxPixels)
		}
	}
	img, format, err := image.Decode(br)
	if err != nil {
		return nil, fmt.Errorf("decode image: %w", err)
	}
	b := img.Bounds()
	if b.Dx() <= 0 || b.Dy() <= 0 {
		return nil, fmt.Errorf("empty %s image", format)
	}
	if int64(b.Dx())*int64(b.Dy()) > MaxPixels {
		return nil, fmt.Errorf("%s image %dx%d exceeds the %d-pixel limit", format, b.Dx(), b.Dy(), MaxPixels)
	}
	return FromImage(img), nil
}

type byteReader struct {
	b []byte
	i int
}

func (r *byteReader) Read(p []byte) (int, error) {
	if r.i >= len(r.b) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.i:])
	r.i += n
	return n, nil
}

func bytesReader(b []byte) io.Reader { return &byteReader{b: b} }

// FromImage converts any image.Image to planar RGB.
func FromImage(img image.Image) *RGB {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	out := &RGB{W: w, H: h, Pix: make([]uint8, 3*w*h)}
	R, G, B := out.Pix[:w*h], out.Pix[w*h:2*w*h], out.Pix[2*w*h:]
	set := func(i int, r, g, bb uint8) { R[i], G[i], B[i] = r, g, bb }
	switch m := img.(type) {
	case *image.YCbCr:
		fromYCbCr(m, out)
	case *image.NRGBA:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride:]
			for x := 0; x < w; x++ {
				set(y*w+x, row[4*x], row[4*x+1], row[4*x+2])
			}
		}
	case *image.Gray:
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				v := m.Pix[y*m.Stride+x]
				set(y*w+x, v, v, v)
			}
		}
	default:
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				c := color.NRGBA64Model.Convert(img.At(b.Min.X+x, b.Min.Y+y)).(color.NRGBA64)
				set(y*w+x, uint8(c.R>>8), uint8(c.G>>8), uint8(c.B>>8))
			}
		}
	}
	return out
}

// DetectionInput is one preprocessed image for a detector.
type DetectionInput struct {
	Batch      *tensor.Tensor // [1, 3, Hp, Wp], zero-padded to a multiple of SizeDivisible
	Height     int            // resized image size inside the padded batch (image_sizes)
	Width      int
	OrigHeight int // original image size
	OrigWidth  int
}

// SizeDivisible is GeneralizedRCNNTransform's batch padding multiple.
const SizeDivisible = 32

// DetectionScale is the resize factor torchvision uses (float32 arithmetic:
// min(min_size·(1/short), max_size·(1/long)), as Python's scalar/tensor
// division computes a reciprocal and a product).
func DetectionScale(h, w, minSize, maxSize int) float32 {
	short, long := float32(min(h, w)), float32(max(h, w))
	a := (1 / short) * float32(minSize)
	b := (1 / long) * float32(maxSize)
	return min(a, b)
}

// DetectionSize returns the resized height and width.
func DetectionSize(h, w, minSize, maxSize int) (int, int) {
	s := float64(DetectionScale(h, w, minSize, maxSize))
	return nn.ScaledSize(h, s), nn.ScaledSize(w, s)
}

// Normalize converts uint8 planes to float32: (v/255 - mean)/std per channel.
func Normalize(img *RGB, mean, std []float64) []float32 {
	hw := img.W * img.H
	out := make([]float32, 3*hw)
	for c := 0; c < 3; c++ {
		m, s := float32(mean[c]), float32(std[c])
		for i, v := range img.Pix[c*hw : (c+1)*hw] {
			out[c*hw+i] = (float32(v)/255 - m) / s
		}
	}
	return out
}

// Detection preprocesses one image as GeneralizedRCNNTransform does.
func Detection(img *RGB, minSize, maxSize int, mean, std []float64) *DetectionInput {
	return DetectionTransform{MinSize: minSize, MaxSize: maxSize, Mean: mean, Std: std}.Apply(img)
}

// ClassificationSize is torchvision's resize-to-short-side output size.
func ClassificationSize(h, w, size int) (int, int) {
	short, long := w, h
	if w > h {
		short, long = h, w
	}
	newLong := int(float64(size) * float64(long) / float64(short))
	if w <= h {
		return newLong, size
	}
	return size, newLong
}

// Classification preprocesses one image as torchvision's ImageClassification
// preset does on a uint8 tensor; the result is [1, 3, crop, crop].
func Classification(img *RGB, resize, crop int, mean, std []float64) (*tensor.Tensor, error) {
	oh, ow := ClassificationSize(img.H, img.W, resize)
	if oh < crop || ow < crop {
		return nil, fmt.Errorf("resized image %dx%d is smaller than the %d crop", ow, oh, crop)
	}
	f := make([]float32, len(img.Pix))
	for i, v := range img.Pix {
		f[i] = float32(v)
	}
	r := nn.ResizeBilinear(f, 3, img.H, img.W, oh, ow)
	top := int(math.RoundToEven(float64(oh-crop) / 2))
	left := int(math.RoundToEven(float64(ow-crop) / 2))
	out := tensor.New(1, 3, crop, crop)
	for c := 0; c < 3; c++ {
		m, s := float32(mean[c]), float32(std[c])
		for y := 0; y < crop; y++ {
			src := r[(c*oh+top+y)*ow+left:]
			dst := out.Data[(c*crop+y)*crop : (c*crop+y+1)*crop]
			for x := range dst {
				v := float32(math.RoundToEven(float64(src[x])))
				v = min(max(v, 0), 255)
				dst[x] = (v/255 - m) / s
			}
		}
	}
	return out, nil
}
