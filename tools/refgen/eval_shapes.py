#!/usr/bin/python3
"""Runs a trained flbq Mask R-CNN (safetensors from train_shapes.py, or a
training checkpoint) with torchvision on a shapes split and writes COCO
results JSON (bbox [x, y, w, h], score, category_id, segmentation as
uncompressed column-major RLE of the binary mask, threshold 0.5), to be
scored by the Go evaluator:

    /usr/bin/python3 tools/refgen/eval_shapes.py --model tools/models/shapes-swin-t32.safetensors \
        --data /tmp/shapes/val --out /tmp/shapes_swin_val_results.json
    go run ./tools/flbq eval-results --gt /tmp/shapes/val/instances.json \
        --dets /tmp/shapes_swin_val_results.json --iou-type bbox   # and --iou-type segm

The model runs on the weights as stored (F16 rounded to float32), i.e.
exactly what the Go runtime loads.
"""
import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_np  # noqa: E402
import train_shapes  # noqa: E402


def rle(mask):
    """Uncompressed COCO RLE: column-major run lengths, starting with zeros."""
    flat = mask.T.reshape(-1).astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def load_model(path):
    if path.endswith(".safetensors"):
        tensors, meta = safetensors_np.load(path)
        cfg = json.loads(meta["flbq.config"])
        model = train_shapes.build_model(cfg)
        sd = model.state_dict()
        missing = set(sd) - set(tensors)
        extra = set(tensors) - set(sd)
        if missing or extra:
            raise SystemExit(f"{path}: missing {sorted(missing)[:5]}, unexpected {sorted(extra)[:5]}")
        model.load_state_dict({k: torch.from_numpy(np.asarray(v)).to(sd[k].dtype) for k, v in tensors.items()})
    else:
        model, ck = train_shapes.load_ckpt_model(path)
        cfg = ck["cfg"]
    return model.eval(), cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help=".safetensors (or a train_shapes.py checkpoint)")
    ap.add_argument("--data", required=True, help="split dir: images/ + instances.json")
    ap.add_argument("--ann", default="instances.json")
    ap.add_argument("--out", required=True, help="COCO results JSON")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=0, help="only the first N images")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, cfg = load_model(args.model)
    with open(os.path.join(args.data, args.ann)) as f:
        gt = json.load(f)
    cats = sorted(gt["categories"], key=lambda c: c["id"])
    label_to_cat = {i + 1: c["id"] for i, c in enumerate(cats)}
    names = cfg.get("categories")
    if names and names[1:] != [c["name"] for c in cats]:
        raise SystemExit(f"model categories {names[1:]} != dataset {[c['name'] for c in cats]}")
    imgs = sorted(gt["images"], key=lambda i: i["id"])
    if args.limit:
        imgs = imgs[:args.limit]
    res = []
    t0 = time.time()
    for n, im in enumerate(imgs):
        x = torch.from_numpy(np.array(Image.open(os.path.join(args.data, "images", im["file_name"])).convert("RGB")))
        x = x.permute(2, 0, 1).float().div_(255)
        with torch.no_grad():
            out = model([x])[0]
        masks = (out["masks"][:, 0] > 0.5).numpy()
        for b, s, l, m in zip(out["boxes"].tolist(), out["scores"].tolist(), out["labels"].tolist(), masks):
            res.append({"image_id": im["id"], "category_id": label_to_cat[l],
                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s, "segmentation": rle(m)})
        if (n + 1) % 50 == 0:
            print(f"{n + 1}/{len(imgs)} images, {time.time() - t0:.0f}s", flush=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f, separators=(",", ":"))
    os.replace(tmp, args.out)
    print(f"wrote {len(res)} detections on {len(imgs)} images to {args.out} in {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
