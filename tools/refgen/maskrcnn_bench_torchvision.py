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

--score-thresh 0,0.05 times each box_score_thresh; --variants fp32,int8 adds
PyTorch's dynamic int8 quantization (torch.ao.quantization.quantize_dynamic
on every nn.Linear it accepts, onednn engine): in torch 1.13 Swin's window
attention calls F.linear on its qkv/proj `.weight`, so those stay fp32; the
MLPs, patch merging and the box head's fc6/fc7/predictors are int8. Each
line gives the process CPU seconds of the fastest rep and per-stage seconds.

--export DIR also writes each fp32 model (its random weights and settings) as
DIR/<model>-<H>x<W>-score<T>.safetensors, which
`FLBQ_BENCH_MODELS=DIR go test ./gen/modelpkg -bench QuantizedDetector` times
instead of Go's own random weights, so both sides run the same network and
keep the same detections.

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


def build(cfg, min_size, clock, score_thresh=0.0, variant="fp32"):
    bb = flbq_models.build(cfg).backbone
    m = MaskRCNN(bb, num_classes=91, min_size=min_size, max_size=1333, box_score_thresh=score_thresh).eval()
    if variant == "int8":
        m = quantize_int8(m)
    return instrument(m, clock)


def quantize_int8(m):
    """quantize_dynamic on every nn.Linear except those attention calls through F.linear."""
    if "onednn" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "onednn"
    names = {n for n, mod in m.named_modules() if isinstance(mod, torch.nn.Linear) and ".attn." not in n}
    return torch.ao.quantization.quantize_dynamic(m, qconfig_spec=names, dtype=torch.qint8)


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
    ap.add_argument("--score-thresh", default="0", help="box_score_thresh values, comma-separated")
    ap.add_argument("--variants", default="fp32", help="fp32 and/or int8 (dynamic quantization)")
    ap.add_argument("--export", metavar="DIR", help="also write each fp32 model as a flbq file here")
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
            for thr in map(float, a.score_thresh.split(",")):
                for variant in a.variants.split(","):
                    run_case(a, name, cfg, sz, thr, variant)


def run_case(a, name, cfg, sz, thr, variant):
    h, w = map(int, sz.split("x"))
    clock = Clock()
    if name == "File":
        import eval_shapes  # noqa: E402  (loads the file's config and weights)
        m = eval_shapes.load_model(cfg)[0]
        if variant == "int8":
            m = quantize_int8(m)
        m = instrument(m, clock)
    else:
        m = build(cfg, min(h, w), clock, thr, variant)
        if a.export and variant == "fp32":
            import export_torchvision  # noqa: E402
            os.makedirs(a.export, exist_ok=True)
            dcfg = dict(cfg, num_classes=91, min_size=min(h, w), max_size=1333)
            export_torchvision.export(m, dcfg, os.path.join(a.export, f"{name}-{h}x{w}-score{thr:g}.safetensors"))
    if a.image:
        import numpy as np
        from PIL import Image
        arr = np.asarray(Image.open(a.image).convert("RGB"))
        img = torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 255
        h, w = arr.shape[:2]
    else:
        img = torch.randint(0, 256, (3, h, w), generator=torch.Generator().manual_seed(5)).float() / 255
    with torch.no_grad():
        m([img])  # warm-up on the timed image
        best = None
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
            if best is None or cpus[-1] <= min(cpus):
                best = dict(clock.t)
            ndet = len(out[0]["boxes"])
    stages = " ".join(f"{s} {best[s]:.3f}" for s in STAGES)
    print(f"{name}/{h}x{w}/score{thr:g}/{variant}: cpu {min(cpus):.3f}s (min of {a.reps}), wall min {min(ts):.3f}s, "
          f"{ndet} dets; stage wall s: {stages}", flush=True)


if __name__ == "__main__":
    main()
