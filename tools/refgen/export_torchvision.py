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


def maskrcnn_settings(m):
    """The flbq.config settings of a torchvision MaskRCNN object, read from
    the object itself (GeneralizedRCNNTransform, AnchorGenerator,
    RegionProposalNetwork, RoIHeads) so that none has to be restated by
    hand. Raises on settings flbq does not reproduce."""
    tr, rpn, rh = m.transform, m.rpn, m.roi_heads
    ag = rpn.anchor_generator
    if len(tr.min_size) != 1 or tr.fixed_size is not None or tr.size_divisible != 32:
        raise SystemExit(f"transform: min_size {tr.min_size}, fixed_size {tr.fixed_size}, size_divisible "
                         f"{tr.size_divisible}: flbq needs one min_size, no fixed_size and size_divisible 32")
    for name, pool, size in (("box_roi_pool", rh.box_roi_pool, 7), ("mask_roi_pool", rh.mask_roi_pool, 14)):
        if pool is None:
            continue
        out = pool.output_size if isinstance(pool.output_size, (list, tuple)) else (pool.output_size,) * 2
        if tuple(out) != (size, size) or list(pool.featmap_names) != ["0", "1", "2", "3"]:
            raise SystemExit(f"roi_heads.{name}: output {out}, levels {pool.featmap_names}: flbq needs {size}×{size} on '0'..'3'")
    if tuple(rh.box_coder.weights) != (10.0, 10.0, 5.0, 5.0) or tuple(rpn.box_coder.weights) != (1.0, 1.0, 1.0, 1.0):
        raise SystemExit("box coder weights differ from torchvision's defaults: flbq does not reproduce them")
    samp = rh.box_roi_pool.sampling_ratio
    if rh.mask_roi_pool is not None and rh.mask_roi_pool.sampling_ratio != samp:
        raise SystemExit("box and mask RoI pools use different sampling ratios: flbq needs one")
    return dict(
        min_size=int(tr.min_size[0]), max_size=int(tr.max_size),
        image_mean=[float(v) for v in tr.image_mean], image_std=[float(v) for v in tr.image_std],
        anchor_sizes=[[float(v) for v in s] for s in ag.sizes],
        aspect_ratios=[[float(v) for v in r] for r in ag.aspect_ratios],
        rpn_pre_nms_top_n_test=int(rpn._pre_nms_top_n["testing"]),
        rpn_post_nms_top_n_test=int(rpn._post_nms_top_n["testing"]),
        rpn_nms_thresh=float(rpn.nms_thresh), rpn_score_thresh=float(rpn.score_thresh), rpn_min_size=float(rpn.min_size),
        roi_sampling_ratio=max(int(samp), 0),
        box_score_thresh=float(rh.score_thresh), box_nms_thresh=float(rh.nms_thresh),
        box_detections_per_img=int(rh.detections_per_img),
    )


# The settings maskrcnn_settings reads (runtime/maskrcnn DefaultsUsed warns on the same).
DETECTION_SETTINGS = ("min_size", "max_size", "image_mean", "image_std", "anchor_sizes", "aspect_ratios",
                      "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test", "rpn_nms_thresh", "rpn_score_thresh",
                      "box_score_thresh", "box_nms_thresh", "box_detections_per_img")


def with_settings(cfg, m):
    """cfg plus maskrcnn_settings(m); a value cfg states differently is an error."""
    out = dict(cfg)
    for k, v in maskrcnn_settings(m).items():
        if k in out and out[k] != v:
            raise SystemExit(f"config {k} = {out[k]!r} but the model has {v!r}")
        out[k] = v
    return out


def export(state_or_model, cfg, path, half=False):
    """Writes path. A torchvision MaskRCNN object contributes its own
    settings (maskrcnn_settings); a bare state dict contributes none, and
    flbq warns at load for each one the config leaves out."""
    from torchvision.models.detection import MaskRCNN
    if isinstance(state_or_model, MaskRCNN):
        cfg = with_settings(cfg, state_or_model)
    elif cfg.get("task") == "detection":
        missing = [k for k in DETECTION_SETTINGS if k not in cfg]
        if missing:
            print(f"warning: the config states no {', '.join(missing)}: flbq will use torchvision's defaults "
                  "(export the MaskRCNN object to take its own values)", file=sys.stderr)
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
