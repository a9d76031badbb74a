#!/usr/bin/env python3
"""End-to-end golden for runtime/detection.Run: a tiny random-init
torchvision MaskRCNN (toy conv backbone with five feature levels '0'..'3',
'pool'; torchvision's RPNHead, TwoMLPHead, FastRCNNPredictor,
MaskRCNNHeads, MaskRCNNPredictor) in eval mode on two images. Hooks record
the backbone features and every head's output; the Go test replays the
recorded head outputs through its own anchors, proposal filtering, RoI
pooling, post-processing and mask pasting, and compares proposals, pooled
features, boxes, labels, scores and binary masks with torchvision's.

    /usr/bin/python3 tools/refgen/detection_pipeline_goldens.py \
        --out runtime/detection/testdata/detection_pipeline_goldens.json
"""
import argparse
import collections

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

from detection_ops_goldens import F32, I, dumps

C = 4
K = 3


class ToyBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.out_channels = C
        self.c0 = nn.Conv2d(3, C, 4, 4)
        self.c = nn.ModuleList([nn.Conv2d(C, C, 3, 2, 1) for _ in range(3)])

    def forward(self, x):
        f = [self.c0(x)]
        for c in self.c:
            f.append(c(f[-1]))
        out = collections.OrderedDict((str(i), v) for i, v in enumerate(f))
        out["pool"] = F.max_pool2d(f[-1], 1, 2, 0)
        return out


def bits(m):
    b = np.packbits(m.reshape(-1).numpy().astype(np.uint8))
    return b.tobytes().hex()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runtime/detection/testdata/detection_pipeline_goldens.json")
    args = ap.parse_args()
    torch.manual_seed(7)
    torch.set_num_threads(1)
    model = MaskRCNN(
        ToyBackbone(), num_classes=None, min_size=96, max_size=128,
        rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=60,
        box_head=TwoMLPHead(C * 49, 32), box_predictor=FastRCNNPredictor(32, K),
        box_detections_per_img=8,
        mask_head=MaskRCNNHeads(C, (8, 8), 1), mask_predictor=MaskRCNNPredictor(8, 8, K),
    )
    # A random predictor gives near-uniform scores; spread them so that
    # scores are well separated.
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.mul_(25)
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(4)
    model.eval()
    rec = {}

    def hook(name):
        def f(mod, inp, out):
            rec[name] = out
        return f

    model.backbone.register_forward_hook(hook("features"))
    model.rpn.head.register_forward_hook(hook("rpn_head"))
    model.rpn.register_forward_hook(hook("rpn"))
    model.roi_heads.box_roi_pool.register_forward_hook(hook("box_pool"))
    model.roi_heads.box_predictor.register_forward_hook(hook("box_pred"))
    model.roi_heads.mask_predictor.register_forward_hook(hook("mask_pred"))
    model.transform.register_forward_hook(hook("transform"))
    g = torch.Generator().manual_seed(11)
    cases = []
    for h, w in ((75, 110), (120, 90)):
        img = torch.rand(3, h, w, generator=g)
        img = F.avg_pool2d(img[None], 5, 1, 2)[0]
        rec.clear()
        with torch.no_grad():
            out = model([img])[0]
        il = rec["transform"][0]
        feats = rec["features"]
        obj, dl = rec["rpn_head"]
        props = rec["rpn"][0][0]
        logits, reg = rec["box_pred"]
        pooled = rec["box_pool"]
        ml = rec["mask_pred"]
        masks = out["masks"][:, 0] > 0.5
        cases.append(dict(
            orig=[h, w], resized=list(il.image_sizes[0]), padded=list(il.tensors.shape[-2:]),
            shapes=[list(v.shape[1:]) for v in feats.values()], features=[F32(v) for v in feats.values()],
            objectness=[F32(o) for o in obj], deltas=[F32(d) for d in dl],
            proposals=F32(props), pooled_sums=F32(pooled.sum(dim=(1, 2, 3))), pooled_head=F32(pooled[:2]),
            class_logits=F32(logits), box_regression=F32(reg), mask_logits=F32(ml),
            boxes=F32(out["boxes"]), scores=F32(out["scores"]), labels=I(out["labels"]), masks=bits(masks),
        ))
    with open(args.out, "w") as f:
        f.write(dumps(dict(torch=torch.__version__, num_classes=K, channels=C, cases=cases)))
        f.write("\n")


if __name__ == "__main__":
    main()
