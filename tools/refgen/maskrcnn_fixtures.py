#!/usr/bin/python3
"""Golden fixtures for runtime/maskrcnn (issue [maskrcnn]).

Builds tiny random-init torchvision MaskRCNN models on both flbq backbones
(flbq_models' Swin + FPN and ViTDet + simple feature pyramid wrappers, so
the state_dict names are those the Go loader reads), with small heads
(TwoMLPHead 16·7·7→32, MaskRCNNHeads (16,16,16,16), MaskRCNNPredictor
16→K), min_size 128 / max_size 192, and a box predictor scaled and biased
so that a few dozen well-separated detections survive. Weights are rounded
to float16 (stored F16; the torch model runs on the rounded values), so
each model file stays small.

Inputs are PNGs written to the testdata (a procedural RGB image of
150×230, a grayscale 121×97 one, and a 200×260 photo-like one: the COCO
photographs may not be copied into the repository). For each model and image the goldens
hold torchvision's proposals (and objectness probabilities), final boxes,
labels, scores, and the binary masks as COCO column-major run lengths.

    /usr/bin/python3 tools/refgen/maskrcnn_fixtures.py     # from the repo root

Outputs (runtime/maskrcnn/testdata/):
    swin_maskrcnn.safetensors, vit_maskrcnn.safetensors   weights + "flbq.config"
    images/*.png                                          inputs
    goldens.json                                          torchvision's outputs
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.transforms import functional as TF

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import flbq_models  # noqa: E402
import safetensors_np  # noqa: E402
from procedural import photo_like  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "runtime", "maskrcnn", "testdata")

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
K = 5
CATS = ["__background__", "circle", "square", "triangle", "blob"]
C = 16
SETTINGS = dict(rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=120, box_detections_per_img=40,
                box_score_thresh=0.05)

CONFIGS = {
    "swin_maskrcnn": dict(family="swin", task="detection", patch_size=[4, 4], embed_dim=16, depths=[2, 2, 2, 2],
                          num_heads=[1, 2, 2, 4], window_size=[7, 7], mlp_ratio=4.0, out_norms=True, out_channels=C,
                          min_size=128, max_size=192, image_mean=MEAN, image_std=STD, num_classes=K, categories=CATS,
                          **SETTINGS),
    "vit_maskrcnn": dict(family="vit", task="detection", image_size=64, patch_size=16, num_layers=2, num_heads=4,
                         hidden_dim=32, mlp_dim=64, pos_embed_cls_token=True, out_channels=C,
                         min_size=128, max_size=192, image_mean=MEAN, image_std=STD, num_classes=K, categories=CATS,
                         **SETTINGS),
}


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bias_table" in name or "pos_embed" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
            elif name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        # Spread the class scores (random heads give near-uniform ones) and
        # favour foreground, so that detections are many and well separated.
        bp = model.roi_heads.box_predictor
        bp.cls_score.weight.mul_(3)
        bp.cls_score.bias[0] -= 1.5
        bp.bbox_pred.weight.mul_(0.5)
        model.roi_heads.mask_predictor.mask_fcn_logits.weight.mul_(4)
        # F16 storage: run torch on the rounded values.
        for p in model.parameters():
            p.copy_(p.half().float())


def build(cfg):
    bb = flbq_models.build(cfg).backbone
    return MaskRCNN(
        bb, num_classes=None, min_size=cfg["min_size"], max_size=cfg["max_size"],
        image_mean=cfg["image_mean"], image_std=cfg["image_std"],
        rpn_pre_nms_top_n_test=cfg["rpn_pre_nms_top_n_test"], rpn_post_nms_top_n_test=cfg["rpn_post_nms_top_n_test"],
        box_head=TwoMLPHead(C * 49, 32), box_predictor=FastRCNNPredictor(32, K),
        box_score_thresh=cfg["box_score_thresh"], box_detections_per_img=cfg["box_detections_per_img"],
        mask_head=MaskRCNNHeads(C, (16, 16, 16, 16), 1), mask_predictor=MaskRCNNPredictor(16, 16, K),
    )


def images():
    os.makedirs(os.path.join(OUT, "images"), exist_ok=True)
    rng = np.random.RandomState(3)
    out = {}
    h, w = 150, 230
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([100 + 60 * np.sin(x / 11.0), 90 + 50 * np.cos(y / 7.0), 120 + 0 * x], -1)
    for (cy, cx, r, col) in [(40, 50, 22, (240, 40, 30)), (100, 150, 30, (30, 200, 60)), (60, 190, 18, (250, 250, 40))]:
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = col
    img[95:140, 20:80] = (20, 30, 220)
    img += rng.normal(0, 8, img.shape)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(os.path.join(OUT, "images", "shapes.png"))
    out["shapes"] = "shapes.png"
    h, w = 121, 97
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    g = 128 + 90 * np.sin(x / 6.0 + y / 9.0) * ((x // 20 + y // 20) % 2 * 2 - 1)
    g += rng.normal(0, 10, g.shape)
    Image.fromarray(np.clip(g, 0, 255).astype(np.uint8), mode="L").save(os.path.join(OUT, "images", "gray.png"))
    out["gray"] = "gray.png"
    photo_like(200, 260, 5).save(os.path.join(OUT, "images", "photo.png"))
    out["photo"] = "photo.png"
    return out


def rle(mask):
    """COCO column-major run lengths, starting with zeros."""
    flat = mask.T.reshape(-1).astype(np.uint8)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return counts


def f32(t):
    return [float(v) for v in t.reshape(-1).tolist()]


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    imgs = images()
    gold = {"torch": torch.__version__, "models": {}}
    for seed, (name, cfg) in enumerate(CONFIGS.items()):
        model = build(cfg).eval()
        randomize(model, 200 + seed)
        sd = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
        safetensors_np.save(os.path.join(OUT, name + ".safetensors"), sd, {"flbq.config": json.dumps(cfg)})
        rec = {}
        model.rpn.register_forward_hook(lambda m, i, o: rec.__setitem__("rpn", o))
        model.transform.register_forward_hook(lambda m, i, o: rec.__setitem__("tr", o))
        # objectness probabilities of the proposals: recompute as filter_proposals does
        orig_filter = model.rpn.filter_proposals

        def filt(*a, **k):
            boxes, scores = orig_filter(*a, **k)
            rec["pscores"] = scores
            return boxes, scores
        model.rpn.filter_proposals = filt
        cases = {}
        for cname, fname in imgs.items():
            x = TF.convert_image_dtype(TF.pil_to_tensor(Image.open(os.path.join(OUT, "images", fname)).convert("RGB")), torch.float)
            with torch.no_grad():
                out = model([x])[0]
            il = rec["tr"][0]
            props = rec["rpn"][0][0]
            masks = (out["masks"][:, 0] > 0.5).numpy()
            sc = out["scores"].numpy()
            gaps = np.diff(np.sort(sc)) if len(sc) > 1 else np.array([1.0])
            print(f"{name} {cname}: {tuple(x.shape[1:])} -> {tuple(il.image_sizes[0])}, {len(props)} proposals, "
                  f"{len(sc)} detections, scores {sc.min() if len(sc) else 0:.3f}..{sc.max() if len(sc) else 0:.3f}, "
                  f"min gap {gaps.min():.2e}, min-thresh {(sc.min() - cfg['box_score_thresh']) if len(sc) else 0:.2e}")
            cases[cname] = dict(
                image=fname, orig=list(x.shape[1:]), resized=list(il.image_sizes[0]), padded=list(il.tensors.shape[-2:]),
                proposals=f32(props), proposal_scores=f32(rec["pscores"][0]),
                boxes=f32(out["boxes"]), labels=[int(v) for v in out["labels"]], scores=f32(out["scores"]),
                masks=[rle(m) for m in masks],
            )
        gold["models"][name] = cases
        print(name, sum(v.numel() for v in model.state_dict().values()), "params")
    with open(os.path.join(OUT, "goldens.json"), "w") as f:
        json.dump(gold, f, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
