package cocomask

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// randomMask returns a row-major mask with a few random rectangles and
// blobs (or empty/full ones).
func randomMask(rng *rand.Rand, h, w int) []byte {
	m := make([]byte, h*w)
	switch rng.IntN(8) {
	case 0:
		return m
	case 1:
		for i := range m {
			m[i] = 1
		}
		return m
	}
	for n := rng.IntN(4) + 1; n > 0; n-- {
		x0, y0 := rng.IntN(w), rng.IntN(h)
		x1, y1 := x0+rng.IntN(w-x0)+1, y0+rng.IntN(h-y0)+1
		for y := y0; y < y1; y++ {
			for x := x0; x < x1; x++ {
				if rng.IntN(10) > 0 {
					m[y*w+x] = 1
				}
			}
		}
	}
	return m
}

func TestEncodeDecodeAreaBbox(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for it := 0; it < 300; it++ {
		h, w := rng.IntN(20)+1, rng.IntN(20)+1
		m := randomMask(rng, h, w)
		r := Encode(m, h, w)
		if err := r.Validate(); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(r.Decode(), m) {
			t.Fatalf("decode(encode(m)) != m")
		}
		// brute-force area and bounding box
		area := 0
		x0, y0, x1, y1 := w, h, -1, -1
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				if m[y*w+x] != 0 {
					area++
					x0, y0, x1, y1 = min(x0, x), min(y0, y), max(x1, x), max(y1, y)
				}
			}
		}
		if int(r.Area()) != area {
			t.Fatalf("area %d, want %d", r.Area(), area)
		}
		want := Box{}
		if area > 0 {
			want = Box{float64(x0), float64(y0), float64(x1 - x0 + 1), float64(y1 - y0 + 1)}
		}
		if got := r.ToBbox(); got != want {
			t.Fatalf("bbox %v, want %v", got, want)
		}
		// string form round trip
		s := r.String()
		r2, err := FromString(s, h, w)
		if err != nil {
			t.Fatalf("FromString(%q): %v", s, err)
		}
		if !slices.Equal(r2.Counts, r.Counts) {
			t.Fatalf("string round trip: %v != %v", r2.Counts, r.Counts)
		}
	}
}

func TestMergeAndIoU(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for it := 0; it < 300; it++ {
		h, w := rng.IntN(16)+1, rng.IntN(16)+1
		a, b := randomMask(rng, h, w), randomMask(rng, h, w)
		ra, rb := Encode(a, h, w), Encode(b, h, w)
		var or, and []byte
		inter, uni, areaA := 0, 0, 0
		for i := range a {
			or = append(or, a[i]|b[i])
			and = append(and, a[i]&b[i])
			inter += int(a[i] & b[i])
			uni += int(a[i] | b[i])
			areaA += int(a[i])
		}
		if got := Merge([]RLE{ra, rb}, false); !slices.Equal(got.Decode(), or) {
			t.Fatalf("union wrong")
		}
		if got := Merge([]RLE{ra, rb}, true); !slices.Equal(got.Decode(), and) {
			t.Fatalf("intersection wrong")
		}
		for _, crowd := range []bool{false, true} {
			want := 0.0
			if inter > 0 {
				if crowd {
					want = float64(inter) / float64(areaA)
				} else {
					want = float64(inter) / float64(uni)
				}
			}
			if got := MaskIoU(ra, rb, ra.ToBbox(), rb.ToBbox(), crowd); got != want {
				t.Fatalf("iou crowd=%v: %v, want %v", crowd, got, want)
			}
		}
	}
	// different sizes with overlapping boxes: -1, as rleIou
	a := Encode([]byte{1, 1, 1, 1}, 2, 2)
	b := Encode([]byte{1, 1, 1, 1, 1, 1}, 2, 3)
	if got := MaskIoU(a, b, a.ToBbox(), b.ToBbox(), false); got != -1 {
		t.Fatalf("size mismatch iou %v, want -1", got)
	}
}

func TestBoxIoU(t *testing.T) {
	cases := []struct {
		d, g  Box
		crowd bool
		want  float64
	}{
		{Box{0, 0, 10, 10}, Box{0, 0, 10, 10}, false, 1},
		{Box{0, 0, 10, 10}, Box{5, 0, 10, 10}, false, 50.0 / 150},
		{Box{0, 0, 10, 10}, Box{5, 0, 10, 10}, true, 50.0 / 100},
		{Box{0, 0, 10, 10}, Box{10, 0, 10, 10}, false, 0},
		{Box{0, 0, 2, 2}, Box{0, 0, 100, 100}, true, 1},
	}
	for _, c := range cases {
		if got := BoxIoU(c.d, c.g, c.crowd); got != c.want {
			t.Errorf("BoxIoU(%v, %v, %v) = %v, want %v", c.d, c.g, c.crowd, got, c.want)
		}
	}
}

func TestFrPolyHandCases(t *testing.T) {
	// A 4×4 square from (1,1) to (5,5) on an 8×8 image covers pixels
	// 1..4 in x and y (pixel centres inside): area 16, box [1 1 4 4].
	r, err := FrPoly([]float64{1, 1, 5, 1, 5, 5, 1, 5}, 8, 8)
	if err != nil {
		t.Fatal(err)
	}
	if r.Area() != 16 || r.ToBbox() != (Box{1, 1, 4, 4}) {
		t.Fatalf("square: area %d box %v", r.Area(), r.ToBbox())
	}
	// Degenerate polygons: fewer than one point gives an empty mask.
	for _, xy := range [][]float64{nil, {3}, {3, 3}} {
		r, err := FrPoly(xy, 5, 6)
		if err != nil || r.Area() != 0 || r.Validate() != nil {
			t.Fatalf("%v: %v %v", xy, r, err)
		}
	}
	// Far-away coordinates are rejected, not allocated.
	if _, err := FrPoly([]float64{0, 0, 9e7, 0, 0, 9e7}, 10, 10); err == nil {
		t.Fatal("huge polygon accepted")
	}
}

func TestFromStringErrors(t *testing.T) {
	for _, s := range []string{"0", "\x7f", "Q", "1", "9"} {
		if _, err := FromString(s, 2, 2); err == nil {
			t.Errorf("FromString(%q) accepted", s)
		}
	}
	r, err := FromString("04", 2, 2) // 0 zeros, 4 ones
	if err != nil || r.Area() != 4 {
		t.Fatalf("%v %v", r, err)
	}
}

func FuzzFromString(f *testing.F) {
	for _, s := range []string{"", "04", "[31a3000000000O2O0", "Ul33P:2O1M3M3O0006I2Nb_\\2", "0000000", "ooooooo0", "PPPPPPP"} {
		f.Add(s, 7, 9)
	}
	f.Fuzz(func(t *testing.T, s string, h, w int) {
		h, w = h%2000, w%2000
		r, err := FromString(s, h, w)
		if err != nil {
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("accepted invalid RLE: %v", err)
		}
		// Canonical strings round-trip exactly.
		r2, err := FromString(r.String(), h, w)
		if err != nil || !slices.Equal(r2.Counts, r.Counts) {
			t.Fatalf("round trip: %v %v", r2, err)
		}
		_ = r.ToBbox()
		_ = r.Area()
		if h*w <= 1<<16 {
			if !slices.Equal(Encode(r.Decode(), h, w).Counts, canonical(r.Counts)) {
				t.Fatalf("decode/encode mismatch")
			}
		}
	})
}

// canonical drops empty runs in the middle of counts (Encode never makes
// them), keeping a leading 0.
func canonical(c []uint32) []uint32 {
	var out []uint32
	v := 0 // value of the run being built (0 or 1)
	for i, n := range c {
		val := i % 2
		if len(out) == 0 {
			out = append(out, n)
			v = val
			continue
		}
		if val == v {
			out[len(out)-1] += n
		} else if n > 0 || i == len(c)-1 {
			out = append(out, n)
			v = val
		}
	}
	// trailing empty run
	if len(out) > 1 && out[len(out)-1] == 0 {
		out = out[:len(out)-1]
	}
	if len(out) == 0 {
		out = []uint32{0}
	}
	return out
}
