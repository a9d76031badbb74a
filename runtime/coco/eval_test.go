package coco

import (
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/flbq/flbq/runtime/cocomask"
)

// tiny builds a one-image dataset with categories cats and the given
// annotations (bbox + matching rectangle polygon).
func tiny(cats []int64, anns ...Annotation) *Dataset {
	d := &Dataset{Images: []Image{{ID: 7, Width: 200, Height: 200}}}
	for _, c := range cats {
		d.Categories = append(d.Categories, Category{ID: c, Name: "c" + strconv.FormatInt(c, 10)})
	}
	for i, a := range anns {
		if a.ID == 0 {
			a.ID = int64(i + 1)
		}
		a.ImageID = 7
		if a.CategoryID == 0 {
			a.CategoryID = cats[0]
		}
		b := a.BBox
		x1, y1, x2, y2 := b[0], b[1], b[0]+b[2], b[1]+b[3]
		a.Segmentation = Segmentation{Kind: SegPolygons, Polygons: [][]float64{{x1, y1, x2, y1, x2, y2, x1, y2}}}
		if a.Area == 0 {
			a.Area = b[2] * b[3]
		}
		d.Annotations = append(d.Annotations, a)
	}
	return d
}

func det(cat int64, score float64, b ...float64) Result {
	return Result{ImageID: 7, CategoryID: cat, Score: score, BBox: cocomask.Box(b), HasBBox: true}
}

func ann(b ...float64) Annotation { return Annotation{BBox: cocomask.Box(b)} }

// want: stats by name; NaN entries are not checked.
func checkStats(t *testing.T, gt *Dataset, dets []Result, want map[string]float64) *Eval {
	t.Helper()
	if err := gt.Validate(); err != nil {
		t.Fatal(err)
	}
	var last *Eval
	for _, typ := range []IoUType{BBox, Segm} {
		e, err := Evaluate(gt, dets, typ, Options{})
		if err != nil {
			t.Fatal(err)
		}
		for i, name := range StatNames {
			w, ok := want[name]
			if !ok {
				continue
			}
			if math.Abs(e.Stats[i]-w) > 1e-12 {
				t.Errorf("%v %s = %.17g, want %.17g", typ, name, e.Stats[i], w)
			}
		}
		last = e
	}
	return last
}

func TestPerfect(t *testing.T) {
	gt := tiny([]int64{1}, ann(10, 10, 40, 40), ann(100, 100, 50, 60))
	dets := []Result{det(1, .9, 10, 10, 40, 40), det(1, .8, 100, 100, 50, 60)}
	checkStats(t, gt, dets, map[string]float64{
		"AP": 1, "AP50": 1, "AP75": 1, "APs": -1, "APm": 1, "APl": -1,
		"AR1": .5, "AR10": 1, "AR100": 1, "ARs": -1, "ARm": 1, "ARl": -1,
	})
}

func TestMissedObject(t *testing.T) {
	gt := tiny([]int64{1}, ann(10, 10, 40, 40), ann(100, 100, 50, 60))
	dets := []Result{det(1, .9, 10, 10, 40, 40)}
	// precision 1 up to recall 0.5 (recall thresholds 0..0.50: 51 of 101)
	checkStats(t, gt, dets, map[string]float64{"AP": 51.0 / 101, "AP50": 51.0 / 101, "AR100": .5})
}

func TestDuplicate(t *testing.T) {
	gt := tiny([]int64{1}, ann(0, 0, 100, 100))
	// The higher-scored detection overlaps with IoU 0.72; the exact one
	// comes second. At IoU thresholds <= 0.70 the first is the true
	// positive and the second a duplicate (AP 1); above, the first is a
	// false positive before the true one (AP 0.5).
	dets := []Result{det(1, .9, 0, 0, 100, 72), det(1, .8, 0, 0, 100, 100)}
	checkStats(t, gt, dets, map[string]float64{"AP": .75, "AP50": 1, "AP75": .5, "AR1": .5, "AR10": 1})
}

func TestCrowd(t *testing.T) {
	crowd := ann(100, 100, 80, 80)
	crowd.IsCrowd = true
	gt := tiny([]int64{1}, ann(0, 0, 50, 50), crowd)
	// A detection inside the crowd region matches it (IoU = intersection /
	// detection area = 1) and is ignored, even with the highest score;
	// several detections can fall on one crowd.
	dets := []Result{det(1, .95, 110, 110, 20, 20), det(1, .94, 140, 140, 20, 20), det(1, .9, 0, 0, 50, 50)}
	checkStats(t, gt, dets, map[string]float64{"AP": 1, "AR100": 1})
	// The same detections with the crowd as an ordinary object: two
	// false positives before the true one, and a missed object.
	gt.Annotations[1].IsCrowd = false
	checkStats(t, gt, dets, map[string]float64{"AP50": (1.0 / 3) * 51 / 101, "AR100": .5})
}

func TestAreaRanges(t *testing.T) {
	// Areas exactly at the range ends belong to both neighbours.
	small := ann(0, 0, 10, 10)                                            // 100
	medium := ann(50, 0, 32, 32)                                          // 1024: small and medium
	large := Annotation{BBox: cocomask.Box{100, 100, 96, 96}, Area: 9216} // medium and large
	gt := tiny([]int64{1}, small, medium, large)
	// Only the small object is missed.
	dets := []Result{det(1, .9, 50, 0, 32, 32), det(1, .8, 100, 100, 96, 96)}
	checkStats(t, gt, dets, map[string]float64{
		"APs": 51.0 / 101, "ARs": .5, // small: 100 (missed) and 1024 (found)
		"APm": 1, "ARm": 1, // medium: 1024 and 9216
		"APl": 1, "ARl": 1, // large: 9216
		"AR100": 2.0 / 3,
	})
	// GT area is the "area" field, not the box: call the missed object
	// large and the small range is left with the found one.
	gt.Annotations[0].Area = 20000
	checkStats(t, gt, dets, map[string]float64{"APs": 1, "ARs": 1, "ARl": .5})
}

func TestCategoryWithoutGT(t *testing.T) {
	gt := tiny([]int64{1, 2}, ann(10, 10, 40, 40))
	dets := []Result{det(1, .9, 10, 10, 40, 40), det(2, .95, 10, 10, 40, 40), det(3, .99, 10, 10, 40, 40)}
	e := checkStats(t, gt, dets, map[string]float64{"AP": 1, "AR100": 1})
	pc := e.PerCategory()
	if len(pc) != 2 || pc[1].CategoryID != 2 || pc[1].AP != -1 || pc[1].AR100 != -1 {
		t.Fatalf("per category: %+v", pc)
	}
	if e.SkippedDets != 1 {
		t.Fatalf("skipped %d detections, want 1 (category 3)", e.SkippedDets)
	}
	// No ground truth at all: every stat is -1 and printed as -1.000.
	empty := tiny([]int64{1})
	e = checkStats(t, empty, dets[:1], map[string]float64{"AP": -1, "AR1": -1, "ARl": -1})
	if !strings.Contains(e.Summary(), "maxDets=100 ] = -1.000\n") || strings.Count(e.Summary(), "\n") != 12 {
		t.Fatalf("summary:\n%s", e.Summary())
	}
}

func TestMaxDetsAndTies(t *testing.T) {
	gt := tiny([]int64{1}, ann(0, 0, 20, 20), ann(50, 50, 20, 20), ann(100, 100, 20, 20))
	dets := []Result{det(1, .5, 0, 0, 20, 20), det(1, .5, 50, 50, 20, 20), det(1, .5, 100, 100, 20, 20)}
	checkStats(t, gt, dets, map[string]float64{"AR1": 1.0 / 3, "AR10": 1, "AP": 1})
	// 101 detections: the 101st (lowest score) is cut by maxDets=100.
	var many []Result
	for i := 0; i < 100; i++ {
		many = append(many, det(1, .9, 150, 0, 10, 10)) // false positives
	}
	many = append(many, det(1, .1, 0, 0, 20, 20))
	checkStats(t, gt, many, map[string]float64{"AR100": 0, "AP": 0})
}

func TestGTIDZero(t *testing.T) {
	// pycocotools stores the matched gt id in dtMatches and tests it for
	// truth, so a ground truth with id 0 is never a true positive.
	gt := tiny([]int64{1}, ann(0, 0, 20, 20), ann(50, 50, 20, 20))
	gt.Annotations[0].ID = 0
	dets := []Result{det(1, .9, 0, 0, 20, 20), det(1, .8, 50, 50, 20, 20)}
	checkStats(t, gt, dets, map[string]float64{"AR100": .5, "AP": 0.5 * 51 / 101})
}

func TestEvaluateErrors(t *testing.T) {
	gt := tiny([]int64{1}, ann(0, 0, 20, 20))
	d := det(1, .9, 0, 0, 20, 20)
	d.ImageID = 8
	if _, err := Evaluate(gt, []Result{d}, BBox, Options{}); err == nil || !strings.Contains(err.Error(), "results[0]: image_id 8") {
		t.Fatalf("err = %v", err)
	}
	bad := det(1, .9, 0, 0, 20, 20)
	bad.Segmentation = Segmentation{Kind: SegCompressed, Size: [2]int{200, 200}, String: "0"}
	_, err := Evaluate(gt, []Result{det(1, .8, 0, 0, 5, 5), bad}, Segm, Options{})
	if err == nil || !strings.Contains(err.Error(), "results[1]: segmentation") {
		t.Fatalf("err = %v", err)
	}
}
