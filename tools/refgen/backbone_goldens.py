#!/usr/bin/python3
"""Golden fixtures for flbq's fp32 backbones (issue [backbones]).

Builds three tiny random-init models with fixed seeds — a Swin detection
backbone + FPN (with out_norms), a ViTDet-style backbone + simple feature
pyramid, and a torchvision VisionTransformer classifier — saves their
weights as flbq safetensors (with "flbq.config" metadata), runs them on
procedural images (written as PNG and JPEG beside the goldens; the
"photo" ones have the sizes of COCO photographs and natural-image-like
texture, since the COCO photographs may not be copied into the repository),
an odd-sized raw tensor, and saves the golden tensors.

    apt-get install python3-torch python3-torchvision python3-numpy python3-pil
    /usr/bin/python3 tools/refgen/backbone_goldens.py      # from the repo root

Outputs (runtime/model/testdata/):
    swin_tiny.safetensors, vitdet_tiny.safetensors, vitcls_tiny.safetensors   weights
    golden_<model>.safetensors   "<case>/input", "<case>/backbone.K", "<case>/fpn.K",
                                 "<case>/fpn.pool" (detection) or "<case>/logits"
    images/proc_*.png, images/proc_photo_*.jpg                               procedural inputs
"""
import json
import os
import sys

import numpy as np
import torch
import torchvision
from PIL import Image
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.transforms import functional as TF
from torchvision.transforms._presets import ImageClassification

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flbq_models  # noqa: E402
from procedural import photo_like  # noqa: E402
import safetensors_np  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "runtime", "model", "testdata")
# Photo-like inputs at the sizes of COCO val2017 images 39769, 142238 and
# 439180 (which resize to 800x1066, 799x1199 and 749x1333 at 800/1333).
PHOTOS = [("proc_photo_a", (480, 640), ".png"), ("proc_photo_b", (427, 640), ".jpg"),
          ("proc_photo_c", (360, 640), ".jpg")]

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]

CONFIGS = {
    "swin_tiny": dict(family="swin", task="detection", patch_size=[4, 4], embed_dim=16, depths=[2, 2, 2, 2],
                      num_heads=[1, 2, 2, 4], window_size=[7, 7], mlp_ratio=4.0, out_norms=True, out_channels=16,
                      min_size=96, max_size=160, image_mean=MEAN, image_std=STD, num_classes=5),
    "vitdet_tiny": dict(family="vit", task="detection", image_size=64, patch_size=16, num_layers=2, num_heads=4,
                        hidden_dim=32, mlp_dim=64, pos_embed_cls_token=True, out_channels=16,
                        min_size=96, max_size=160, image_mean=MEAN, image_std=STD, num_classes=5),
    "vitcls_tiny": dict(family="vit", task="classification", image_size=32, patch_size=8, num_layers=2, num_heads=2,
                        hidden_dim=32, mlp_dim=64, num_classes=10, resize_size=36, crop_size=32,
                        image_mean=MEAN, image_std=STD,
                        categories=["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]),
}


def randomize(model, seed):
    """Non-trivial random parameters (defaults would give near-uniform attention)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2 and "bias_table" not in name and "pos_embed" not in name and "class_token" not in name:
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
            elif "bias_table" in name or "pos_embed" in name or "class_token" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif name.endswith("weight"):  # norms
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def procedural_images():
    os.makedirs(os.path.join(OUT, "images"), exist_ok=True)
    rng = np.random.RandomState(7)
    out = {}
    for name, (h, w) in [("proc_a", (150, 230)), ("proc_b", (61, 97))]:
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.stack([
            127 + 120 * np.sin(x / 9.0) * np.cos(y / 13.0),
            255 * x / w,
            255 * ((x // 16 + y // 16) % 2),
        ], -1)
        img[h // 4: h // 2, w // 3: w // 2] = [250, 30, 30]
        img += rng.normal(0, 12, img.shape)
        img = np.clip(img, 0, 255).astype(np.uint8)
        p = os.path.join(OUT, "images", name + ".png")
        Image.fromarray(img).save(p)
        out[name] = p
    for seed, (name, (h, w), ext) in enumerate(PHOTOS):
        p = os.path.join(OUT, "images", name + ext)
        photo_like(h, w, 11 + seed).save(p, quality=90)  # PIL's default 4:2:0 chroma subsampling
        out[name] = p
    return out


def load_rgb_uint8(path):
    return TF.pil_to_tensor(Image.open(path).convert("RGB"))


def cases():
    return procedural_images()


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    imgs = cases()
    for seed, (mname, cfg) in enumerate(CONFIGS.items()):
        model = flbq_models.build(cfg).eval()
        randomize(model, 100 + seed)
        sd = flbq_models.state_dict_numpy(model)
        safetensors_np.save(os.path.join(OUT, mname + ".safetensors"), sd, {"flbq.config": json.dumps(cfg)})
        gold = {}
        with torch.no_grad():
            if cfg["task"] == "detection":
                bb = model.backbone
                tr = GeneralizedRCNNTransform(cfg["min_size"], cfg["max_size"], cfg["image_mean"], cfg["image_std"]).eval()
                inputs = {}
                for cname, path in imgs.items():
                    il, _ = tr([TF.convert_image_dtype(load_rgb_uint8(path), torch.float)])
                    inputs[cname] = il.tensors
                    gold[cname + "/image_size"] = np.array(il.image_sizes[0], dtype=np.int64)
                g = torch.Generator().manual_seed(5)
                inputs["raw_odd"] = torch.randn((1, 3, 44, 124), generator=g)
                inputs["raw_b"] = torch.randn((1, 3, 70, 100), generator=g)
                for cname, x in inputs.items():
                    outs = bb.forward_backbone(x)
                    pyr = bb.forward_pyramid(outs)
                    gold[cname + "/input"] = x
                    for k, o in enumerate(outs):
                        gold[f"{cname}/backbone.{k}"] = o
                    for k, (lvl, o) in enumerate(pyr.items()):
                        gold[f"{cname}/fpn.{lvl}"] = o
            else:
                tr = ImageClassification(crop_size=cfg["crop_size"], resize_size=cfg["resize_size"], mean=MEAN, std=STD)
                batch = []
                for cname, path in imgs.items():
                    x = tr(load_rgb_uint8(path))[None]
                    gold[cname + "/input"] = x
                    gold[cname + "/logits"] = model(x)
                    batch.append(x)
        safetensors_np.save(os.path.join(OUT, "golden_" + mname + ".safetensors"), gold)
        print(mname, sum(v.numel() for v in model.state_dict().values()), "params;",
              sum(np.asarray(v).size for v in gold.values()), "golden values")


if __name__ == "__main__":
    main()
