package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/flbq/flbq/runtime/atomicfile"
	"github.com/flbq/flbq/runtime/coco"
)

func init() {
	register(&cli.Command{
		Name:  "eval-results",
		Usage: "COCO box or mask AP of a results file, exactly as pycocotools' COCOeval",
		Description: `Evaluates COCO detection results against COCO instances ground truth with
   COCOeval's default parameters and prints the 12 summary numbers in
   pycocotools' layout (AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100,
   ARs, ARm, ARl).

   --iou-type bbox  box IoU; a detection's area is w*h of its "bbox".
   --iou-type segm  mask IoU on the "segmentation" (RLE or polygons); a
                    detection's area is its mask's pixel count (detectron2's
                    convention; pycocotools' loadRes would use w*h when the
                    detection also has a "bbox").

   --json writes the numbers, per-category AP and AR@100 and counts as JSON.
   Timings and warnings go to stderr.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "gt", Usage: "ground truth `FILE` (COCO instances JSON)", Required: true},
			&cli.StringFlag{Name: "dets", Usage: "detections `FILE` (COCO results JSON)", Required: true},
			&cli.StringFlag{Name: "iou-type", Value: "bbox", Usage: "bbox or segm"},
			&cli.StringFlag{Name: "json", Usage: "also write the results to `FILE` as JSON"},
		},
		Action: runEvalResults,
	})
}

// evalJSON is the file --json writes.
type evalJSON struct {
	Format      string         `json:"format"`
	IoUType     string         `json:"iou_type"`
	GT          string         `json:"gt"`
	Dets        string         `json:"dets"`
	Stats       [12]float64    `json:"stats"`
	Metrics     evalMetrics    `json:"metrics"`
	PerCategory []evalCategory `json:"per_category"`
	Images      int            `json:"images"`
	Annotations int            `json:"annotations"`
	Detections  int            `json:"detections"`
	Skipped     int            `json:"skipped_detections"`
}

type evalMetrics struct {
	AP    float64 `json:"AP"`
	AP50  float64 `json:"AP50"`
	AP75  float64 `json:"AP75"`
	APs   float64 `json:"APs"`
	APm   float64 `json:"APm"`
	APl   float64 `json:"APl"`
	AR1   float64 `json:"AR1"`
	AR10  float64 `json:"AR10"`
	AR100 float64 `json:"AR100"`
	ARs   float64 `json:"ARs"`
	ARm   float64 `json:"ARm"`
	ARl   float64 `json:"ARl"`
}

type evalCategory struct {
	ID    int64   `json:"id"`
	Name  string  `json:"name"`
	AP    float64 `json:"AP"`
	AR100 float64 `json:"AR100"`
}

func runEvalResults(c *cli.Context) error {
	iouType, err := coco.ParseIoUType(c.String("iou-type"))
	if err != nil {
		return err
	}
	stderr := errWriter(c)
	t0 := time.Now()
	gt, err := coco.ReadDataset(c.String("gt"))
	if err != nil {
		return err
	}
	for _, a := range gt.Annotations {
		if a.ID == 0 {
			fmt.Fprintln(stderr, "warning: ground truth has an annotation with id 0, which pycocotools (and this command) never counts as a true positive; number annotations from 1")
			break
		}
	}
	t1 := time.Now()
	dets, err := coco.ReadResults(c.String("dets"))
	if err != nil {
		return err
	}
	t2 := time.Now()
	var opt coco.Options
	var bar *progressbar.ProgressBar
	if f, ok := stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		opt.Progress = func(done, total int) {
			if bar == nil {
				bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(f),
					progressbar.OptionSetDescription("evaluating image×category pairs"),
					progressbar.OptionClearOnFinish(), progressbar.OptionThrottle(100*time.Millisecond))
			}
			bar.Set(done)
		}
	}
	e, err := coco.Evaluate(gt, dets, iouType, opt)
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		return err
	}
	t3 := time.Now()
	if e.SkippedDets > 0 {
		fmt.Fprintf(stderr, "warning: %d detections have a category that is not in the ground truth; skipped (as pycocotools does)\n", e.SkippedDets)
	}
	fmt.Fprintf(stderr, "%s: read gt %.2fs, read dets %.2fs, evaluate %.2fs (%d images, %d annotations, %d detections)\n",
		iouType, t1.Sub(t0).Seconds(), t2.Sub(t1).Seconds(), t3.Sub(t2).Seconds(), len(gt.Images), len(gt.Annotations), len(dets))
	if _, err := io.WriteString(c.App.Writer, e.Summary()); err != nil {
		return err
	}
	if out := c.String("json"); out != "" {
		names := map[int64]string{}
		for _, cat := range gt.Categories {
			names[cat.ID] = cat.Name
		}
		s := e.Stats
		j := evalJSON{
			Format: "flbq.coco-eval/v1", IoUType: iouType.String(), GT: c.String("gt"), Dets: c.String("dets"),
			Stats:   s,
			Metrics: evalMetrics{s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7], s[8], s[9], s[10], s[11]},
			Images:  len(gt.Images), Annotations: len(gt.Annotations), Detections: len(dets), Skipped: e.SkippedDets,
			PerCategory: []evalCategory{},
		}
		for _, pc := range e.PerCategory() {
			j.PerCategory = append(j.PerCategory, evalCategory{pc.CategoryID, names[pc.CategoryID], pc.AP, pc.AR100})
		}
		err := atomicfile.Write(out, func(w io.Writer) error {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(j)
		})
		if err != nil {
			return err
		}
	}
	return nil
}
