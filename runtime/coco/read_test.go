package coco

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/flbq/flbq/runtime/cocomask"
)

// TestGoldenRLEs: every ground-truth mask (polygons merged, both RLE
// forms) is bit-identical to the one pycocotools built.
func TestGoldenRLEs(t *testing.T) {
	for _, c := range []string{"case1_small", "case2_crowd_rle", "case4_edge"} {
		t.Run(c, func(t *testing.T) {
			gt, err := ReadDataset(goldenPath(t, c, "gt.json"))
			if err != nil {
				t.Fatal(err)
			}
			var want map[string]struct {
				Size   [2]int `json:"size"`
				Counts string `json:"counts"`
				Area   uint32 `json:"area"`
			}
			readJSON(t, goldenPath(t, c, "gt_rles.json"), &want)
			if len(want) != len(gt.Annotations) {
				t.Fatalf("%d golden masks for %d annotations", len(want), len(gt.Annotations))
			}
			imgs := map[int64]Image{}
			for _, im := range gt.Images {
				imgs[im.ID] = im
			}
			polys := 0
			for _, a := range gt.Annotations {
				w, ok := want[strconv.FormatInt(a.ID, 10)]
				if !ok {
					t.Fatalf("annotation %d has no golden mask", a.ID)
				}
				im := imgs[a.ImageID]
				r, err := a.Segmentation.ToRLE(im.Height, im.Width)
				if err != nil {
					t.Fatalf("annotation %d: %v", a.ID, err)
				}
				if a.Segmentation.Kind == SegPolygons {
					polys++
				}
				if got := r.String(); got != w.Counts || [2]int{r.H, r.W} != w.Size || r.Area() != w.Area {
					t.Errorf("annotation %d (%d polygons): mask differs: area %d want %d\n got %s\nwant %s",
						a.ID, len(a.Segmentation.Polygons), r.Area(), w.Area, got, w.Counts)
				}
			}
			if polys == 0 {
				t.Fatal("no polygons checked")
			}
		})
	}
}

// TestGroundTruthAsDetections: on the golden datasets with crowd RLEs and
// polygons, every annotation rasterises inside its box, and the ground
// truth fed back as detections (through the results format) scores AP 1,
// with AR@1 and AR@10 what maxDets allows; an annotation with id 0 can
// never match (pycocotools' quirk, which this package keeps).
func TestGroundTruthAsDetections(t *testing.T) {
	for _, c := range []string{"case2_crowd_rle", "case3_many", "case4_edge"} {
		t.Run(c, func(t *testing.T) {
			t.Parallel()
			gt, err := ReadDataset(goldenPath(t, c, "gt.json"))
			if err != nil {
				t.Fatal(err)
			}
			checkGroundTruthAsDetections(t, gt)
		})
	}
}

func checkGroundTruthAsDetections(t *testing.T, gt *Dataset) {
	imgs := map[int64]Image{}
	for _, im := range gt.Images {
		imgs[im.ID] = im
	}
	var dets []Result
	crowds := 0
	for i, a := range gt.Annotations {
		if a.ID == 0 {
			t.Fatal("golden annotation with id 0")
		}
		im := imgs[a.ImageID]
		m, err := a.Segmentation.ToRLE(im.Height, im.Width)
		if err != nil {
			t.Fatalf("annotation %d: %v", a.ID, err)
		}
		if m.H != im.Height || m.W != im.Width {
			t.Fatalf("annotation %d: mask %dx%d on a %dx%d image", a.ID, m.H, m.W, im.Height, im.Width)
		}
		if m.Area() > 0 {
			// The mask lies inside the annotation's box (up to rounding).
			mb := m.ToBbox()
			if mb[0] < a.BBox[0]-1 || mb[1] < a.BBox[1]-1 || mb[0]+mb[2] > a.BBox[0]+a.BBox[2]+1 || mb[1]+mb[3] > a.BBox[1]+a.BBox[3]+1 {
				t.Errorf("annotation %d: mask box %v outside bbox %v", a.ID, mb, a.BBox)
			}
		}
		if a.IsCrowd {
			crowds++
			continue
		}
		dets = append(dets, Result{ImageID: a.ImageID, CategoryID: a.CategoryID, Score: 1 - float64(i)/float64(len(gt.Annotations)+1),
			BBox: a.BBox, HasBBox: true, Segmentation: RLESegmentation(m)})
	}
	if crowds == 0 {
		t.Fatal("no crowd annotations")
	}
	// Through the results file format and back.
	var buf bytes.Buffer
	if err := EncodeResults(&buf, dets); err != nil {
		t.Fatal(err)
	}
	back, err := DecodeResults(&buf)
	if err != nil {
		t.Fatal(err)
	}
	// AP 1 over all areas; AR@1 and AR@10 per category are the sum over
	// images of min(maxDets, n) / n.
	n := map[[2]int64]int{}
	for _, a := range gt.Annotations {
		if !a.IsCrowd {
			n[[2]int64{a.CategoryID, a.ImageID}]++
		}
	}
	arAt := func(maxDet int) float64 {
		found, total := map[int64]int{}, map[int64]int{}
		for k, c := range n {
			found[k[0]] += min(c, maxDet)
			total[k[0]] += c
		}
		s := 0.0
		for c := range total {
			s += float64(found[c]) / float64(total[c])
		}
		return s / float64(len(total))
	}
	for _, typ := range []IoUType{BBox, Segm} {
		e, err := Evaluate(gt, back, typ, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range e.Stats {
			want := 1.0
			switch StatNames[i] {
			case "AR1":
				want = arAt(1)
			case "AR10":
				want = arAt(10)
			}
			if s != -1 && math.Abs(s-want) > 1e-12 {
				t.Errorf("%v %s = %v, want %v", typ, StatNames[i], s, want)
			}
		}
		if e.Stats[0] == -1 || e.Stats[8] == -1 {
			t.Fatalf("%v: no AP", typ)
		}
	}
	// Renumber the first non-crowd annotation to id 0: exactly that one is
	// missed, so its category's AR@100 drops to (m−1)/m.
	zero := *gt
	zero.Annotations = append([]Annotation(nil), gt.Annotations...)
	var cat int64
	for i, a := range zero.Annotations {
		if !a.IsCrowd {
			zero.Annotations[i].ID, cat = 0, a.CategoryID
			break
		}
	}
	m := 0
	for k, c := range n {
		if k[0] == cat {
			m += c
		}
	}
	for _, typ := range []IoUType{BBox, Segm} {
		e, err := Evaluate(&zero, back, typ, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for _, pc := range e.PerCategory() {
			want := 1.0
			if pc.CategoryID == cat {
				want = float64(m-1) / float64(m)
			}
			if pc.AR100 != -1 && math.Abs(pc.AR100-want) > 1e-12 {
				t.Errorf("%v category %d: AR100 %v, want %v", typ, pc.CategoryID, pc.AR100, want)
			}
		}
	}
}

func TestDatasetErrors(t *testing.T) {
	good := `{"images":[{"id":1,"width":10,"height":10}],"categories":[{"id":3,"name":"x"}],"annotations":[%s]}`
	ann := `{"id":123,"image_id":1,"category_id":3,"area":4,"bbox":[0,0,2,2],"iscrowd":0,"segmentation":%s}`
	cases := []struct{ doc, want string }{
		{fmt.Sprintf(good, fmt.Sprintf(ann, `[[0,0,2,0,2,2]]`)), ""},
		{fmt.Sprintf(good, fmt.Sprintf(ann, `{"size":[10,10],"counts":[100]}`)), ""},
		{fmt.Sprintf(good, fmt.Sprintf(ann, `{"size":[10,10],"counts":"ne0"}`)), ""},
		{fmt.Sprintf(good, fmt.Sprintf(ann, `[[0,0,2,0,2,2]]`)+","+fmt.Sprintf(ann, `[[0,0,2,0,2,2]]`)), "annotations[1] (id 123): duplicate id"},
		{fmt.Sprintf(good, fmt.Sprintf(ann, `{"size":[10],"counts":[100]}`)), `annotations[0] (id 123): segmentation: rle: "size" has 1 entries`},
		{fmt.Sprintf(good, fmt.Sprintf(ann, `{"size":[10,10],"counts":7}`)), `annotations[0] (id 123): segmentation: rle: "counts" must be`},
		{fmt.Sprintf(good, fmt.Sprintf(ann, `"x"`)), `annotations[0] (id 123): segmentation: must be a list`},
		{fmt.Sprintf(good, fmt.Sprintf(ann, `[["a"]]`)), `annotations[0] (id 123): segmentation: polygons:`},
		{fmt.Sprintf(good, `{"id":5,"image_id":2,"category_id":3,"area":1,"bbox":[0,0,1,1]}`), "annotations[0] (id 5): image_id 2 is not in images"},
		{fmt.Sprintf(good, `{"id":5,"image_id":1,"category_id":4,"area":1,"bbox":[0,0,1,1]}`), "annotations[0] (id 5): category_id 4 is not in categories"},
		{fmt.Sprintf(good, `{"id":5,"image_id":1,"category_id":3,"bbox":[0,0,1,1]}`), `annotations[0] (id 5): missing "area"`},
		{fmt.Sprintf(good, `{"id":5,"image_id":1,"category_id":3,"area":"big"}`), `annotations[0] (id 5): area: cannot use JSON string as float64`},
		{fmt.Sprintf(good, `{"id":5,"image_id":1,"category_id":3,"area":1,"iscrowd":"yes"}`), `annotations[0] (id 5): iscrowd`},
		{`{"images":[{"id":1,"width":0,"height":10}],"categories":[],"annotations":[]}`, "images[0] (id 1): bad size 0x10"},
		{`{"images":[],"categories":[]}`, `missing "annotations"`},
		{`{"images":[], "annotations":[], "categories":[{"id":1},{"id":1}]}`, "categories[1] (id 1): duplicate id"},
		{`[]`, "want a JSON object"},
		{`{"images":[{"id":1,`, "invalid JSON"},
		{``, "empty input"},
	}
	for _, c := range cases {
		_, err := DecodeDataset(strings.NewReader(c.doc))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.doc, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s:\n got %v\nwant %q", c.doc, err, c.want)
		}
	}
}

func TestResultsErrors(t *testing.T) {
	cases := []struct{ doc, want string }{
		{`[{"image_id":1,"category_id":2,"bbox":[1,2,3,4],"score":0.5}]`, ""},
		{`[{"image_id":1,"category_id":2,"segmentation":{"size":[2,2],"counts":"04"},"score":0.5}]`, ""},
		{`[{"image_id":1,"category_id":2,"bbox":[1,2,3,4],"score":0.5},{"image_id":1,"category_id":2,"bbox":[1,2,3],"score":0.5}]`, "results[1]: bbox has 3 numbers"},
		{`[{"image_id":1,"category_id":2,"bbox":[1,2,3,4]}]`, `results[0]: missing "score"`},
		{`[{"image_id":1,"category_id":2,"score":1}]`, `results[0]: needs a "bbox" or a "segmentation"`},
		{`[{"image_id":"a","category_id":2,"score":1}]`, `results[0]: image_id: cannot use JSON string as int64`},
		{`[{"image_id":1,"category_id":2,"score":1,"segmentation":{"counts":"0"}}]`, `results[0]: segmentation: rle: missing "size"`},
		{`[{"image_id":1,"category_id":2,"bbox":[1,2,3,4],"score":0.5}`, "invalid JSON"},
		{`{}`, "want a JSON list"},
	}
	for _, c := range cases {
		_, err := DecodeResults(strings.NewReader(c.doc))
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.doc, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s:\n got %v\nwant %q", c.doc, err, c.want)
		}
	}
}

// TestRoundTrip: datasets and results written by this package read back
// identically.
func TestRoundTrip(t *testing.T) {
	gt, err := ReadDataset(goldenPath(t, "case2_crowd_rle", "gt.json"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(gt)
	if err != nil {
		t.Fatal(err)
	}
	gt2, err := DecodeDataset(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := json.Marshal(gt2)
	if !bytes.Equal(b, b2) {
		t.Fatal("dataset round trip differs")
	}
	dets, err := ReadResults(goldenPath(t, "case4_edge", "dets.json"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := EncodeResults(&buf, dets); err != nil {
		t.Fatal(err)
	}
	dets2, err := DecodeResults(&buf)
	if err != nil {
		t.Fatal(err)
	}
	for i := range dets {
		a, b := dets[i], dets2[i]
		if a.ImageID != b.ImageID || a.CategoryID != b.CategoryID || a.Score != b.Score || a.BBox != b.BBox || a.Segmentation.String != b.Segmentation.String {
			t.Fatalf("results[%d] differs: %+v vs %+v", i, a, b)
		}
	}
}

var (
	fuzzDatasetSeeds = []string{
		`{"images":[{"id":1,"width":10,"height":10}],"categories":[{"id":3,"name":"x"}],"annotations":[{"id":123,"image_id":1,"category_id":3,"area":4,"bbox":[0,0,2,2],"iscrowd":0,"segmentation":[[0,0,2,0,2,2]]}]}`,
		`{"images":[{"id":1,"width":10,"height":10}],"categories":[{"id":3,"name":"x"}],"annotations":[{"id":1,"image_id":1,"category_id":3,"area":4,"bbox":[0,0,2,2],"iscrowd":1,"segmentation":{"size":[10,10],"counts":[5,5,90]}}]}`,
		`{"images":[{"id":1,"width":3,"height":2}],"categories":[{"id":3,"name":"x"}],"annotations":[{"id":1,"image_id":1,"category_id":3,"area":4,"bbox":[0,0,2,2],"segmentation":{"size":[2,3],"counts":"15"}}],"info":{},"licenses":[]}`,
		`{"images":[{"id":1,"width":3,"height":2}],"categories":[],"annotations":[{"id":1,"image_id":1,"category_id":3,"area":4,"segmentation":[[1,2,3,4]]}]}`,
	}
	fuzzResultsSeeds = []string{
		`[{"image_id":1,"category_id":3,"bbox":[1,2,3,4],"score":0.5}]`,
		`[{"image_id":1,"category_id":3,"segmentation":{"size":[10,10],"counts":"Q1"},"score":0.5}]`,
		`[{"image_id":1,"category_id":3,"bbox":[1,2,3,4],"segmentation":[[0,0,9,0,9,9]],"score":1e-3}]`,
		`[]`,
	}
)

func FuzzDecodeDataset(f *testing.F) {
	for _, s := range fuzzDatasetSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := DecodeDataset(bytes.NewReader(b))
		if err != nil {
			return
		}
		imgs := map[int64]Image{}
		for _, im := range d.Images {
			imgs[im.ID] = im
		}
		for _, a := range d.Annotations {
			im := imgs[a.ImageID]
			if uint64(im.Width)*uint64(im.Height) > 1<<20 {
				continue
			}
			if r, err := a.Segmentation.ToRLE(im.Height, im.Width); err == nil {
				if err := r.Validate(); err != nil {
					t.Fatalf("annotation %d: invalid mask accepted: %v", a.ID, err)
				}
			}
		}
		for _, typ := range []IoUType{BBox, Segm} {
			if len(d.Images) > 0 && d.Images[0].Width*d.Images[0].Height > 1<<20 {
				break
			}
			_, _ = Evaluate(d, nil, typ, Options{})
		}
	})
}

func FuzzDecodeResults(f *testing.F) {
	for _, s := range fuzzResultsSeeds {
		f.Add([]byte(s))
	}
	gt := &Dataset{Images: []Image{{ID: 1, Width: 10, Height: 10}}, Categories: []Category{{ID: 3}},
		Annotations: []Annotation{{ID: 1, ImageID: 1, CategoryID: 3, Area: 16, BBox: cocomask.Box{1, 1, 4, 4},
			Segmentation: Segmentation{Kind: SegPolygons, Polygons: [][]float64{{1, 1, 5, 1, 5, 5, 1, 5}}}}}}
	f.Fuzz(func(t *testing.T, b []byte) {
		rs, err := DecodeResults(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, typ := range []IoUType{BBox, Segm} {
			if e, err := Evaluate(gt, rs, typ, Options{}); err == nil {
				for _, s := range e.Stats {
					if !(s == -1 || (s >= 0 && s <= 1)) {
						t.Fatalf("stat %v out of range", s)
					}
				}
			}
		}
	})
}

func TestParserEdgeCases(t *testing.T) {
	for _, c := range []struct{ doc, want string }{
		{`[{"image_id":1,"category_id":2,"bbox":[1,2,3,4],"score":0.5},]`, "trailing comma"},
		{`[,]`, "empty list element"},
		{`[{"image_id":1,"category_id":2,"bbox":[1,2,3,4],"score":0.5} {"image_id":1}]`, "want ',' or ']'"},
		{`[{"image_id":1,"category_id":2,"bbox":[1,2,3,4],"score":0.5}] x`, "unexpected data after the list"},
		{`[{"image_id":1.5,"category_id":2,"bbox":[1,2,3,4],"score":0.5}]`, "image_id: cannot use JSON number 1.5 as int64"},
		{`[{"image_id":1,"category_id":2,"bbox":[1,2,3,4],"score":01}]`, "want ',' or '}'"},
		{`[{"image_id":1,"category_id":2,"bbox":[1,2,3,4],"score":"0.5"}]`, "score: cannot use JSON string as float64"},
		{`[{"image_id":1,"category_id":2,"bbox":[1,2,3,4],"score":0.5,"x":"\q"}]`, "bad escape"},
		{`[{"image_id":1,"category_id":2,"segmentation":{"size":[2,2],"counts":[1,-3]},"score":0.5}]`, "rle: counts: cannot use JSON number -3 as uint32"},
	} {
		_, err := DecodeResults(strings.NewReader(c.doc))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n got %v\nwant %q", c.doc, err, c.want)
		}
	}
	// Accepted: escapes (compressed counts contain backslashes), integral
	// ids written as floats, unknown keys, null optional fields.
	rs, err := DecodeResults(strings.NewReader(`[{"image_id":1.0,"category_id":2e0,"bbox":null,"score":-0.5e-1,"extra":{"a":[true,false,null,"\u00e9\ud83d\ude00"]},
		"segmentation":{"size":[1,3],"counts":"0\\0"}}]`))
	if err != nil {
		t.Fatal(err)
	}
	r := rs[0]
	if r.ImageID != 1 || r.CategoryID != 2 || r.HasBBox || r.Score != -0.05 || r.Segmentation.String != `0\0` {
		t.Fatalf("%+v", r)
	}
	// The same documents as encoding/json sees them.
	var ref []struct {
		Score float64 `json:"score"`
	}
	doc := `[{"image_id":7,"category_id":2,"bbox":[1,2,3,4],"score":0.30000000000000004},{"image_id":7,"category_id":2,"bbox":[1,2,3,4],"score":1e-320}]`
	if err := json.Unmarshal([]byte(doc), &ref); err != nil {
		t.Fatal(err)
	}
	rs, err = DecodeResults(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	for i := range ref {
		if rs[i].Score != ref[i].Score {
			t.Errorf("score %d: %v, encoding/json reads %v", i, rs[i].Score, ref[i].Score)
		}
	}
}
