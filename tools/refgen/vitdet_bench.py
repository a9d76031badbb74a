#!/usr/bin/python3
"""ViTDet-B Mask R-CNN speed at 1024×1024: the line-by-line PyTorch
reference of vitdet_fixtures.py at detectron2's full ViTDet-B size
(mask_rcnn_vitdet_b_100ep: embed 768, depth 12, heads 12, window 14,
global blocks 2, 5, 8, 11, img_size 1024, pretrain 224, FPN 256,
4conv1fc box head 256/1024, mask head 256, 80 classes), random weights.
Writes the checkpoint for flbq and times the reference (process CPU time,
median of --reps, torch threads --threads). Measurement only: nothing is
committed.

    /usr/bin/python3 tools/refgen/vitdet_bench.py --pkl /tmp/vitdet_b.pkl --image /tmp/vitdet_b.png --threads 1
"""
import argparse
import os
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import vitdet_fixtures as vf  # noqa: E402
from procedural import photo_like  # noqa: E402

vf.EMBED, vf.DEPTH, vf.HEADS = 768, 12, 12
vf.WINDOW, vf.WINDOW_BLOCKS = 14, (0, 1, 3, 4, 6, 7, 9, 10)
vf.VIT_IMG_SIZE, vf.PRETRAIN_IMG_SIZE = 1024, 224
vf.FPN_C, vf.SQUARE_PAD, vf.IMAGE_SIZE = 256, 1024, 1024
vf.BOX_CONV_DIMS, vf.BOX_FC_DIMS, vf.MASK_CONV_DIMS = [256] * 4, [1024], [256] * 5
vf.NUM_CLASSES = 80


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pkl", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model = vf.init_weights(vf.GeneralizedRCNN().eval())
    if not os.path.exists(a.pkl):
        vf.save_pkl(model.state_dict(), a.pkl)
    if not os.path.exists(a.image):
        photo_like(768, 1024, 3).save(a.image)
    image, (h, w) = vf.mapper(a.image)
    ts = []
    with torch.no_grad():
        model.inference(image, h, w)  # warm up
        for _ in range(a.reps):
            t0 = time.process_time()
            r = model.inference(image, h, w)
            ts.append(time.process_time() - t0)
    print(f"pytorch reference, {a.threads} thread(s): {np.median(ts):.2f} CPU s per image (runs {[round(t, 2) for t in ts]}), "
          f"{len(r['scores'])} detections")


if __name__ == "__main__":
    main()
