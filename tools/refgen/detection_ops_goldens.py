#!/usr/bin/env python3
"""Golden fixtures for runtime/detection: torchvision 0.14's Mask R-CNN
building blocks that do not depend on the backbone.

Run with Debian's torch/torchvision (apt-get install python3-torch
python3-torchvision python3-numpy):

    /usr/bin/python3 tools/refgen/detection_ops_goldens.py \
        --out runtime/detection/testdata/detection_ops_goldens.json

Every case calls the torchvision function itself (ops.nms, ops.batched_nms,
ops.roi_align, ops.MultiScaleRoIAlign, AnchorGenerator, BoxCoder,
RegionProposalNetwork.filter_proposals, RoIHeads.postprocess_detections,
paste_masks_in_image, transform.resize_boxes) on seeded random inputs plus
adversarial ones: boxes on and past the image border, degenerate boxes,
empty inputs, equal scores (at the positions where torchvision's order is
defined: NMS's stable sort), clamped dw/dh.

Floats are written as float32 shortest-round-trip decimals; Go parses them
with strconv.ParseFloat(s, 32) and recovers the exact float32 inputs.
"""
import argparse
import json
import math

import numpy as np
import torch
import torchvision
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads, paste_masks_in_image
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead, concat_box_prediction_layers
from torchvision.models.detection.transform import resize_boxes
from torchvision.ops import MultiScaleRoIAlign, batched_nms, nms, roi_align


class F32:
    def __init__(self, t):
        self.a = np.asarray(t.detach().cpu().numpy() if torch.is_tensor(t) else t, dtype=np.float32).reshape(-1)


def I(t):
    return [int(v) for v in (t.tolist() if torch.is_tensor(t) else t)]


def dumps(o):
    if isinstance(o, F32):
        assert np.all(np.isfinite(o.a)), "goldens must be finite"
        return "[" + ",".join(repr(float(v)) if False else np.format_float_positional(v, unique=True, trim="-") if 1e-4 < abs(v) < 1e7 or v == 0 else np.format_float_scientific(v, unique=True, trim="-") for v in o.a) + "]"
    if isinstance(o, dict):
        return "{" + ",".join(json.dumps(k) + ":" + dumps(v) for k, v in o.items()) + "}"
    if isinstance(o, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in o) + "]"
    return json.dumps(o)


def rand_boxes(g, n, h, w, minsz=1.0, maxsz=None):
    maxsz = maxsz or max(h, w) / 2
    x = torch.rand(n, generator=g) * w
    y = torch.rand(n, generator=g) * h
    bw = minsz + torch.rand(n, generator=g) * (maxsz - minsz)
    bh = minsz + torch.rand(n, generator=g) * (maxsz - minsz)
    return torch.stack([x - bw / 2, y - bh / 2, x + bw / 2, y + bh / 2], 1)


def nms_cases(g):
    cases = []
    b = rand_boxes(g, 300, 100, 120, 2, 40)
    s = torch.rand(300, generator=g)
    for thr in (0.3, 0.5, 0.7):
        cases.append(dict(name=f"random300_thr{thr}", boxes=F32(b), scores=F32(s), thr=thr, keep=I(nms(b, s, thr))))
    # equal scores everywhere: stable order decides
    s_eq = torch.full((300,), 0.5)
    cases.append(dict(name="equal_scores", boxes=F32(b), scores=F32(s_eq), thr=0.5, keep=I(nms(b, s_eq, 0.5))))
    # quantised scores (many ties) and duplicated boxes
    sq = (torch.rand(300, generator=g) * 4).floor() / 4
    bd = torch.cat([b[:150], b[:150]], 0)
    cases.append(dict(name="ties_duplicates", boxes=F32(bd), scores=F32(sq), thr=0.5, keep=I(nms(bd, sq, 0.5))))
    # degenerate: zero-area boxes, IoU exactly at threshold
    db = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [5, 5, 5, 9], [5, 5, 5, 9], [0, 0, 10, 5], [0, 0, 10, 20.0], [3, 3, 3, 3]])
    ds = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.95])
    for thr in (0.5, 0.0, 1.0):
        cases.append(dict(name=f"degenerate_thr{thr}", boxes=F32(db), scores=F32(ds), thr=thr, keep=I(nms(db, ds, thr))))
    e = torch.zeros((0, 4))
    cases.append(dict(name="empty", boxes=F32(e), scores=F32(torch.zeros(0)), thr=0.5, keep=I(nms(e, torch.zeros(0), 0.5))))
    return cases


def batched_cases(g):
    cases = []
    for n, ncls in ((200, 5), (1500, 7)):  # coordinate trick, vanilla (> 4000 numel)
        b = rand_boxes(g, n, 200, 240, 2, 60)
        s = torch.rand(n, generator=g)
        idx = torch.randint(0, ncls, (n,), generator=g)
        cases.append(dict(name=f"n{n}_c{ncls}", boxes=F32(b), scores=F32(s), idxs=I(idx), thr=0.5, keep=I(batched_nms(b, s, idx, 0.5))))
    b = torch.tensor([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10.0]])
    s = torch.tensor([0.5, 0.5, 0.6, 0.7])
    idx = torch.tensor([1, 2, 1, 2])
    cases.append(dict(name="same_box_two_classes", boxes=F32(b), scores=F32(s), idxs=I(idx), thr=0.5, keep=I(batched_nms(b, s, idx, 0.5))))
    return cases


def coder_cases(g):
    cases = []
    for w in ((1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)):
        bc = det_utils.BoxCoder(w)
        boxes = rand_boxes(g, 40, 100, 100, 1, 50)
        k = 3
        deltas = torch.randn(40, 4 * k, generator=g) * 2
        deltas[0, 2] = 50.0  # clamped dw
        deltas[1, 3] = 9.0 * w[3]  # clamped dh
        deltas[2, 2] = -30.0
        dec = bc.decode(deltas, [boxes])
        ref = rand_boxes(g, 40, 100, 100, 1, 50)
        enc = bc.encode_single(ref, boxes)
        cases.append(dict(weights=list(w), boxes=F32(boxes), deltas=F32(deltas), k=k, decoded=F32(dec), reference=F32(ref), encoded=F32(enc)))
    return cases


def anchor_cases():
    cases = []
    configs = [
        ("default", ((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5, (64, 96), [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]),
        ("multi_size_odd_stride", ((16, 24), (48, 70.5)), ((0.25, 1.0, 1.7),) * 2, (50, 77), [(13, 20), (7, 10)]),
    ]
    for name, sizes, ratios, img, feats in configs:
        ag = AnchorGenerator(sizes, ratios)
        il = ImageList(torch.zeros(1, 3, *img), [img])
        fm = [torch.zeros(1, 1, *f) for f in feats]
        anchors = ag(il, fm)[0]
        cases.append(dict(name=name, sizes=[list(s) for s in sizes], ratios=[list(r) for r in ratios], image=list(img), feats=[list(f) for f in feats],
                          cell=[F32(c) for c in ag.cell_anchors], anchors=F32(anchors)))
    return cases


def rpn_cases(g):
    cases = []
    img = (60, 84)  # resized image size
    padded = (64, 96)
    feats = [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    ag = AnchorGenerator(((32,), (64,), (128,), (256,), (512,)), ((0.5, 1.0, 2.0),) * 5)
    for name, pre, post, sthr, nthr in (("small_topn", 200, 60, 0.0, 0.7), ("default", 1000, 1000, 0.0, 0.7), ("score_thresh", 300, 100, 0.6, 0.5)):
        head = RPNHead(4, 3)
        rpn = RegionProposalNetwork(ag, head, 0.7, 0.3, 256, 0.5, dict(training=pre, testing=pre), dict(training=post, testing=post), nthr, score_thresh=sthr)
        rpn.eval()
        il = ImageList(torch.zeros(1, 3, *padded), [img])
        fm = [torch.zeros(1, 4, *f) for f in feats]
        anchors = ag(il, fm)
        obj = [torch.randn(1, 3, *f, generator=g) * 2 for f in feats]
        dl = [torch.randn(1, 12, *f, generator=g) * 0.5 for f in feats]
        num_anchors_per_level = [o[0].numel() for o in obj]
        o_flat, d_flat = concat_box_prediction_layers(obj, dl)
        proposals = rpn.box_coder.decode(d_flat.detach(), anchors).view(1, -1, 4)
        with torch.no_grad():
            boxes, scores = rpn.filter_proposals(proposals, o_flat, il.image_sizes, num_anchors_per_level)
        cases.append(dict(name=name, image=list(img), padded=list(padded), feats=[list(f) for f in feats], pre=pre, post=post, score_thresh=sthr, nms_thresh=nthr,
                          objectness=[F32(o) for o in obj], deltas=[F32(d) for d in dl], boxes=F32(boxes[0]), scores=F32(scores[0])))
    return cases


def roialign_cases(g):
    cases = []
    feat = torch.randn(1, 2, 13, 17, generator=g)
    boxes = torch.cat([
        rand_boxes(g, 12, 52, 68, 1, 40),
        torch.tensor([[-10, -10, 5, 5], [60, 40, 80, 60], [0, 0, 68, 52], [10, 10, 10, 10], [-3, -3, -1, -1], [30, 20, 31, 20.5], [67, 51, 68, 52], [-8, 3, 70, 9.0]]),
    ])
    for scale, sr, aligned, out in ((0.25, 2, False, (7, 7)), (0.25, 2, True, (7, 7)), (0.5, 0, False, (3, 5)), (0.5, 0, True, (5, 3)), (0.25, 3, False, (14, 14))):
                    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], 1)
                    r = roi_align(feat, rois, out, scale, sr, aligned)
                    cases.append(dict(scale=scale, sampling_ratio=sr, aligned=aligned, out=list(out), boxes=F32(boxes), result=F32(r)))
    return dict(feat=F32(feat), shape=list(feat.shape[1:]), cases=cases)


def multiscale_cases(g):
    cases = []
    # (resized image, padded batch, channels, canonical scale): the default
    # 224 on a larger image, and a small canonical scale that spreads small
    # boxes over all four levels.
    for img, padded, ch, canon in (((250, 330), (256, 352), 1, 224), ((100, 70), (128, 96), 2, 32)):
        shapes = [(padded[0] // s, padded[1] // s) for s in (4, 8, 16, 32)]
        feats = {str(i): torch.randn(1, ch, *s, generator=g) for i, s in enumerate(shapes)}
        boxes = torch.cat([rand_boxes(g, 16, img[0], img[1], 1, max(img)), torch.tensor([[0, 0, img[1], img[0]], [3, 3, 3, 3], [0, 0, 1, 1.0], [10, 10, 122, 122]])])
        out = 7 if canon == 224 else 14
        p = MultiScaleRoIAlign(["0", "1", "2", "3"], out, 2, canonical_scale=canon)
        r = p(feats, [boxes], [img])
        lv = p.map_levels([boxes])
        cases.append(dict(image=list(img), shapes=[list(s) for s in shapes], channels=ch, canonical_scale=canon, feats=[F32(feats[str(i)]) for i in range(4)], out=out, boxes=F32(boxes), levels=I(lv), scales=list(p.scales), result=F32(r)))
    return cases


def postprocess_cases(g):
    cases = []
    img = (90, 120)
    for name, n, k, sthr, nthr, det in (("default", 60, 5, 0.05, 0.5, 100), ("few", 40, 4, 0.3, 0.3, 7), ("empty", 0, 3, 0.05, 0.5, 100)):
        heads = RoIHeads(None, None, None, 0.5, 0.5, 512, 0.25, (10.0, 10.0, 5.0, 5.0), sthr, nthr, det)
        heads.eval()
        proposals = rand_boxes(g, n, img[0], img[1], 4, 60)
        proposals[:5] = proposals[:5] * 1.3 - 10  # partly outside the image
        logits = torch.randn(n, k, generator=g) * 3
        reg = torch.randn(n, 4 * k, generator=g)
        with torch.no_grad():
            boxes, scores, labels = heads.postprocess_detections(logits, reg, [proposals], [img])
        cases.append(dict(name=name, image=list(img), k=k, score_thresh=sthr, nms_thresh=nthr, det=det, proposals=F32(proposals), logits=F32(logits), regression=F32(reg),
                          boxes=F32(boxes[0]), scores=F32(scores[0]), labels=I(labels[0])))
    return cases


def paste_cases(g):
    cases = []
    resized = (45, 60)
    orig = (41, 55)
    n = 6
    boxes = rand_boxes(g, n, resized[0], resized[1], 2, 40)
    boxes[0] = torch.tensor([0, 0, resized[1], resized[0]])
    boxes[1] = torch.tensor([-5.0, 30, 20, 50])
    boxes[2] = torch.tensor([50.0, 40, 60, 45])
    boxes[3] = torch.tensor([10.0, 10, 10.5, 10.2])
    boxes = box_clip(boxes, resized)
    logits = torch.randn(n, 3, 28, 28, generator=g) * 3
    # smooth blobs so that thresholding at 0.5 gives real shapes
    logits = torch.nn.functional.avg_pool2d(logits, 5, 1, 2) * 4
    labels = torch.randint(1, 3, (n,), generator=g)
    probs = logits.sigmoid()[torch.arange(n), labels][:, None]
    rboxes = resize_boxes(boxes, resized, orig)
    pasted = paste_masks_in_image(probs, rboxes, orig)
    cases.append(dict(resized=list(resized), orig=list(orig), boxes=F32(boxes), labels=I(labels), probs=F32(probs), resized_boxes=F32(rboxes), pasted=F32(pasted)))
    return cases


def box_clip(b, size):
    from torchvision.ops import boxes as box_ops
    return box_ops.clip_boxes_to_image(b, size)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runtime/detection/testdata/detection_ops_goldens.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(20240614)
    golden = dict(
        torch=torch.__version__, torchvision=torchvision.__version__,
        nms=nms_cases(g), batched_nms=batched_cases(g), coder=coder_cases(g), anchors=anchor_cases(), rpn=rpn_cases(g),
        roi_align=roialign_cases(g), multiscale=multiscale_cases(g), postprocess=postprocess_cases(g), paste=paste_cases(g),
    )
    with open(args.out, "w") as f:
        f.write(dumps(golden))
        f.write("\n")


if __name__ == "__main__":
    main()
