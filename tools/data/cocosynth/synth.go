// Package cocosynth makes synthetic COCO ground truth and detections of
// any size, for benchmarking the evaluator: COCO-like images, 80
// categories with non-contiguous ids, polygon objects of small, medium
// and large sizes (and a few crowd regions as RLE), and detector-like
// results (jittered copies of objects, duplicates, false positives) with
// boxes and compressed-RLE masks.
package cocosynth

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/coco"
	"github.com/flbq/flbq/runtime/cocomask"
)

// Options size the synthetic set.
type Options struct {
	Images        int     // number of images
	DetsPerImage  int     // detections per image (COCO's cap is 100)
	ObjectsPerImg float64 // mean ground-truth objects per image (default 7)
	Categories    int     // default 80
	Seed          uint64
}

// Generate returns the ground truth and detections. The result depends
// only on the options (not on backend.Threads).
func Generate(o Options) (*coco.Dataset, []coco.Result) {
	if o.ObjectsPerImg == 0 {
		o.ObjectsPerImg = 7
	}
	if o.Categories == 0 {
		o.Categories = 80
	}
	workers := backend.Threads()
	d := &coco.Dataset{}
	for k := 0; k < o.Categories; k++ {
		d.Categories = append(d.Categories, coco.Category{ID: int64(k + 1 + k/9), Name: "cat" + string(rune('A'+k%26)), Supercategory: "thing"})
	}
	type imgOut struct {
		img  coco.Image
		anns []coco.Annotation
		dets []coco.Result
	}
	outs := make([]imgOut, o.Images)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= o.Images {
					return
				}
				img, anns, dets := genImage(o, d.Categories, i)
				outs[i] = imgOut{img, anns, dets}
			}
		}()
	}
	wg.Wait()
	var dets []coco.Result
	annID := int64(1)
	for _, x := range outs {
		d.Images = append(d.Images, x.img)
		for _, a := range x.anns {
			a.ID = annID
			annID++
			d.Annotations = append(d.Annotations, a)
		}
		dets = append(dets, x.dets...)
	}
	return d, dets
}

// polygon is a star-shaped polygon around (cx, cy) with radius r.
func polygon(rng *rand.Rand, cx, cy, r float64) []float64 {
	n := 6 + rng.IntN(14)
	rough := 0.1 + 0.4*rng.Float64()
	p := make([]float64, 0, 2*n)
	for j := 0; j < n; j++ {
		a := 2 * math.Pi * (float64(j) + 0.3*rng.Float64()) / float64(n)
		rr := r * (1 - rough*rng.Float64())
		p = append(p, round2(cx+rr*math.Cos(a)), round2(cy+rr*math.Sin(a)))
	}
	return p
}

func round2(v float64) float64 { return math.Round(v*100) / 100 }

func genImage(o Options, cats []coco.Category, i int) (coco.Image, []coco.Annotation, []coco.Result) {
	rng := rand.New(rand.NewPCG(o.Seed, uint64(i)))
	w, h := 480+rng.IntN(161), 360+rng.IntN(281)
	img := coco.Image{ID: int64(1000 + 3*i), FileName: "synthetic.jpg", Width: w, Height: h}
	// A few categories per image, as in COCO.
	nc := 1 + rng.IntN(4)
	imgCats := make([]int64, nc)
	for j := range imgCats {
		imgCats[j] = cats[rng.IntN(len(cats))].ID
	}
	nObj := int(math.Round(o.ObjectsPerImg * 2 * rng.Float64()))
	type obj struct {
		cat  int64
		poly []float64
		r    float64
	}
	var objs []obj
	var anns []coco.Annotation
	for j := 0; j < nObj; j++ {
		// log-uniform radius: about 40% small, 35% medium, 25% large
		r := math.Exp(math.Log(3) + (math.Log(150)-math.Log(3))*math.Pow(rng.Float64(), 1.2))
		cx, cy := float64(w)*rng.Float64(), float64(h)*rng.Float64()
		cat := imgCats[rng.IntN(nc)]
		a := coco.Annotation{ImageID: img.ID, CategoryID: cat}
		p := polygon(rng, cx, cy, r)
		m, _ := cocomask.FrPoly(p, h, w)
		if m.Area() == 0 {
			continue
		}
		if rng.IntN(100) == 0 {
			// crowd region: uncompressed RLE of a large blob
			a.IsCrowd = true
			a.Segmentation = coco.Segmentation{Kind: coco.SegRLE, Size: [2]int{h, w}, Counts: m.Counts}
		} else {
			a.Segmentation = coco.Segmentation{Kind: coco.SegPolygons, Polygons: [][]float64{p}}
			objs = append(objs, obj{cat, p, r})
		}
		a.Area = float64(m.Area())
		a.BBox = m.ToBbox()
		anns = append(anns, a)
	}
	// Detections: jittered copies of objects (some twice), then false
	// positives, until DetsPerImage.
	var dets []coco.Result
	add := func(cat int64, p []float64, score float64) {
		m, _ := cocomask.FrPoly(p, h, w)
		if m.Area() == 0 {
			return
		}
		score = float64(float32(score))
		dets = append(dets, coco.Result{ImageID: img.ID, CategoryID: cat, Score: score, BBox: m.ToBbox(), HasBBox: true, Segmentation: coco.RLESegmentation(m)})
	}
	for _, ob := range objs {
		copies := 1 + rng.IntN(2)
		if rng.IntN(8) == 0 {
			copies = 0 // missed
		}
		for c := 0; c < copies && len(dets) < o.DetsPerImage; c++ {
			jit := ob.r * 0.25 * rng.Float64()
			dx, dy, s := jit*(rng.Float64()*2-1), jit*(rng.Float64()*2-1), 1+0.3*(rng.Float64()*2-1)*rng.Float64()
			cx, cy := centre(ob.poly)
			q := make([]float64, len(ob.poly))
			for k := 0; k < len(q); k += 2 {
				q[k] = round2(cx + (ob.poly[k]-cx)*s + dx)
				q[k+1] = round2(cy + (ob.poly[k+1]-cy)*s + dy)
			}
			add(ob.cat, q, 0.3+0.7*rng.Float64())
		}
	}
	for tries := 0; len(dets) < o.DetsPerImage && tries < 10*o.DetsPerImage; tries++ {
		cat := imgCats[rng.IntN(nc)]
		if rng.IntN(3) == 0 {
			cat = cats[rng.IntN(len(cats))].ID
		}
		r := math.Exp(math.Log(4) + (math.Log(120)-math.Log(4))*rng.Float64())
		add(cat, polygon(rng, float64(w)*rng.Float64(), float64(h)*rng.Float64(), r), 0.6*rng.Float64())
	}
	// Shuffle like a detector's output order.
	rng.Shuffle(len(dets), func(a, b int) { dets[a], dets[b] = dets[b], dets[a] })
	return img, anns, dets
}

func centre(p []float64) (float64, float64) {
	var x, y float64
	for k := 0; k < len(p); k += 2 {
		x += p[k]
		y += p[k+1]
	}
	n := float64(len(p) / 2)
	return x / n, y / n
}
