#!/usr/bin/python3
"""Times torchvision 0.14's fp32 MaskRCNN on the configurations of
`go test ./runtime/maskrcnn -bench Detector` (Swin-T + FPN and ViT-B +
simple feature pyramid from flbq_models, default heads and settings, 91
classes, box_score_thresh 0 so every image keeps 100 detections, min_size =
the image's short side so the network sees exactly 512×512 / 800×1216),
random weights, with a per-stage split (preprocessing, backbone, FPN, RPN,
RoI box heads, masks incl. pasting).

    /usr/bin/python3 tools/refgen/maskrcnn_bench_torchvision.py --threads 2 [--reps 1]

Use the same thread count as the Go side (FLBQ_THREADS / --threads / backend.SetThreads).

    /usr/bin/python3 tools/refgen/maskrcnn_bench_torchvision.py --threads 1 --reps 5 \
        --model-file tools/models/shapes-swin-t32.safetensors --image IMG.png

--model-file times a trained flbq detector file instead (its own config,
weights and inference settings) on --image (a PNG; default: random pixels at
--sizes), as `go test ./runtime/model -bench QuantVsFP32` does.
"""
import argparse
import os
import statistics
import sys
import time

import torch
from torchvision.models.detection import MaskRCNN

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flbq_models  # noqa: E402

SWIN_T = dict(family="swin", task="detection", patch_size=[4, 4], embed_dim=96, depths=[2, 2, 6, 2],
              num_heads=[3, 6, 12, 24], window_size=[7, 7], out_norms=True, out_channels=256)
VIT_B = dict(family="vit", task="detection", image_size=224, patch_size=16, num_layers=12, num_heads=12,
             hidden_dim=768, mlp_dim=3072, out_channels=256)
STAGES = ["preproc", "backbone", "fpn", "rpn", "roi_heads", "masks"]


class Clock:
    def __init__(self):
        self.t = {s: 0.0 for s in STAGES}
        self.mark = None
        self.stage = None

    def switch(self, stage):
        now = time.perf_counter()
        if self.stage is not None:
            self.t[self.stage] += now - self.mark
        self.mark, self.stage = now, stage


def wrap(obj, name, clock, before, after=None):
    f = getattr(obj, name)

    def g(*a, **k):
        clock.switch(before)
        r = f(*a, **k)
        if after:
            clock.switch(after)
        return r
    setattr(obj, name, g)


def build(cfg, min_size, clock):
    bb = flbq_models.build(cfg).backbone
    m = MaskRCNN(bb, num_classes=91, min_size=min_size, max_size=1333, box_score_thresh=0.0).eval()
    return instrument(m, clock)


def instrument(m, clock):
    bb = m.backbone
    wrap(m.transform, "forward", clock, "preproc")
    wrap(bb, "forward_backbone", clock, "backbone")
    wrap(bb, "forward_pyramid", clock, "fpn")
    wrap(m.rpn, "forward", clock, "rpn")
    wrap(m.roi_heads.box_roi_pool, "forward", clock, "roi_heads")
    wrap(m.roi_heads.mask_roi_pool, "forward", clock, "masks")
    wrap(m.transform, "postprocess", clock, "masks")
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--models", default="SwinT,ViTB")
    ap.add_argument("--sizes", default="512x512,800x1216")
    ap.add_argument("--model-file", help="flbq .safetensors detector to time instead (name 'File')")
    ap.add_argument("--image", help="PNG input (default: random pixels at --sizes)")
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    cases = [("SwinT", SWIN_T), ("ViTB", VIT_B)]
    if a.model_file:
        cases, a.models = [("File", a.model_file)], "File"
    for name, cfg in cases:
        if name not in a.models.split(","):
            continue
        for sz in a.sizes.split(","):
            h, w = map(int, sz.split("x"))
            clock = Clock()
            if name == "File":
                import eval_shapes  # noqa: E402  (loads the file's config and weights)
                m = instrument(eval_shapes.load_model(cfg)[0], clock)
            else:
                m = build(cfg, min(h, w), clock)
            if a.image:
                import numpy as np
                from PIL import Image
                arr = np.asarray(Image.open(a.image).convert("RGB"))
                img = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255
                h, w = arr.shape[:2]
            else:
                img = torch.randint(0, 256, (3, h, w), generator=torch.Generator().manual_seed(5)).float() / 255
            with torch.no_grad():
                m([torch.rand(3, 160, 160)])  # warm-up
                ts, cpus, ndet = [], [], 0
                for _ in range(a.reps):
                    clock.__init__()
                    c0 = time.process_time()
                    t0 = time.perf_counter()
                    clock.switch("preproc")
                    out = m([img])
                    clock.switch(None)
                    ts.append(time.perf_counter() - t0)
                    cpus.append(time.process_time() - c0)
                    ndet = len(out[0]["boxes"])
            tot = sum(clock.t.values())
            shares = " ".join(f"{s} {100 * clock.t[s] / tot:.1f}%" for s in STAGES)
            print(f"{name}/{h}x{w}: min {min(ts):.3f}s median {statistics.median(ts):.3f}s, cpu {min(cpus):.3f}s, {ndet} dets; {shares}", flush=True)


if __name__ == "__main__":
    main()
