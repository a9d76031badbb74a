package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"

	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/flbq/flbq/runtime/imageio"
	"github.com/flbq/flbq/runtime/maskrcnn"
)

// palette holds distinct colours, one per label (cycled).
var palette = []color.RGBA{
	{230, 25, 75, 255}, {60, 180, 75, 255}, {255, 225, 25, 255}, {0, 130, 200, 255}, {245, 130, 48, 255},
	{145, 30, 180, 255}, {70, 240, 240, 255}, {240, 50, 230, 255}, {210, 245, 60, 255}, {250, 190, 212, 255},
	{0, 128, 128, 255}, {220, 190, 255, 255}, {170, 110, 40, 255}, {128, 0, 0, 255}, {170, 255, 195, 255},
	{128, 128, 0, 255}, {0, 0, 128, 255}, {255, 215, 180, 255},
}

// drawDetections renders img with translucent masks, boxes and
// "class score" labels (lowest score first, so the best lie on top) as PNG.
func drawDetections(w io.Writer, img *imageio.RGB, dets []maskrcnn.Detection) error {
	W, H := img.W, img.H
	canvas := image.NewRGBA(image.Rect(0, 0, W, H))
	hw := W * H
	for i := 0; i < hw; i++ {
		canvas.Pix[4*i], canvas.Pix[4*i+1], canvas.Pix[4*i+2], canvas.Pix[4*i+3] = img.Pix[i], img.Pix[hw+i], img.Pix[2*hw+i], 255
	}
	thick := max(1, min(W, H)/250)
	for k := len(dets) - 1; k >= 0; k-- {
		d := dets[k]
		col := palette[d.Label%len(palette)]
		if m := d.Mask; m != nil {
			r := m.Rect
			for y := r.Min.Y; y < r.Max.Y; y++ {
				for x := r.Min.X; x < r.Max.X; x++ {
					if m.Pix[(y-r.Min.Y)*r.Dx()+x-r.Min.X] == 0 {
						continue
					}
					o := canvas.PixOffset(x, y)
					for c, v := range [3]uint8{col.R, col.G, col.B} {
						canvas.Pix[o+c] = uint8((uint16(canvas.Pix[o+c])*55 + uint16(v)*45) / 100)
					}
				}
			}
		}
		x0, y0 := int(d.Box[0]), int(d.Box[1])
		x1, y1 := int(d.Box[2]+0.5), int(d.Box[3]+0.5)
		for t := 0; t < thick; t++ {
			rect(canvas, x0+t, y0+t, x1-t, y1-t, col)
		}
		name := d.ClassName
		if name == "" {
			name = fmt.Sprintf("class %d", d.Label)
		}
		label(canvas, x0, y0, fmt.Sprintf("%s %.2f", name, d.Score), col)
	}
	return png.Encode(w, canvas)
}

func rect(img *image.RGBA, x0, y0, x1, y1 int, c color.RGBA) {
	b := img.Bounds()
	if x1 < x0 || y1 < y0 {
		return
	}
	for x := x0; x <= x1; x++ {
		for _, y := range [2]int{y0, y1} {
			if (image.Point{x, y}).In(b) {
				img.SetRGBA(x, y, c)
			}
		}
	}
	for y := y0; y <= y1; y++ {
		for _, x := range [2]int{x0, x1} {
			if (image.Point{x, y}).In(b) {
				img.SetRGBA(x, y, c)
			}
		}
	}
}

// label writes text on a filled box of the class colour just above (or,
// at the top edge, inside) the detection box.
func label(img *image.RGBA, x, y int, text string, bg color.RGBA) {
	face := basicfont.Face7x13
	tw := font.MeasureString(face, text).Ceil() + 4
	th := 14
	if y-th < 0 {
		y = th
	}
	x = max(0, min(x, img.Bounds().Dx()-tw))
	r := image.Rect(x, y-th, x+tw, y).Intersect(img.Bounds())
	draw.Draw(img, r, &image.Uniform{bg}, image.Point{}, draw.Src)
	fg := color.RGBA{255, 255, 255, 255}
	if int(bg.R)*299+int(bg.G)*587+int(bg.B)*114 > 150000 {
		fg = color.RGBA{0, 0, 0, 255}
	}
	dr := &font.Drawer{Dst: img, Src: &image.Uniform{fg}, Face: face, Dot: fixed.P(x+2, y-3)}
	dr.DrawString(text)
}
