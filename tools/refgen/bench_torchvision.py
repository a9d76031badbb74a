#!/usr/bin/python3
"""Times torchvision fp32 backbones (Swin-T + out_norms, ViT-B ViTDet-style)
and their feature pyramids at 512×512 and 800×1216 with random weights, on
the same configurations as `go test ./runtime/model -bench Backbone`.

    /usr/bin/python3 tools/refgen/bench_torchvision.py --threads 2 [--reps 5]
    /usr/bin/python3 tools/refgen/bench_torchvision.py --threads 1 --model-file \
        tools/models/shapes-swin-t32.safetensors --sizes 192x192

--model-file times the backbone of a trained flbq detector file (its own
config and weights) instead of the random-weight configurations, as
`go test ./runtime/model -bench QuantVsFP32` does on the bundled model.

Prints one line per case: the minimum and median wall time over --reps runs
after one warm-up, with torch.set_num_threads(--threads) (match GOMAXPROCS /
FLBQ_THREADS / backend.SetThreads on the Go side).
"""
import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flbq_models  # noqa: E402

SWIN_T = dict(family="swin", task="detection", patch_size=[4, 4], embed_dim=96, depths=[2, 2, 6, 2],
              num_heads=[3, 6, 12, 24], window_size=[7, 7], out_norms=True, out_channels=256)
VIT_B = dict(family="vit", task="detection", image_size=224, patch_size=16, num_layers=12, num_heads=12,
             hidden_dim=768, mlp_dim=3072, out_channels=256)


def timeit(fn, reps):
    fn()
    ts, cpus = [], []
    for _ in range(reps):
        c = time.process_time()
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return min(ts), statistics.median(ts), statistics.median(cpus)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--models", default="SwinT,ViTB")
    ap.add_argument("--sizes", default="512x512,800x1216")
    ap.add_argument("--model-file", help="flbq .safetensors detector: time its backbone (name 'File')")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    cases = [("SwinT", SWIN_T), ("ViTB", VIT_B)]
    if a.model_file:
        cases, a.models = [("File", a.model_file)], "File"
    for name, cfg in cases:
        if name not in a.models.split(","):
            continue
        if name == "File":
            import eval_shapes  # noqa: E402  (loads the file's config and weights)
            bb = eval_shapes.load_model(cfg)[0].backbone.eval()
        else:
            bb = flbq_models.build(cfg).backbone.eval()
        for sz in a.sizes.split(","):
            h, w = map(int, sz.split("x"))
            x = torch.randn(1, 3, h, w)
            with torch.inference_mode():
                feats = bb.forward_backbone(x)
                tb = timeit(lambda: bb.forward_backbone(x), a.reps)
                tp = timeit(lambda: bb.forward_pyramid(feats), a.reps)
            print(f"{name}/{h}x{w}/backbone  min {tb[0]:.4f}s  median {tb[1]:.4f}s  cpu median {tb[2]:.4f}s")
            print(f"{name}/{h}x{w}/pyramid   min {tp[0]:.4f}s  median {tp[1]:.4f}s  cpu median {tp[2]:.4f}s")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
