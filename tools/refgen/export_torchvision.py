#!/usr/bin/python3
"""Convert a torchvision model or checkpoint to a flbq safetensors file.

The output keeps torchvision's state_dict names and stores the model
configuration as JSON under the metadata key "flbq.config" (hyperparameters
named after torchvision's constructor arguments). Float tensors are written
as F32 (or F16 with --half); int64 buffers (Swin's relative_position_index)
as I64.

Supported layouts (see flbq_models.py):
  * torchvision VisionTransformer classifiers (vit_b_16, ...):
        export_torchvision.py --arch vit_b_16 --weights IMAGENET1K_V1 --out vit_b_16.safetensors
        export_torchvision.py --arch vit_b_16 --checkpoint my_vit.pth --num-classes 10 --out my.safetensors
  * Mask R-CNN / detection backbones in flbq's layout (backbone.body.* Swin +
    backbone.fpn.*, or backbone.patch_embed/pos_embed/blocks/... ViTDet), from
    a checkpoint whose state_dict uses those names, with the config as JSON:
        export_torchvision.py --checkpoint maskrcnn_swin_t.pth --config swin_t_det.json --out m.safetensors
    where swin_t_det.json is e.g.
        {"family": "swin", "task": "detection", "patch_size": [4, 4], "embed_dim": 96,
         "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24], "window_size": [7, 7],
         "out_norms": true, "out_channels": 256, "num_classes": 91,
         "min_size": 800, "max_size": 1333}
  * From Python: export(model, config_dict, path), e.g. for a model built with
    flbq_models.build(config) or torchvision.models.detection.MaskRCNN(...).

The file is checked against the config by loading it into the PyTorch
module flbq_models.build(config) (strict=False for detection heads), so
missing or misnamed backbone tensors are reported here rather than in Go.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import flbq_models  # noqa: E402
import safetensors_np  # noqa: E402


def vit_classifier_config(m, categories=None, resize_size=None):
    cfg = dict(family="vit", task="classification", image_size=m.image_size, patch_size=m.patch_size,
               num_layers=len(m.encoder.layers), num_heads=m.encoder.layers[0].num_heads, hidden_dim=m.hidden_dim,
               mlp_dim=m.mlp_dim, num_classes=m.num_classes, crop_size=m.image_size,
               image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    if m.representation_size:
        cfg["representation_size"] = m.representation_size
    if resize_size:
        cfg["resize_size"] = resize_size
    if categories:
        cfg["categories"] = list(categories)
    return cfg


def check(state, cfg):
    """Loads state into the reference module built from cfg; raises on mismatch."""
    ref = flbq_models.build(cfg)
    sd = {k: torch.as_tensor(v) for k, v in state.items()}
    if cfg["task"] == "detection":
        sd = {k: v for k, v in sd.items() if k.startswith("backbone.")}
    missing, unexpected = ref.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise SystemExit(f"state_dict does not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}")


def export(state_or_model, cfg, path, half=False):
    state = state_or_model.state_dict() if hasattr(state_or_model, "state_dict") else state_or_model
    check(state, cfg)
    out = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if v.is_floating_point():
            v = v.to(torch.float16 if half else torch.float32)
        elif v.dtype != torch.int64:
            v = v.to(torch.int64)
        out[k] = v.numpy()
    safetensors_np.save(path, out, {"flbq.config": json.dumps(cfg)})
    n = sum(v.size for v in out.values())
    print(f"wrote {path}: {len(out)} tensors, {n} values, family {cfg['family']}, task {cfg['task']}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", help="torchvision classifier constructor, e.g. vit_b_16")
    ap.add_argument("--weights", help="torchvision weights enum name, e.g. IMAGENET1K_V1 (downloads)")
    ap.add_argument("--checkpoint", help="a .pth state_dict (or a dict with 'model'/'state_dict')")
    ap.add_argument("--config", help="flbq config JSON file (detection checkpoints)")
    ap.add_argument("--num-classes", type=int)
    ap.add_argument("--half", action="store_true", help="store float tensors as F16")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    state = None
    if a.checkpoint:
        state = torch.load(a.checkpoint, map_location="cpu")
        for key in ("model", "state_dict"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
    if a.arch:
        import torchvision
        kw = {}
        if a.num_classes:
            kw["num_classes"] = a.num_classes
        weights = None
        if a.weights:
            weights = torchvision.models.get_model_weights(a.arch)[a.weights]
        m = getattr(torchvision.models, a.arch)(weights=weights, **kw)
        if state is not None:
            m.load_state_dict(state)
        cats = weights.meta.get("categories") if weights is not None else None
        resize = None
        if weights is not None:
            tr = weights.transforms()
            resize = tr.resize_size[0]
        cfg = vit_classifier_config(m, cats, resize)
        export(m, cfg, a.out, a.half)
        return
    if not (state and a.config):
        ap.error("give --arch (classifier) or --checkpoint with --config (detection)")
    with open(a.config) as f:
        cfg = json.load(f)
    export(state, cfg, a.out, a.half)


if __name__ == "__main__":
    main()
