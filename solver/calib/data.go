package calib

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/flbq/flbq/runtime/backend"
	"github.com/flbq/flbq/runtime/coco"
	"github.com/flbq/flbq/runtime/imageio"
	"github.com/flbq/flbq/runtime/model"
	"github.com/flbq/flbq/runtime/tensor"
)

// SelectImages draws n images uniformly at random without replacement
// (PCG seeded with seed, over the images sorted by id) and returns them
// sorted by id. With fewer than n images it returns all of them and a
// warning.
func SelectImages(ds *coco.Dataset, n int, seed uint64) ([]coco.Image, string) {
	imgs := slices.Clone(ds.Images)
	slices.SortFunc(imgs, func(a, b coco.Image) int { return cmpInt64(a.ID, b.ID) })
	warn := ""
	if len(imgs) <= n {
		if len(imgs) < n {
			warn = fmt.Sprintf("the dataset has %d images, fewer than the calibration size %d: using all of them", len(imgs), n)
		}
		return imgs, warn
	}
	rng := rand.New(rand.NewPCG(seed, 0x666c6271)) // "flbq"
	perm := rng.Perm(len(imgs))[:n]
	sel := make([]coco.Image, n)
	for i, p := range perm {
		sel[i] = imgs[p]
	}
	slices.SortFunc(sel, func(a, b coco.Image) int { return cmpInt64(a.ID, b.ID) })
	return sel, warn
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// LoadInputs decodes the images from dir and preprocesses each exactly as
// detection inference does (imageio.Detection with the model's min/max size,
// mean and std: a [1, 3, H, W] batch padded to a multiple of 32). Every
// missing file is checked before any decoding, and the error names them.
func LoadInputs(cfg *model.Config, dir string, imgs []coco.Image) ([]*tensor.Tensor, error) {
	var missing []string
	for _, im := range imgs {
		p := filepath.Join(dir, im.FileName)
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		list := missing
		more := ""
		if len(list) > 5 {
			list, more = list[:5], fmt.Sprintf(" (and %d more)", len(missing)-5)
		}
		return nil, fmt.Errorf("%d calibration image(s) missing: %s%s", len(missing), strings.Join(list, ", "), more)
	}
	out := make([]*tensor.Tensor, len(imgs))
	errs := make([]error, len(imgs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, backend.Threads())
	for i, im := range imgs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			p := filepath.Join(dir, im.FileName)
			rgb, err := imageio.Load(p)
			if err != nil {
				errs[i] = fmt.Errorf("image %d (%s): %w", im.ID, p, err)
				return
			}
			out[i] = cfg.Transform().Apply(rgb).Batch
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// Batch is a stack of preprocessed images of one padded size.
type Batch struct {
	Images []int          // indices into the calibration set
	X      *tensor.Tensor // [len(Images), 3, H, W]
}

// MaxBatchPixels caps a batch's padded pixels (one image may exceed it):
// calibration keeps every block's input of a batch and several quantized
// copies of the largest activations, about 3.5 GB per million pixels at
// Swin-T size, so eight 800×1067 images would need 24 GB.
const MaxBatchPixels = 1 << 20

// MakeBatches stacks inputs ([1,3,H,W] each) of equal size into batches of
// at most size images and MaxBatchPixels (images of different sizes never
// share a batch, so every image's features are exactly its own
// single-image features).
func MakeBatches(inputs []*tensor.Tensor, size int) []Batch {
	if size <= 0 {
		size = 1
	}
	idx := make([]int, len(inputs))
	for i := range idx {
		idx[i] = i
	}
	shape := func(i int) [2]int { return [2]int{inputs[i].Shape[2], inputs[i].Shape[3]} }
	slices.SortStableFunc(idx, func(a, b int) int {
		sa, sb := shape(a), shape(b)
		if sa[0] != sb[0] {
			return sa[0] - sb[0]
		}
		return sa[1] - sb[1]
	})
	var out []Batch
	for i := 0; i < len(idx); {
		s := shape(idx[i])
		n := min(size, max(1, MaxBatchPixels/(s[0]*s[1])))
		j := i
		for j < len(idx) && j-i < n && shape(idx[j]) == s {
			j++
		}
		x := tensor.New(j-i, 3, s[0], s[1])
		per := 3 * s[0] * s[1]
		for k := i; k < j; k++ {
			copy(x.Data[(k-i)*per:(k-i+1)*per], inputs[idx[k]].Data)
		}
		out = append(out, Batch{Images: slices.Clone(idx[i:j]), X: x})
		i = j
	}
	return out
}

// featureSSE returns, per image of the batch, ‖a − b‖² / numel over all
// backbone outputs (NCHW, batch-major).
func featureSSE(a, b []*tensor.Tensor, n int) []float64 {
	sse := make([]float64, n)
	numel := 0
	for k := range a {
		per := a[k].Numel() / n
		numel += per
		for i := 0; i < n; i++ {
			x := a[k].Data[i*per : (i+1)*per]
			y := b[k].Data[i*per : (i+1)*per]
			var s float64
			for j, v := range x {
				d := float64(v) - float64(y[j])
				s += d * d
			}
			sse[i] += s
		}
	}
	for i := range sse {
		sse[i] /= float64(numel)
	}
	return sse
}
