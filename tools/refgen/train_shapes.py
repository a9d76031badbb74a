#!/usr/bin/python3
"""Trains a small Mask R-CNN (flbq's Swin + FPN or ViTDet backbone wrappers
from flbq_models, torchvision 0.14 MaskRCNN heads) on the procedural shapes
dataset written by `flbq data shapes`, on the CPU, and exports flbq
safetensors (F16 weights, "flbq.config" metadata) that runtime/model and
runtime/maskrcnn load unchanged.

    go run ./tools/flbq data shapes --n 2000 --seed 1 --size 192 --out /tmp/shapes/train
    nice -n 10 /usr/bin/python3 tools/refgen/train_shapes.py --data /tmp/shapes/train \
        --ckpt /tmp/shapes_swin.ckpt --out tools/models/shapes-swin-t32.safetensors

Checkpoints (model, optimizer, iteration, RNG state) are written every
--ckpt-every iterations and the run resumes from --ckpt if it exists.
`--export-only CKPT` writes the safetensors from a checkpoint and exits.

Everything is seeded; with the same data, flags, torch build and thread
count the run is repeatable (the schedule is in iterations, not time).
"""
import argparse
import json
import math
import os
import random
import sys
import time

# Under CPU contention (a shared machine) OpenMP's spinning workers make
# 2-thread training many times slower; passive waiting avoids that.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch
from PIL import Image
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import flbq_models  # noqa: E402
import safetensors_np  # noqa: E402

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


# ---------------------------------------------------------------- data

def rle_counts_from_string(s):
    """Decodes a COCO compressed RLE string (pycocotools rleFrString)."""
    cnts = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, 1
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = c & 0x20
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(cnts) > 2:
            x += cnts[-2]
        cnts.append(x)
    return cnts


def decode_segm(seg, h, w):
    """COCO segmentation (RLE compressed/uncompressed, or polygons) -> HxW uint8."""
    if isinstance(seg, list):
        from PIL import ImageDraw
        im = Image.new("L", (w, h), 0)
        d = ImageDraw.Draw(im)
        for poly in seg:
            d.polygon([(poly[i], poly[i + 1]) for i in range(0, len(poly), 2)], fill=1)
        return np.array(im, dtype=np.uint8)
    counts = seg["counts"]
    if isinstance(counts, str):
        counts = rle_counts_from_string(counts)
    flat = np.zeros(h * w, dtype=np.uint8)
    pos, v = 0, 0
    for c in counts:
        if v:
            flat[pos:pos + c] = 1
        pos += c
        v ^= 1
    return flat.reshape(w, h).T.copy()  # column-major


def load_coco(root, ann="instances.json"):
    """Returns (categories, list of dicts: id, image uint8 HxWx3, boxes, labels, masks)."""
    with open(os.path.join(root, ann)) as f:
        d = json.load(f)
    cats = sorted(d["categories"], key=lambda c: c["id"])
    cat_to_label = {c["id"]: i + 1 for i, c in enumerate(cats)}
    by_img = {}
    for a in d["annotations"]:
        if a.get("iscrowd", 0):
            continue
        by_img.setdefault(a["image_id"], []).append(a)
    items = []
    for im in sorted(d["images"], key=lambda i: i["id"]):
        h, w = im["height"], im["width"]
        img = np.array(Image.open(os.path.join(root, "images", im["file_name"])).convert("RGB"))
        anns = by_img.get(im["id"], [])
        boxes, labels, masks = [], [], []
        for a in anns:
            x, y, bw, bh = a["bbox"]
            if bw < 1 or bh < 1:
                continue
            boxes.append([x, y, x + bw, y + bh])
            labels.append(cat_to_label[a["category_id"]])
            masks.append(decode_segm(a["segmentation"], h, w))
        items.append(dict(
            id=im["id"], file_name=im["file_name"], image=img,
            boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
            labels=np.array(labels, dtype=np.int64),
            masks=np.stack(masks) if masks else np.zeros((0, h, w), np.uint8),
        ))
    return cats, items


def to_sample(it, rng, augment):
    img = torch.from_numpy(it["image"]).permute(2, 0, 1).float().div_(255)
    boxes = torch.from_numpy(it["boxes"]).clone()
    masks = torch.from_numpy(it["masks"])
    h, w = img.shape[1:]
    if augment and rng.random() < 0.5:
        img = img.flip(-1)
        masks = masks.flip(-1)
        boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    if augment and rng.random() < 0.5:
        img = img.flip(-2)
        masks = masks.flip(-2)
        boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
    return img, dict(boxes=boxes, labels=torch.from_numpy(it["labels"]), masks=masks)


# ---------------------------------------------------------------- model

def make_config(args, categories):
    names = ["__background__"] + [c["name"] for c in categories]
    common = dict(task="detection", out_channels=args.fpn_channels, num_classes=len(names), categories=names,
                  category_ids=[0] + [c["id"] for c in categories],
                  min_size=args.size, max_size=args.size, image_mean=MEAN, image_std=STD,
                  rpn_pre_nms_top_n_test=args.rpn_pre_nms_top_n_test,
                  rpn_post_nms_top_n_test=args.rpn_post_nms_top_n_test,
                  box_detections_per_img=args.box_detections_per_img, box_score_thresh=0.05,
                  box_head_dim=args.box_head_dim, mask_head_dim=args.mask_head_dim)
    if args.arch == "swin":
        return dict(family="swin", patch_size=[4, 4], embed_dim=args.embed_dim, depths=args.depths,
                    num_heads=args.num_heads, window_size=[args.window, args.window], mlp_ratio=4.0,
                    out_norms=True, **common)
    if args.arch == "vitdet":
        # detectron2's ViT (window attention with zero padding: window 5 on the 12x12 grid pads
        # to 15, as ViTDet-B's 14 pads 64 to 70; global blocks every third; decomposed rel-pos)
        # under ViTDet's heads (RPN with two convs, 4conv1fc box head and mask head with
        # LayerNorm), torchvision's training and inference settings otherwise.
        blocks = list(range(args.vit_layers))
        return dict(family="vitdet", image_size=args.size, pretrain_image_size=args.size, patch_size=16,
                    num_layers=args.vit_layers, num_heads=args.vit_heads, hidden_dim=args.vit_dim,
                    mlp_dim=4 * args.vit_dim, pos_embed_cls_token=True, window_size=args.vitdet_window,
                    window_block_indexes=[i for i in blocks if i not in args.global_blocks], use_rel_pos=True,
                    **common)
    return dict(family="vit", image_size=args.size, patch_size=16, num_layers=args.vit_layers,
                num_heads=args.vit_heads, hidden_dim=args.vit_dim, mlp_dim=4 * args.vit_dim,
                pos_embed_cls_token=True, **common)


def build_model(cfg, train_settings=None):
    C = cfg["out_channels"]
    K = cfg["num_classes"]
    bh = cfg["box_head_dim"]
    mh = cfg["mask_head_dim"]
    bb = flbq_models.build(cfg).backbone
    kw = dict(train_settings or {})
    if cfg["family"] == "vitdet":
        # ViTDet's heads (mask_rcnn_vitdet.py): torchvision's v2 modules hold the same layers under
        # the names flbq reads (rpn.head.conv.{i}.0, box_head.{i}.{0,1}, mask_head.{i}.{0,1}).
        ln = flbq_models.LayerNorm2d
        return MaskRCNN(
            bb, num_classes=None, min_size=cfg["min_size"], max_size=cfg["max_size"],
            image_mean=cfg["image_mean"], image_std=cfg["image_std"],
            rpn_head=RPNHead(C, 3, conv_depth=2),
            rpn_pre_nms_top_n_test=cfg["rpn_pre_nms_top_n_test"], rpn_post_nms_top_n_test=cfg["rpn_post_nms_top_n_test"],
            box_head=FastRCNNConvFCHead((C, 7, 7), [C] * 4, [bh], norm_layer=ln), box_predictor=FastRCNNPredictor(bh, K),
            box_score_thresh=cfg["box_score_thresh"], box_detections_per_img=cfg["box_detections_per_img"],
            mask_head=MaskRCNNHeads(C, [mh] * 4, 1, norm_layer=ln), mask_predictor=MaskRCNNPredictor(mh, mh, K),
            **kw,
        )
    return MaskRCNN(
        bb, num_classes=None, min_size=cfg["min_size"], max_size=cfg["max_size"],
        image_mean=cfg["image_mean"], image_std=cfg["image_std"],
        rpn_pre_nms_top_n_test=cfg["rpn_pre_nms_top_n_test"], rpn_post_nms_top_n_test=cfg["rpn_post_nms_top_n_test"],
        box_head=TwoMLPHead(C * 49, bh), box_predictor=FastRCNNPredictor(bh, K),
        box_score_thresh=cfg["box_score_thresh"], box_detections_per_img=cfg["box_detections_per_img"],
        mask_head=MaskRCNNHeads(C, (mh, mh, mh, mh), 1), mask_predictor=MaskRCNNPredictor(mh, mh, K),
        **kw,
    )


def export(model, cfg, path, meta_extra=None):
    cfg = dict(cfg)
    # torchvision MaskRCNN's default AnchorGenerator, stated explicitly
    cfg.setdefault("anchor_sizes", [[32], [64], [128], [256], [512]])
    cfg.setdefault("aspect_ratios", [[0.5, 1.0, 2.0]] * 5)
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    meta = {"flbq.config": json.dumps(cfg)}
    if meta_extra:
        meta["flbq.training"] = json.dumps(meta_extra)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    safetensors_np.save(path, sd, meta)
    n = sum(v.numel() for v in model.state_dict().values() if v.is_floating_point())
    print(f"exported {path}: {n} float params, {os.path.getsize(path)} bytes", flush=True)


def load_ckpt_model(path):
    ck = torch.load(path, map_location="cpu")
    model = build_model(ck["cfg"])
    model.load_state_dict(ck["model"])
    return model, ck


# ---------------------------------------------------------------- train

def lr_at(it, args):
    if it < args.warmup:
        return args.lr * (0.001 + 0.999 * it / args.warmup)
    t = (it - args.warmup) / max(1, args.iters - args.warmup)
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def param_groups(model, wd):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.dim() <= 1 or "relative_position_bias_table" in n or "pos_embed" in n or "rel_pos_" in n:
            no_decay.append(p)
        else:
            decay.append(p)
    return [dict(params=decay, weight_decay=wd), dict(params=no_decay, weight_decay=0.0)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="dataset dir from `flbq data shapes` (images/, instances.json)")
    ap.add_argument("--ann", default="instances.json", help="annotation file in --data (e.g. train.json)")
    ap.add_argument("--arch", choices=["swin", "vit", "vitdet"], default="swin")
    ap.add_argument("--out", help="safetensors output")
    ap.add_argument("--ckpt", default="/tmp/train_shapes.ckpt")
    ap.add_argument("--export-only", metavar="CKPT", help="export a checkpoint to --out and exit")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=192, help="min_size = max_size")
    ap.add_argument("--embed-dim", type=int, default=32)
    ap.add_argument("--depths", type=int, nargs=4, default=[2, 2, 6, 2])
    ap.add_argument("--num-heads", type=int, nargs=4, default=[1, 2, 4, 8])
    ap.add_argument("--window", type=int, default=7)
    ap.add_argument("--vit-dim", type=int, default=128)
    ap.add_argument("--vit-layers", type=int, default=6)
    ap.add_argument("--vit-heads", type=int, default=4)
    ap.add_argument("--vitdet-window", type=int, default=5)
    ap.add_argument("--global-blocks", type=int, nargs="*", default=[2, 5])
    ap.add_argument("--fpn-channels", type=int, default=64)
    ap.add_argument("--box-head-dim", type=int, default=256)
    ap.add_argument("--mask-head-dim", type=int, default=32)
    ap.add_argument("--rpn-pre-nms-top-n-test", type=int, default=500)
    ap.add_argument("--rpn-post-nms-top-n-test", type=int, default=300)
    ap.add_argument("--box-detections-per-img", type=int, default=50)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--box-batch", type=int, default=64, help="RoIs sampled per image for the box/mask losses")
    ap.add_argument("--iters", type=int, default=1400)
    ap.add_argument("--stop-at", type=int, default=0, help="stop (checkpoint) after this iteration; 0 = --iters")
    ap.add_argument("--lr", type=float, default=8e-4)
    ap.add_argument("--min-lr-frac", type=float, default=0.02)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--wd", type=float, default=0.05)
    ap.add_argument("--clip", type=float, default=5.0)
    ap.add_argument("--ckpt-every", type=int, default=50)
    ap.add_argument("--log-every", type=int, default=10)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    if args.export_only:
        model, ck = load_ckpt_model(args.export_only)
        export(model.eval(), ck["cfg"], args.out, ck.get("info"))
        return

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    t0 = time.time()
    cats, items = load_coco(args.data, args.ann)
    print(f"loaded {len(items)} images, {sum(len(i['labels']) for i in items)} objects, "
          f"{len(cats)} categories in {time.time() - t0:.1f}s", flush=True)
    cfg = make_config(args, cats)
    train_settings = dict(rpn_pre_nms_top_n_train=1000, rpn_post_nms_top_n_train=500,
                          box_batch_size_per_image=args.box_batch)
    model = build_model(cfg, train_settings)
    nparams = sum(p.numel() for p in model.parameters())
    nbb = sum(p.numel() for p in model.backbone.parameters())
    print(f"config {json.dumps(cfg)}", flush=True)
    print(f"{nparams} parameters ({nbb} backbone+pyramid)", flush=True)
    opt = torch.optim.AdamW(param_groups(model, args.wd), lr=args.lr, betas=(0.9, 0.999))
    rng = random.Random(args.seed)
    start = 0
    elapsed = 0.0
    hist = []
    if os.path.exists(args.ckpt):
        ck = torch.load(args.ckpt, map_location="cpu")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        start = ck["iter"]
        rng.setstate(ck["rng"])
        torch.set_rng_state(ck["torch_rng"])
        elapsed = ck["info"]["train_seconds"]
        hist = ck["info"].get("loss_history", [])
        print(f"resumed from {args.ckpt} at iteration {start}", flush=True)

    order = []

    def next_batch():
        nonlocal order
        out = []
        for _ in range(args.batch):
            if not order:
                order = list(range(len(items)))
                rng.shuffle(order)
            out.append(to_sample(items[order.pop()], rng, True))
        return out

    def save_ckpt(it, t_train, last):
        info = dict(arch=args.arch, iter=it, iters=args.iters, batch=args.batch, lr=args.lr, seed=args.seed,
                    train_seconds=round(t_train, 1), threads=args.threads, data=os.path.abspath(args.data),
                    images=len(items), last_losses=last, loss_history=hist)
        tmp = args.ckpt + ".tmp"
        torch.save(dict(model=model.state_dict(), opt=opt.state_dict(), iter=it, rng=rng.getstate(),
                        torch_rng=torch.get_rng_state(), cfg=cfg, info=info), tmp)
        os.replace(tmp, args.ckpt)

    model.train()
    stop = args.stop_at or args.iters
    acc = {}
    nacc = 0
    tl = time.time()
    last = {}
    it = start
    while it < stop:
        lr = lr_at(it, args)
        for g in opt.param_groups:
            g["lr"] = lr
        imgs, tgts = zip(*next_batch())
        losses = model(list(imgs), list(tgts))
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        it += 1
        for k, v in losses.items():
            acc[k] = acc.get(k, 0.0) + float(v)
        acc["total"] = acc.get("total", 0.0) + float(loss)
        nacc += 1
        if not math.isfinite(float(loss)):
            print(f"non-finite loss at iteration {it}", flush=True)
            sys.exit(1)
        if it % args.log_every == 0 or it == stop:
            now = time.time()
            elapsed += now - tl
            tl = now
            last = {k: round(v / nacc, 4) for k, v in acc.items()}
            hist.append(dict(iter=it, t=round(elapsed, 1), **last))
            print(f"it {it}/{args.iters} lr {lr:.2e} {elapsed / 60:.1f}min " +
                  " ".join(f"{k.replace('loss_', '')} {v:.3f}" for k, v in last.items()), flush=True)
            acc, nacc = {}, 0
        if it % args.ckpt_every == 0 or it == stop:
            save_ckpt(it, elapsed + (time.time() - tl), last)
    print(f"done: {it} iterations, {elapsed / 60:.1f} min", flush=True)
    if args.out:
        model.eval()
        _, ck = load_ckpt_model(args.ckpt)
        export(model, cfg, args.out, ck["info"])


if __name__ == "__main__":
    main()
