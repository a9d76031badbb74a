package cocomask

// BoxIoU returns the IoU of detection box d and ground-truth box g
// (bbIou). For a crowd g the union is the detection's area alone.
func BoxIoU(d, g Box, crowd bool) float64 {
	w := min(d[2]+d[0], g[2]+g[0]) - max(d[0], g[0])
	if w <= 0 {
		return 0
	}
	h := min(d[3]+d[1], g[3]+g[1]) - max(d[1], g[1])
	if h <= 0 {
		return 0
	}
	i := float64(w * h)
	da := float64(d[2] * d[3])
	var u float64
	if crowd {
		u = da
	} else {
		ga := float64(g[2] * g[3])
		u = da + ga - i
	}
	return i / u
}

// BoxIoUs fills o[d*len(gt)+g] with BoxIoU(dt[d], gt[g], iscrowd[g]).
// iscrowd may be nil (no crowds). o must have len(dt)*len(gt) entries.
func BoxIoUs(dt, gt []Box, iscrowd []bool, o []float64) {
	for d := range dt {
		for g := range gt {
			o[d*len(gt)+g] = BoxIoU(dt[d], gt[g], iscrowd != nil && iscrowd[g])
		}
	}
}

// MaskIoU returns the IoU of detection mask d and ground-truth mask g as
// rleIou computes it, given their bounding boxes (ToBbox): 0 when the
// boxes do not overlap, -1 when the mask sizes differ, and for a crowd g
// intersection over the detection's area.
func MaskIoU(d, g RLE, db, gb Box, crowd bool) float64 {
	if BoxIoU(db, gb, crowd) <= 0 {
		return 0
	}
	if d.H != g.H || d.W != g.W {
		return -1
	}
	if len(d.Counts) == 0 || len(g.Counts) == 0 {
		return 0
	}
	ka, kb := len(d.Counts), len(g.Counts)
	ca, cb := d.Counts[0], g.Counts[0]
	var va, vb bool
	a, b := 1, 1
	var i, u uint32
	ct := uint32(1)
	for ct > 0 {
		c := min(ca, cb)
		if va || vb {
			u += c
			if va && vb {
				i += c
			}
		}
		ct = 0
		ca -= c
		if ca == 0 && a < ka {
			ca = d.Counts[a]
			a++
			va = !va
		}
		ct += ca
		cb -= c
		if cb == 0 && b < kb {
			cb = g.Counts[b]
			b++
			vb = !vb
		}
		ct += cb
	}
	if i == 0 {
		u = 1
	} else if crowd {
		u = d.Area()
	}
	return float64(i) / float64(u)
}
