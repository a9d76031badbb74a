#!/usr/bin/python3
"""Golden fixtures for the mmdetection inference settings of
runtime/detection and runtime/imageio (issue [checkpoints]).

    /usr/bin/python3 tools/refgen/mmdet_ops_goldens.py     # from the repo root
    (apt-get install python3-torch python3-numpy python3-opencv)

mmdetection and mmcv are not installed here; the few functions involved
are re-implemented in torch line by line from mmdetection v2.25.0 and
mmcv 1.x (the files and functions are cited at each), and OpenCV's own
cv2.resize is called for the 8-bit resize.

Writes
    runtime/detection/testdata/mmdet_ops_goldens.json
        anchors   mmdet/core/anchor/anchor_generator.py AnchorGenerator
                  (gen_single_level_base_anchors, single_level_grid_priors)
        decode    mmdet/core/bbox/coder/delta_xywh_bbox_coder.py delta2bbox
        paste     mmdet/models/roi_heads/mask_heads/fcn_mask_head.py _do_paste_mask
                  (CPU: skip_empty=True), on 28×28 masks and boxes on, past
                  and outside the image border and degenerate ones
    runtime/imageio/testdata/cv2_resize.json
        a procedural 8-bit RGB image and cv2.resize(INTER_LINEAR) of it
        to several sizes (mmcv.imresize's default backend and mode), H×W×3
        bytes in base64
    runtime/imageio/testdata/photo_s4{20,22,44}.jpg, cv2_jpeg.json
        93×75 JPEGs in 4:2:0, 4:2:2 and 4:4:4 chroma and cv2.imread's
        (libjpeg-turbo's) decoding of each
"""
import base64
import json
import os
import sys

import cv2
import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from procedural import photo_like  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))


def flat(t):
    return [float(v) for v in np.asarray(t, dtype=np.float32).reshape(-1)]


def anchors(strides, ratios, scales, feat_sizes):
    """AnchorGenerator(strides, ratios, scales) with center_offset 0."""
    out = []
    for stride, (fh, fw) in zip(strides, feat_sizes):
        # gen_single_level_base_anchors(base_size=stride, scales, ratios, center=None)
        w = h = stride
        x_center, y_center = 0.0 * w, 0.0 * h
        r = torch.tensor(ratios, dtype=torch.float32)
        s = torch.tensor(scales, dtype=torch.float32)
        h_ratios = torch.sqrt(r)
        w_ratios = 1 / h_ratios
        ws = (w * w_ratios[:, None] * s[None, :]).view(-1)
        hs = (h * h_ratios[:, None] * s[None, :]).view(-1)
        base = torch.stack([x_center - 0.5 * ws, y_center - 0.5 * hs, x_center + 0.5 * ws, y_center + 0.5 * hs], dim=-1)
        # single_level_grid_priors: shifts = arange(0, feat) * stride, meshgrid (row_major), base[None] + shifts[:, None]
        shift_x = torch.arange(0, fw).float() * stride
        shift_y = torch.arange(0, fh).float() * stride
        xx = shift_x.repeat(len(shift_y))
        yy = shift_y.view(-1, 1).repeat(1, len(shift_x)).view(-1)
        shifts = torch.stack([xx, yy, xx, yy], dim=-1)
        out.append((base[None, :, :] + shifts[:, None, :]).view(-1, 4))
    return out


def delta2bbox(rois, deltas, means, stds, max_shape, wh_ratio_clip=16 / 1000):
    """delta2bbox (mmdet v2.25.0), add_ctr_clamp=False, clip_border=True."""
    num_bboxes, num_classes = deltas.size(0), deltas.size(1) // 4
    deltas = deltas.reshape(-1, 4)
    means = deltas.new_tensor(means).view(1, -1)
    stds = deltas.new_tensor(stds).view(1, -1)
    denorm_deltas = deltas * stds + means
    dxy = denorm_deltas[:, :2]
    dwh = denorm_deltas[:, 2:]
    rois_ = rois.repeat(1, num_classes).reshape(-1, 4)
    pxy = ((rois_[:, :2] + rois_[:, 2:]) * 0.5)
    pwh = (rois_[:, 2:] - rois_[:, :2])
    dxy_wh = pwh * dxy
    max_ratio = np.abs(np.log(wh_ratio_clip))
    dwh = dwh.clamp(min=-max_ratio, max=max_ratio)
    gxy = pxy + dxy_wh
    gwh = pwh * dwh.exp()
    x1y1 = gxy - (gwh * 0.5)
    x2y2 = gxy + (gwh * 0.5)
    bboxes = torch.cat([x1y1, x2y2], dim=-1)
    bboxes[..., 0::2].clamp_(min=0, max=max_shape[1])
    bboxes[..., 1::2].clamp_(min=0, max=max_shape[0])
    return bboxes.reshape(num_bboxes, -1)


def do_paste_mask(masks, boxes, img_h, img_w):
    """_do_paste_mask(masks, boxes, img_h, img_w, skip_empty=True) (mmdet v2.25.0)."""
    x0_int, y0_int = torch.clamp(boxes.min(dim=0).values.floor()[:2] - 1, min=0).to(dtype=torch.int32)
    x1_int = torch.clamp(boxes[:, 2].max().ceil() + 1, max=img_w).to(dtype=torch.int32)
    y1_int = torch.clamp(boxes[:, 3].max().ceil() + 1, max=img_h).to(dtype=torch.int32)
    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)
    N = masks.shape[0]
    img_y = torch.arange(y0_int, y1_int, dtype=torch.float32) + 0.5
    img_x = torch.arange(x0_int, x1_int, dtype=torch.float32) + 0.5
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    if torch.isinf(img_x).any():
        img_x[torch.where(torch.isinf(img_x))] = 0
    if torch.isinf(img_y).any():
        img_y[torch.where(torch.isinf(img_y))] = 0
    gx = img_x[:, None, :].expand(N, img_y.size(1), img_x.size(1))
    gy = img_y[:, :, None].expand(N, img_y.size(1), img_x.size(1))
    grid = torch.stack([gx, gy], dim=3)
    img_masks = F.grid_sample(masks.to(dtype=torch.float32), grid, align_corners=False)
    return img_masks[:, 0], (int(y0_int), int(y1_int), int(x0_int), int(x1_int))


def main():
    g = torch.Generator().manual_seed(11)
    det = {}
    feats = [(10, 13), (5, 7), (3, 4), (2, 2), (1, 1)]
    a = anchors([4, 8, 16, 32, 64], [0.5, 1.0, 2.0], [8], feats)
    det["anchors"] = {"feat_sizes": feats, "strides": [4, 8, 16, 32, 64], "sizes": [32, 64, 128, 256, 512],
                      "ratios": [0.5, 1.0, 2.0], "anchors": [flat(x) for x in a]}
    rois = torch.rand(12, 2, generator=g) * 60
    rois = torch.cat([rois, rois + 1 + torch.rand(12, 2, generator=g) * 40], 1)
    deltas = torch.randn(12, 8, generator=g) * 2
    # dw, dh beyond ±5·log(1000/16) (the coder divides by 5): clamped at both ends
    deltas[0, 2], deltas[1, 3], deltas[2, 2], deltas[3, 3] = -30.0, -25.0, 24.0, 22.0
    dec = delta2bbox(rois, deltas, [0, 0, 0, 0], [0.1, 0.1, 0.2, 0.2], (70, 90))
    det["decode"] = {"rois": flat(rois), "deltas": flat(deltas), "weights": [10, 10, 5, 5], "image": [70, 90],
                     "boxes": flat(dec)}
    cases = []
    boxes = [[3.3, 4.7, 20.2, 30.9], [0.0, 0.0, 50.0, 40.0], [-5.5, -3.2, 12.1, 9.9], [40.2, 30.1, 70.0, 55.5],
             [10.0, 10.0, 10.0, 25.0], [55.0, 45.0, 80.0, 60.0], [8.25, 9.75, 9.5, 11.0], [0.5, 0.5, 59.5, 47.5]]
    for i, b in enumerate(boxes):
        m = torch.sigmoid(torch.randn(1, 1, 28, 28, generator=g) * 3)
        bt = torch.tensor([b], dtype=torch.float32)
        img, (y0, y1, x0, x1) = do_paste_mask(m, bt, 48, 60)
        cases.append({"mask": flat(m), "box": b, "image": [48, 60], "region": [x0, y0, x1, y1], "probs": flat(img)})
    det["paste"] = cases
    with open(os.path.join(ROOT, "runtime", "detection", "testdata", "mmdet_ops_goldens.json"), "w") as f:
        json.dump(det, f, separators=(",", ":"))

    img = np.asarray(photo_like(72, 94, 5))  # H×W×3 uint8
    b64 = lambda a: base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()
    out = {"cv2": cv2.__version__, "h": 72, "w": 94, "rgb_hwc_base64": b64(img), "resized": []}
    for oh, ow in [(100, 131), (36, 47), (50, 65), (72, 94), (40, 200), (9, 11)]:
        r = cv2.resize(img, (ow, oh), interpolation=cv2.INTER_LINEAR)
        out["resized"].append({"h": oh, "w": ow, "rgb_hwc_base64": b64(r)})
    with open(os.path.join(ROOT, "runtime", "imageio", "testdata", "cv2_resize.json"), "w") as f:
        json.dump(out, f, separators=(",", ":"))
    # JPEGs of odd size in the three common chroma subsamplings, and libjpeg-turbo's decoding of
    # them through cv2.imread (as mmcv, PIL and torchvision decode).
    photo = photo_like(75, 93, 9)
    dec = {"cv2": cv2.__version__, "images": []}
    for name, sub in (("s420", 2), ("s422", 1), ("s444", 0)):
        path = os.path.join(ROOT, "runtime", "imageio", "testdata", f"photo_{name}.jpg")
        photo.save(path, quality=90, subsampling=sub)
        rgb = cv2.imread(path, cv2.IMREAD_COLOR)[..., ::-1]
        dec["images"].append({"file": f"photo_{name}.jpg", "h": 75, "w": 93, "rgb_hwc_base64": b64(rgb)})
    with open(os.path.join(ROOT, "runtime", "imageio", "testdata", "cv2_jpeg.json"), "w") as f:
        json.dump(dec, f, separators=(",", ":"))
    print("wrote mmdet_ops_goldens.json and cv2_resize.json")


if __name__ == "__main__":
    main()
