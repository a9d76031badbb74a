#!/usr/bin/python3
"""How much JPEG decoding moves a converted mmdetection model's detections:
the reference of mmdet_fixtures.py decodes with OpenCV (libjpeg-turbo, as
mmcv does), flbq with Go's image/jpeg. Measurement only (docs/CHECKPOINTS.md).

    /usr/bin/python3 tools/refgen/mmdet_jpeg_effect.py --jpeg /tmp/wide.jpg --write
    flbq convert --from mmdet --config scale.json --out m.safetensors tools/convert/testdata/mmdet/mask_rcnn_swin_tiny_mmdet.pth
    flbq detect --model m.safetensors --score-thresh 0.05 --out go.json /tmp/wide.jpg
    /usr/bin/python3 tools/refgen/mmdet_jpeg_effect.py --jpeg /tmp/wide.jpg --go go.json

(scale.json: {"min_size": 128, "max_size": 192}, the fixture's test scale.)
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import mmdet_fixtures as mf  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / u if u > 0 else 1.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jpeg", required=True)
    ap.add_argument("--write", action="store_true", help="write the fixture's wide.png as a quality-90 JPEG")
    ap.add_argument("--go", help="flbq detect's COCO results on the JPEG")
    a = ap.parse_args()
    if a.write:
        Image.open(os.path.join(ROOT, "tools/convert/testdata/mmdet/images/wide.png")).save(a.jpeg, quality=90)
    sd = torch.load(os.path.join(ROOT, "tools/convert/testdata/mmdet/mask_rcnn_swin_tiny_mmdet.pth"))["state_dict"]
    img, meta = mf.load_and_preprocess(a.jpeg)
    with torch.no_grad():
        r = mf.detect(sd, img, meta)
    ref = [(b[:4].tolist(), float(b[4]), int(l)) for b, l in zip(r["det_bboxes"], r["det_labels"])]
    print(f"reference (cv2 decoding): {len(ref)} detections")
    if not a.go:
        return
    with open(a.go) as f:
        go = json.load(f)
    ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33,
           34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
           62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]
    gd = [([d["bbox"][0], d["bbox"][1], d["bbox"][0] + d["bbox"][2], d["bbox"][1] + d["bbox"][3]], d["score"],
           ids.index(d["category_id"])) for d in go]
    matched, ious, dscore = 0, [], []
    used = set()
    for b, s, l in ref:
        best, bi = 0.0, -1
        for j, (gb, gs, gl) in enumerate(gd):
            if j not in used and gl == l and iou(b, gb) > best:
                best, bi = iou(b, gb), j
        if bi >= 0 and best >= 0.5:
            used.add(bi)
            matched += 1
            ious.append(best)
            dscore.append(abs(s - gd[bi][1]))
    print(f"flbq (Go decoding): {len(gd)} detections; {matched} of the reference's matched (same class, IoU >= 0.5); "
          f"IoU median {np.median(ious):.4f}, min {min(ious):.4f}; |Δscore| median {np.median(dscore):.2e}, "
          f"max {max(dscore):.2e}")


if __name__ == "__main__":
    main()
