#!/usr/bin/python3
"""Golden fixtures for Swin Mask R-CNN checkpoints in mmdetection 2.x layout
and in the official Swin-Transformer-Object-Detection (mmdet 2.11 fork)
layout, with a plain-torch re-implementation of mmdetection 2.x inference.

One small random Swin Mask R-CNN (patch 4, embed 16, depths 2-2-2-2, heads
1-2-2-4, window 7; FPN 16 channels; RPN 3 anchors; Shared2FCBBoxHead 32;
FCNMaskHead 16; 80 COCO classes) is written twice with the same weights:

  * mmdetection layout (backbone.stages.i..., PatchMerging through nn.Unfold),
    legacy torch.save format as tools/model_converters/publish_model.py
    writes it;
  * official layout (backbone.layers.i..., PatchMerging by x0,x1,x2,x3
    concatenation), zip format, with an AdamW optimizer state as published
    files carry.

The reference forward below follows mmdetection's test path line by line
(file:line cited for every step, from the sources named in MMDET_REFERENCE)
instead of running mmdetection (not installable here). It runs the two
backbone layouts against each other (stage maps must agree to 1e-5) and
checks the relative_position_index constructions and the Unfold channel
permutation. Every float weight is float16-representable (stored float32).

    /usr/bin/python3 tools/refgen/mmdet_fixtures.py     # from the repo root

Outputs (tools/convert/testdata/mmdet/):
    mask_rcnn_swin_tiny_mmdet.pth      {"meta", "state_dict"}, legacy format; the state dict
                                       carries mmcv's `_metadata` attribute (pickle BUILD)
    mask_rcnn_swin_tiny_official.pth   {"meta", "state_dict", "optimizer"}, zip format
    images/wide.png, images/strip.png  RGB inputs (150x230, 40x300)
    goldens.json                       preprocessing sizes, proposals, detections, masks (COCO RLE)
    maps.safetensors                   per case: backbone input, stage0..3 (after norm{i}), fpn0..4

"cases" follow mmdetection 2.25. The official fork's own mmdet 2.11 code
gives different proposals and detections on these inputs (its RPN keeps the
zero-width/height proposals that 2.25 drops): "cases_2.11" holds those
(proposals, detections, masks; geometry as in "cases"). Per case,
goldens.json also has "rpn_removed_by_min_bbox_size".

Deterministic: a second run rewrites byte-identical files (the legacy .pth
uses sequential stand-ins for torch's storage-address keys, see save_legacy).
"""
import collections
import io
import json
import os
import pickle
import pickletools
import struct
import sys

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.ops import roi_align as tv_roi_align

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # importing the helpers below must not leave __pycache__ in the tree
sys.path.insert(0, HERE)
import safetensors_np  # noqa: E402
from maskrcnn_fixtures import rle  # noqa: E402  (COCO column-major run lengths, zeros first)
from procedural import photo_like  # noqa: E402

ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
OUT = os.path.join(ROOT, "tools", "convert", "testdata", "mmdet")

# Line numbers below refer to these trees:
#   mmdet/...   mmdetection tag v2.25.0 (commit ca11860f4f3c3ca2ce8340e2686eeaec05b29111)
#   mmcv/...    mmcv tag v1.6.0 (commit f4167fe1e3d106cd641708d269ddbff568393437; mmdet 2.25.0 accepts mmcv <= 1.6.0)
#   official:   SwinTransformer/Swin-Transformer-Object-Detection commit c7b20110addde0f74b1fbf812b403d16a59a87a9
#               (mmdet 2.11.0), mmdet/models/backbones/swin_transformer.py
MMDET_REFERENCE = ("mmdetection v2.25.0 (ca11860f4f3c3ca2ce8340e2686eeaec05b29111) + mmcv v1.6.0 "
                   "(f4167fe1e3d106cd641708d269ddbff568393437); official backbone: "
                   "Swin-Transformer-Object-Detection c7b20110addde0f74b1fbf812b403d16a59a87a9 (mmdet 2.11.0)")

# mmdet/datasets/coco.py:25-38
CLASSES = (
    'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat', 'traffic light',
    'fire hydrant', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse', 'sheep', 'cow',
    'elephant', 'bear', 'zebra', 'giraffe', 'backpack', 'umbrella', 'handbag', 'tie', 'suitcase', 'frisbee',
    'skis', 'snowboard', 'sports ball', 'kite', 'baseball bat', 'baseball glove', 'skateboard', 'surfboard',
    'tennis racket', 'bottle', 'wine glass', 'cup', 'fork', 'knife', 'spoon', 'bowl', 'banana', 'apple',
    'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza', 'donut', 'cake', 'chair', 'couch',
    'potted plant', 'bed', 'dining table', 'toilet', 'tv', 'laptop', 'mouse', 'remote', 'keyboard',
    'cell phone', 'microwave', 'oven', 'toaster', 'sink', 'refrigerator', 'book', 'clock', 'vase',
    'scissors', 'teddy bear', 'hair drier', 'toothbrush')

# ---- model and test configuration (a scaled-down configs/swin/mask_rcnn_swin-t-p4-w7_fpn_1x_coco.py) ----
PATCH, EMBED, DEPTHS, HEADS, WIN, MLP_RATIO = 4, 8, (2, 2, 2, 2), (1, 2, 2, 4), 7, 4
LN_EPS = 1e-5
FPN_C, NUM_OUTS = 16, 5
STRIDES = (4, 8, 16, 32, 64)
ANCHOR_SCALES, ANCHOR_RATIOS = (8.0,), (0.5, 1.0, 2.0)
NUM_ANCHORS = len(ANCHOR_SCALES) * len(ANCHOR_RATIOS)
RPN_STDS, RCNN_STDS = (1.0, 1.0, 1.0, 1.0), (0.1, 0.1, 0.2, 0.2)
FC_OUT, NUM_CLASSES, MASK_C = 32, 80, 16
FINEST_SCALE = 56
IMG_SCALE = (192, 128)  # (long, short) as mmcv.rescale_size reads a tuple
MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]
SIZE_DIVISOR = 32
RPN_CFG = dict(nms_pre=1000, max_per_img=1000, iou_threshold=0.7, min_bbox_size=0)
RCNN_CFG = dict(score_thr=0.05, iou_threshold=0.5, max_per_img=100, mask_thr_binary=0.5)
WEIGHT_SEED = 2025
CLS_WEIGHT_MUL = 6.0   # spread of the class logits across RoIs
BG_LOGIT = 15.6        # background logit above the (centred) class logits: sets how many detections survive


# ============================================================================
# State dict (mmdetection layout, module registration order)
# ============================================================================

def mmdet_spec():
    """(key, shape) in the order mmdetection's modules register them
    (TwoStageDetector: backbone, neck, rpn_head, roi_head). int64 entries are
    the relative_position_index buffers (mmdet/models/backbones/swin.py:69,
    register_buffer default persistent=True, so they are in the state dict)."""
    spec = [("backbone.patch_embed.projection.weight", (EMBED, 3, PATCH, PATCH)),
            ("backbone.patch_embed.projection.bias", (EMBED,)),
            ("backbone.patch_embed.norm.weight", (EMBED,)), ("backbone.patch_embed.norm.bias", (EMBED,))]
    c = EMBED
    for i, (depth, h) in enumerate(zip(DEPTHS, HEADS)):
        for j in range(depth):
            p = f"backbone.stages.{i}.blocks.{j}."
            spec += [(p + "norm1.weight", (c,)), (p + "norm1.bias", (c,)),
                     # WindowMSA: parameter, then buffer, then child modules (swin.py:60-74)
                     (p + "attn.w_msa.relative_position_bias_table", ((2 * WIN - 1) ** 2, h)),
                     (p + "attn.w_msa.relative_position_index", (WIN * WIN, WIN * WIN)),
                     (p + "attn.w_msa.qkv.weight", (3 * c, c)), (p + "attn.w_msa.qkv.bias", (3 * c,)),
                     (p + "attn.w_msa.proj.weight", (c, c)), (p + "attn.w_msa.proj.bias", (c,)),
                     (p + "norm2.weight", (c,)), (p + "norm2.bias", (c,)),
                     # mmcv FFN: layers = Sequential(Sequential(Linear, act, Dropout), Linear, Dropout)
                     # (mmcv/cnn/bricks/transformer.py:606-612)
                     (p + "ffn.layers.0.0.weight", (MLP_RATIO * c, c)), (p + "ffn.layers.0.0.bias", (MLP_RATIO * c,)),
                     (p + "ffn.layers.1.weight", (c, MLP_RATIO * c)), (p + "ffn.layers.1.bias", (c,))]
        if i < len(DEPTHS) - 1:
            # mmdet PatchMerging registers norm before reduction (mmdet/models/utils/transformer.py:333-338)
            p = f"backbone.stages.{i}.downsample."
            spec += [(p + "norm.weight", (4 * c,)), (p + "norm.bias", (4 * c,)), (p + "reduction.weight", (2 * c, 4 * c))]
            c *= 2
    for i in range(4):
        spec += [(f"backbone.norm{i}.weight", (EMBED << i,)), (f"backbone.norm{i}.bias", (EMBED << i,))]
    for i in range(4):
        spec += [(f"neck.lateral_convs.{i}.conv.weight", (FPN_C, EMBED << i, 1, 1)), (f"neck.lateral_convs.{i}.conv.bias", (FPN_C,))]
    for i in range(4):
        spec += [(f"neck.fpn_convs.{i}.conv.weight", (FPN_C, FPN_C, 3, 3)), (f"neck.fpn_convs.{i}.conv.bias", (FPN_C,))]
    spec += [("rpn_head.rpn_conv.weight", (FPN_C, FPN_C, 3, 3)), ("rpn_head.rpn_conv.bias", (FPN_C,)),
             ("rpn_head.rpn_cls.weight", (NUM_ANCHORS, FPN_C, 1, 1)), ("rpn_head.rpn_cls.bias", (NUM_ANCHORS,)),
             ("rpn_head.rpn_reg.weight", (4 * NUM_ANCHORS, FPN_C, 1, 1)), ("rpn_head.rpn_reg.bias", (4 * NUM_ANCHORS,))]
    # BBoxHead.__init__ registers fc_cls, fc_reg first; ConvFCBBoxHead re-assigns them after
    # shared_fcs, which keeps their place (bbox_head.py:71-81, convfc_bbox_head.py:58, 87-94).
    p = "roi_head.bbox_head."
    spec += [(p + "fc_cls.weight", (NUM_CLASSES + 1, FC_OUT)), (p + "fc_cls.bias", (NUM_CLASSES + 1,)),
             (p + "fc_reg.weight", (4 * NUM_CLASSES, FC_OUT)), (p + "fc_reg.bias", (4 * NUM_CLASSES,)),
             (p + "shared_fcs.0.weight", (FC_OUT, FPN_C * 49)), (p + "shared_fcs.0.bias", (FC_OUT,)),
             (p + "shared_fcs.1.weight", (FC_OUT, FC_OUT)), (p + "shared_fcs.1.bias", (FC_OUT,))]
    p = "roi_head.mask_head."
    for i in range(4):
        spec += [(p + f"convs.{i}.conv.weight", (MASK_C, FPN_C if i == 0 else MASK_C, 3, 3)), (p + f"convs.{i}.conv.bias", (MASK_C,))]
    spec += [(p + "upsample.weight", (MASK_C, MASK_C, 2, 2)), (p + "upsample.bias", (MASK_C,)),  # ConvTranspose2d: (in, out, k, k)
             (p + "conv_logits.weight", (NUM_CLASSES, MASK_C, 1, 1)), (p + "conv_logits.bias", (NUM_CLASSES,))]
    return spec


def rel_index_mmdet():
    """mmdet/models/backbones/swin.py:64-69 and double_step_seq at :121-125."""
    wh, ww = WIN, WIN

    def double_step_seq(step1, len1, step2, len2):
        seq1 = torch.arange(0, step1 * len1, step1)
        seq2 = torch.arange(0, step2 * len2, step2)
        return (seq1[:, None] + seq2[None, :]).reshape(1, -1)
    coords = double_step_seq(2 * ww - 1, wh, 1, ww)
    idx = coords + coords.T
    return idx.flip(1).contiguous()


def rel_index_official():
    """official swin_transformer.py:101-111."""
    coords_h = torch.arange(WIN)
    coords_w = torch.arange(WIN)
    coords = torch.stack(torch.meshgrid([coords_h, coords_w], indexing="ij"))  # 2, Wh, Ww (torch<1.10 default "ij")
    flat = torch.flatten(coords, 1)
    rel = flat[:, :, None] - flat[:, None, :]
    rel = rel.permute(1, 2, 0).contiguous()
    rel[:, :, 0] += WIN - 1
    rel[:, :, 1] += WIN - 1
    rel[:, :, 0] *= 2 * WIN - 1
    return rel.sum(-1)


def make_weights():
    """Random weights with activations of order one, fp16-representable."""
    g = torch.Generator().manual_seed(WEIGHT_SEED)
    sd = collections.OrderedDict()
    for key, shape in mmdet_spec():
        if key.endswith("relative_position_index"):
            sd[key] = rel_index_mmdet()
            continue
        if key.endswith("relative_position_bias_table"):
            t = torch.randn(shape, generator=g) * 0.5
        elif key.endswith("upsample.weight"):  # ConvTranspose2d k2 s2: each output sums over in_channels only
            t = torch.randn(shape, generator=g) / shape[0] ** 0.5
        elif len(shape) >= 2:
            t = torch.randn(shape, generator=g) / float(np.prod(shape[1:])) ** 0.5
        elif "norm" in key and key.endswith("weight"):
            t = 1 + 0.2 * torch.randn(shape, generator=g)
        else:
            t = 0.1 * torch.randn(shape, generator=g)
        sd[key] = t
    # fc_cls is spread here and centred by calibrate_classifier() once the RoI features are known.
    sd["roi_head.bbox_head.fc_cls.weight"] *= CLS_WEIGHT_MUL
    sd["roi_head.bbox_head.fc_reg.weight"] *= 0.5
    sd["rpn_head.rpn_reg.weight"] *= 0.5
    sd["roi_head.mask_head.conv_logits.weight"] *= 4.0
    for k, v in sd.items():
        if v.is_floating_point():
            sd[k] = v.half().float().contiguous()
    return sd


def calibrate_classifier(sd, cases):
    """Centre the foreground logits and raise the background one (mmdet: background is the LAST
    column, mmdet/core/post_processing/bbox_nms.py:36). A random 81-way softmax is near uniform
    (~0.012 < score_thr) and the shared-FC features share a large common component, so a few
    classes would win everywhere: the fc_cls bias cancels W @ mean(feature) over the RPN
    proposals of the fixture images, and BG_LOGIT leaves a few dozen detections per image.
    fc_cls comes after everything it is calibrated on, so one pass is exact."""
    p = "roi_head.bbox_head."
    feats = []
    with torch.no_grad():
        for img, meta in cases:
            f = fpn(sd, mmdet_backbone(sd, img))
            rf, _ = roi_extract(f, bbox2roi(rpn(sd, f, meta["img_shape"], {})), 7)
            x = F.relu(F.linear(rf.flatten(1), sd[p + "shared_fcs.0.weight"], sd[p + "shared_fcs.0.bias"]))
            feats.append(F.relu(F.linear(x, sd[p + "shared_fcs.1.weight"], sd[p + "shared_fcs.1.bias"])))
        mu = torch.cat(feats).mean(0)
        bias = -(sd[p + "fc_cls.weight"] @ mu)
        bias[NUM_CLASSES] += BG_LOGIT
    sd[p + "fc_cls.bias"] = bias.half().float().contiguous()


# ---- official <-> mmdet key mapping ----------------------------------------
# mmdetection converts official checkpoints with swin_converter
# (mmdet/models/utils/ckpt_convert.py:85-137, called by
# tools/model_converters/swin2mmdet.py). Its Unfold fix-ups:
#   correct_unfold_reduction_order (ckpt_convert.py:89-94):
#       W.reshape(out, 4, C)[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(out, 4C)
#   correct_unfold_norm_order (ckpt_convert.py:96-100): the same on a vector.
# i.e. mmdet[:, 4*c + 2*kh + kw] = official[:, (kh + 2*kw)*C + c]
# (nn.Unfold orders channels (c, kh, kw); official concatenates
# x0=(0,0), x1=(1,0), x2=(0,1), x3=(1,1) as (kh, kw), each block of C channels).
# Below: the converter direction (for the self-check) and its inverse (to write
# the official file).

PERM = [0, 2, 1, 3]  # self-inverse


def unfold_reduction_official_to_mmdet(w):
    out_c, in_c = w.shape
    return w.reshape(out_c, 4, in_c // 4)[:, PERM, :].transpose(1, 2).reshape(out_c, in_c)


def unfold_norm_official_to_mmdet(v):
    in_c = v.shape[0]
    return v.reshape(4, in_c // 4)[PERM, :].transpose(0, 1).reshape(in_c)


def unfold_reduction_mmdet_to_official(w):
    out_c, in_c = w.shape
    return w.reshape(out_c, in_c // 4, 4).transpose(1, 2)[:, PERM, :].reshape(out_c, in_c).contiguous()


def unfold_norm_mmdet_to_official(v):
    in_c = v.shape[0]
    return v.reshape(in_c // 4, 4).transpose(0, 1)[PERM, :].reshape(in_c).contiguous()


def official_backbone_spec():
    """Official keys (without 'backbone.') in the official modules' registration order:
    PatchEmbed proj, norm (swin_transformer.py:423-427); block norm1, attn (table param,
    index buffer, qkv, proj), norm2, mlp.fc1, mlp.fc2 (:97-115, :185-193); PatchMerging
    reduction BEFORE norm (:268-269); norm{i} (:550-553)."""
    keys = ["patch_embed.proj.weight", "patch_embed.proj.bias", "patch_embed.norm.weight", "patch_embed.norm.bias"]
    for i, depth in enumerate(DEPTHS):
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            keys += [p + s for s in ("norm1.weight", "norm1.bias", "attn.relative_position_bias_table",
                                     "attn.relative_position_index", "attn.qkv.weight", "attn.qkv.bias",
                                     "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias",
                                     "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")]
        if i < len(DEPTHS) - 1:
            keys += [f"layers.{i}.downsample.reduction.weight", f"layers.{i}.downsample.norm.weight",
                     f"layers.{i}.downsample.norm.bias"]
    keys += [f"norm{i}.{s}" for i in range(4) for s in ("weight", "bias")]
    return keys


def swin_converter(ckpt):
    """mmdet/models/utils/ckpt_convert.py:85-137 (official backbone keys -> mmdet keys), re-implemented."""
    new = collections.OrderedDict()
    for k, v in ckpt.items():
        if k.startswith("head"):
            continue
        elif k.startswith("layers"):
            new_v = v
            if "attn." in k:
                new_k = k.replace("attn.", "attn.w_msa.")
            elif "mlp." in k:
                if "mlp.fc1." in k:
                    new_k = k.replace("mlp.fc1.", "ffn.layers.0.0.")
                elif "mlp.fc2." in k:
                    new_k = k.replace("mlp.fc2.", "ffn.layers.1.")
                else:
                    new_k = k.replace("mlp.", "ffn.")
            elif "downsample" in k:
                new_k = k
                if "reduction." in k:
                    new_v = unfold_reduction_official_to_mmdet(v)
                elif "norm." in k:
                    new_v = unfold_norm_official_to_mmdet(v)
            else:
                new_k = k
            new_k = new_k.replace("layers", "stages", 1)
        elif k.startswith("patch_embed"):
            new_v = v
            new_k = k.replace("proj", "projection") if "proj" in k else k
        else:
            new_v, new_k = v, k
        new["backbone." + new_k] = new_v
    return new


def official_to_mmdet_key(k):
    """The key half of swin_converter for one key (no 'backbone.' prefix)."""
    if k.startswith("layers"):
        if "attn." in k:
            k = k.replace("attn.", "attn.w_msa.")
        elif "mlp.fc1." in k:
            k = k.replace("mlp.fc1.", "ffn.layers.0.0.")
        elif "mlp.fc2." in k:
            k = k.replace("mlp.fc2.", "ffn.layers.1.")
        return "backbone." + k.replace("layers", "stages", 1)
    if k.startswith("patch_embed"):
        return "backbone." + k.replace("proj", "projection")
    return "backbone." + k


def mmdet_to_official(sd):
    """The official-layout state dict with the same weights: swin_converter inverted."""
    out = collections.OrderedDict()
    for k in official_backbone_spec():
        v = sd[official_to_mmdet_key(k)]
        if k.endswith("downsample.reduction.weight"):
            v = unfold_reduction_mmdet_to_official(v)
        elif ".downsample.norm." in k:
            v = unfold_norm_mmdet_to_official(v)
        elif k.endswith("relative_position_index"):
            v = rel_index_official()
        out["backbone." + k] = v.clone()
    for k, v in sd.items():
        if not k.startswith("backbone."):
            out[k] = v.clone()
    # Self-check: mmdetection's own converter maps the official file back to ours, bit for bit.
    back = swin_converter(collections.OrderedDict((k[len("backbone."):], v) for k, v in out.items()
                                                  if k.startswith("backbone.")))
    mm_bb = collections.OrderedDict((k, v) for k, v in sd.items() if k.startswith("backbone."))
    assert sorted(back) == sorted(mm_bb), set(back) ^ set(mm_bb)
    for k in mm_bb:
        assert back[k].dtype == mm_bb[k].dtype and torch.equal(back[k], mm_bb[k]), k
    return out


# ============================================================================
# Backbones
# ============================================================================

def ln(x, sd, p):
    return F.layer_norm(x, (x.shape[-1],), sd[p + ".weight"], sd[p + ".bias"], LN_EPS)


def lin(x, sd, p, bias=True):
    return F.linear(x, sd[p + ".weight"], sd[p + ".bias"] if bias else None)


def window_attention(x, sd, p, num_heads, mask):
    """WindowMSA.forward, mmdet/models/backbones/swin.py:81-119 (identical to official
    WindowAttention.forward, swin_transformer.py:121-153). p: ".../attn.w_msa" or ".../attn"."""
    b, n, c = x.shape
    qkv = lin(x, sd, p + ".qkv").reshape(b, n, 3, num_heads, c // num_heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    q = q * (c // num_heads) ** -0.5  # qk_scale None -> head_dim ** -0.5 (swin.py:56)
    attn = q @ k.transpose(-2, -1)
    bias = sd[p + ".relative_position_bias_table"][sd[p + ".relative_position_index"].view(-1)].view(
        WIN * WIN, WIN * WIN, -1).permute(2, 0, 1).contiguous()
    attn = attn + bias.unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        attn = attn.view(b // nw, nw, num_heads, n, n) + mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, num_heads, n, n)
    attn = torch.softmax(attn, dim=-1)
    x = (attn @ v).transpose(1, 2).reshape(b, n, c)
    return lin(x, sd, p + ".proj")


def window_partition(x):
    """swin.py:272-285 (official :41-53)."""
    b, h, w, c = x.shape
    x = x.view(b, h // WIN, WIN, w // WIN, WIN, c)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, WIN, WIN, c)


def window_reverse(windows, h, w):
    """swin.py:256-270 (official :56-70)."""
    b = int(windows.shape[0] / (h * w / WIN / WIN))
    x = windows.view(b, h // WIN, w // WIN, WIN, WIN, -1)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(b, h, w, -1)


def shift_attn_mask(hp, wp, shift):
    """The SW-MSA mask: mmdet swin.py:199-220 (official BasicLayer, swin_transformer.py:371-389).
    For a padded map of a single window (hp == WIN) the first slice is empty and the mask still
    splits the window into the [0, WIN-shift) and [WIN-shift, WIN) bands: neither mmdet nor the
    official code drops the shift there. torchvision's shifted_window_attention does
    (torchvision/models/swin_transformer.py:157-161, 'If window size is larger than feature
    size, there is no need to shift window': shift_size set to 0 when window >= padded size)."""
    img_mask = torch.zeros((1, hp, wp, 1))
    slices = (slice(0, -WIN), slice(-WIN, -shift), slice(-shift, None))
    cnt = 0
    for hs in slices:
        for ws in slices:
            img_mask[:, hs, ws, :] = cnt
            cnt += 1
    mw = window_partition(img_mask).view(-1, WIN * WIN)
    m = mw.unsqueeze(1) - mw.unsqueeze(2)
    return m.masked_fill(m != 0, float(-100.0)).masked_fill(m == 0, float(0.0))


def shift_window_msa(x, hw, sd, p, num_heads, shift):
    """ShiftWindowMSA.forward, mmdet/models/backbones/swin.py:180-254."""
    b, l, c = x.shape
    h, w = hw
    x = x.view(b, h, w, c)
    pad_r = (WIN - w % WIN) % WIN  # :187-189, zero padding bottom/right
    pad_b = (WIN - h % WIN) % WIN
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
    hp, wp = x.shape[1], x.shape[2]
    if shift > 0:  # :193-220, kept even when hp == WIN or wp == WIN
        x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        mask = shift_attn_mask(hp, wp, shift)
    else:
        mask = None
    win = window_partition(x).view(-1, WIN * WIN, c)
    win = window_attention(win, sd, p + ".w_msa", num_heads, mask)
    x = window_reverse(win.view(-1, WIN, WIN, c), hp, wp)
    if shift > 0:
        x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
    x = x[:, :h, :w, :].contiguous()  # :248-249
    return x.view(b, h * w, c)


def mmdet_backbone(sd, img):
    """mmdet SwinTransformer.forward (swin.py:745-763); drop path / dropout are identity in eval."""
    # PatchEmbed (mmdet/models/utils/transformer.py:236-257) with corner AdaptivePadding (:109-131)
    h, w = img.shape[-2:]
    pad_h = (PATCH - h % PATCH) % PATCH  # = max((ceil(h/4)-1)*4 + 4 - h, 0)
    pad_w = (PATCH - w % PATCH) % PATCH
    if pad_h or pad_w:
        img = F.pad(img, [0, pad_w, 0, pad_h])
    x = F.conv2d(img, sd["backbone.patch_embed.projection.weight"], sd["backbone.patch_embed.projection.bias"], stride=PATCH)
    hw = (x.shape[2], x.shape[3])
    x = ln(x.flatten(2).transpose(1, 2), sd, "backbone.patch_embed.norm")
    outs = []
    c = EMBED
    for i, depth in enumerate(DEPTHS):
        for j in range(depth):  # SwinBlockSequence.forward :455-463, SwinBlock.forward :358-378
            p = f"backbone.stages.{i}.blocks.{j}"
            identity = x
            x = ln(x, sd, p + ".norm1")
            x = shift_window_msa(x, hw, sd, p + ".attn", HEADS[i], WIN // 2 if j % 2 else 0)  # shift on odd blocks (:441)
            x = x + identity
            identity = x
            y = ln(x, sd, p + ".norm2")
            # mmcv FFN.forward (mmcv/cnn/bricks/transformer.py:618-628): identity + fc2(GELU(fc1)); nn.GELU is exact (erf)
            x = identity + lin(F.gelu(lin(y, sd, p + ".ffn.layers.0.0")), sd, p + ".ffn.layers.1")
        out, out_hw = x, hw
        if i < len(DEPTHS) - 1:
            x, hw = patch_merging_unfold(x, hw, sd, f"backbone.stages.{i}.downsample")
        o = ln(out, sd, f"backbone.norm{i}")  # :755-760
        outs.append(o.view(-1, out_hw[0], out_hw[1], c).permute(0, 3, 1, 2).contiguous())
        c *= 2
    return outs


def patch_merging_unfold(x, hw, sd, p):
    """mmdet PatchMerging.forward, mmdet/models/utils/transformer.py:340-385: corner padding to
    even size (AdaptivePadding, :121-131), nn.Unfold(kernel 2, stride 2) (:325-329), norm, reduction."""
    b, l, c = x.shape
    h, w = hw
    x = x.view(b, h, w, c).permute([0, 3, 1, 2])
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        x = F.pad(x, [0, pad_w, 0, pad_h])
        h, w = x.shape[-2:]
    x = F.unfold(x, kernel_size=2, stride=2)  # (B, C*2*2, L), channel index c*4 + kh*2 + kw
    out_hw = ((h - 2) // 2 + 1, (w - 2) // 2 + 1)
    x = x.transpose(1, 2)
    x = ln(x, sd, p + ".norm")
    return lin(x, sd, p + ".reduction", bias=False), out_hw


def official_backbone(sd, img):
    """Official SwinTransformer.forward (swin_transformer.py:600-625)."""
    # PatchEmbed.forward :429-445 (pads right/bottom to a multiple of the patch)
    h, w = img.shape[-2:]
    if w % PATCH:
        img = F.pad(img, (0, PATCH - w % PATCH))
    if h % PATCH:
        img = F.pad(img, (0, 0, 0, PATCH - h % PATCH))
    x = F.conv2d(img, sd["backbone.patch_embed.proj.weight"], sd["backbone.patch_embed.proj.bias"], stride=PATCH)
    wh, ww = x.shape[2], x.shape[3]
    x = ln(x.flatten(2).transpose(1, 2), sd, "backbone.patch_embed.norm").transpose(1, 2).view(-1, EMBED, wh, ww)
    x = x.flatten(2).transpose(1, 2)  # ape False (:609-610)
    outs = []
    c = EMBED
    for i, depth in enumerate(DEPTHS):
        H, W = wh, ww
        shift = WIN // 2
        # BasicLayer.forward :371-389: mask built once per stage for the padded size
        hp = int(np.ceil(H / WIN)) * WIN
        wp = int(np.ceil(W / WIN)) * WIN
        attn_mask = shift_attn_mask(hp, wp, shift)
        for j in range(depth):
            p = f"backbone.layers.{i}.blocks.{j}"
            s = 0 if j % 2 == 0 else shift  # :346
            # SwinTransformerBlock.forward :198-255
            b, l, _ = x.shape
            shortcut = x
            y = ln(x, sd, p + ".norm1").view(b, H, W, c)
            pad_r = (WIN - W % WIN) % WIN
            pad_b = (WIN - H % WIN) % WIN
            y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
            _, Hp, Wp, _ = y.shape
            if s > 0:
                y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
                m = attn_mask
            else:
                m = None
            win = window_partition(y).view(-1, WIN * WIN, c)
            win = window_attention(win, sd, p + ".attn", HEADS[i], m)
            y = window_reverse(win.view(-1, WIN, WIN, c), Hp, Wp)
            if s > 0:
                y = torch.roll(y, shifts=(s, s), dims=(1, 2))
            if pad_r > 0 or pad_b > 0:
                y = y[:, :H, :W, :].contiguous()
            x = shortcut + y.view(b, H * W, c)
            x = x + lin(F.gelu(lin(ln(x, sd, p + ".norm2"), sd, p + ".mlp.fc1")), sd, p + ".mlp.fc2")  # Mlp :32-38
        x_out = x
        if i < len(DEPTHS) - 1:
            # PatchMerging.forward :271-298
            b, l, _ = x.shape
            y = x.view(b, H, W, c)
            if (H % 2 == 1) or (W % 2 == 1):
                y = F.pad(y, (0, 0, 0, W % 2, 0, H % 2))
            x0 = y[:, 0::2, 0::2, :]
            x1 = y[:, 1::2, 0::2, :]
            x2 = y[:, 0::2, 1::2, :]
            x3 = y[:, 1::2, 1::2, :]
            y = torch.cat([x0, x1, x2, x3], -1).view(b, -1, 4 * c)
            x = lin(ln(y, sd, f"backbone.layers.{i}.downsample.norm"), sd, f"backbone.layers.{i}.downsample.reduction", bias=False)
            wh, ww = (H + 1) // 2, (W + 1) // 2  # :399
        o = ln(x_out, sd, f"backbone.norm{i}")  # :618-623
        outs.append(o.view(-1, H, W, c).permute(0, 3, 1, 2).contiguous())
        c *= 2
    return outs


# ============================================================================
# Neck, RPN, RoI heads (mmdetection 2.25)
# ============================================================================

def fpn(sd, inputs):
    """mmdet/models/necks/fpn.py:152-204 with add_extra_convs=False, upsample nearest by size."""
    lat = [F.conv2d(inputs[i], sd[f"neck.lateral_convs.{i}.conv.weight"], sd[f"neck.lateral_convs.{i}.conv.bias"])
           for i in range(len(inputs))]
    for i in range(len(lat) - 1, 0, -1):  # :164-174
        lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="nearest")
    outs = [F.conv2d(lat[i], sd[f"neck.fpn_convs.{i}.conv.weight"], sd[f"neck.fpn_convs.{i}.conv.bias"], padding=1)
            for i in range(len(lat))]
    for _ in range(NUM_OUTS - len(lat)):
        outs.append(F.max_pool2d(outs[-1], 1, stride=2))  # :185-187
    return outs


def base_anchors(base_size):
    """AnchorGenerator.gen_single_level_base_anchors, mmdet/core/anchor/anchor_generator.py:151-194:
    center_offset 0 (so the center is 0, not (size-1)/2), scale_major, NO rounding
    (only the legacy generator rounds, :703)."""
    ratios = torch.Tensor(ANCHOR_RATIOS)
    scales = torch.Tensor(ANCHOR_SCALES)
    w = h = base_size
    x_center, y_center = 0.0 * w, 0.0 * h
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w * w_ratios[:, None] * scales[None, :]).view(-1)
    hs = (h * h_ratios[:, None] * scales[None, :]).view(-1)
    return torch.stack([x_center - 0.5 * ws, y_center - 0.5 * hs, x_center + 0.5 * ws, y_center + 0.5 * hs], dim=-1)


def grid_priors(featmap_size, stride):
    """single_level_grid_priors, anchor_generator.py:241-281 (base_size = stride)."""
    base = base_anchors(stride)
    feat_h, feat_w = featmap_size
    shift_x = torch.arange(0, feat_w).to(torch.float32) * stride
    shift_y = torch.arange(0, feat_h).to(torch.float32) * stride
    xx = shift_x.repeat(shift_y.shape[0])  # _meshgrid :209-214
    yy = shift_y.view(-1, 1).repeat(1, shift_x.shape[0]).view(-1)
    shifts = torch.stack([xx, yy, xx, yy], dim=-1)
    return (base[None, :, :] + shifts[:, None, :]).view(-1, 4)  # (H*W*A, 4), anchor fastest


def delta2bbox(rois, deltas, stds, max_shape, wh_ratio_clip=16 / 1000):
    """mmdet/core/bbox/coder/delta_xywh_bbox_coder.py:164-260 (means 0, clip_border True,
    add_ctr_clamp False): dw/dh clamped to +-|log(16/1000)| on both sides (:244-249), boxes
    clamped to [0, W] x [0, H] of img_shape (:256-258)."""
    num_bboxes, num_classes = deltas.size(0), deltas.size(1) // 4
    if num_bboxes == 0:
        return deltas
    deltas = deltas.reshape(-1, 4)
    means = deltas.new_tensor((0.0, 0.0, 0.0, 0.0)).view(1, -1)
    stds = deltas.new_tensor(stds).view(1, -1)
    d = deltas * stds + means
    dxy, dwh = d[:, :2], d[:, 2:]
    rois_ = rois.repeat(1, num_classes).reshape(-1, 4)
    pxy = (rois_[:, :2] + rois_[:, 2:]) * 0.5
    pwh = rois_[:, 2:] - rois_[:, :2]
    dxy_wh = pwh * dxy
    max_ratio = np.abs(np.log(wh_ratio_clip))
    dwh = dwh.clamp(min=-max_ratio, max=max_ratio)
    gxy = pxy + dxy_wh
    gwh = pwh * dwh.exp()
    bboxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=-1)
    bboxes[..., 0::2].clamp_(min=0, max=max_shape[1])
    bboxes[..., 1::2].clamp_(min=0, max=max_shape[0])
    return bboxes.reshape(num_bboxes, -1)


def nms_cpu(boxes, scores, iou_threshold):
    """mmcv/ops/csrc/pytorch/cpu/nms.cpp:5-53 (offset 0), vectorised over the inner loop.
    Same greedy algorithm and float32 arithmetic as torchvision.ops.nms, but it orders by
    scores.sort(0, descending=True) (unstable) exactly as mmcv does (:16), so equal scores
    are ordered as mmcv orders them."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.long)
    x1, y1, x2, y2 = (boxes[:, i].contiguous() for i in range(4))
    areas = (x2 - x1) * (y2 - y1)
    order = scores.sort(0, descending=True)[1]
    n = boxes.shape[0]
    select = torch.ones(n, dtype=torch.bool)
    for _i in range(n):
        if not select[_i]:
            continue
        i = order[_i]
        js = order[_i + 1:]
        xx1 = torch.maximum(x1[i], x1[js])
        yy1 = torch.maximum(y1[i], y1[js])
        xx2 = torch.minimum(x2[i], x2[js])
        yy2 = torch.minimum(y2[i], y2[js])
        inter = (xx2 - xx1).clamp(min=0.0) * (yy2 - yy1).clamp(min=0.0)
        ovr = inter / (areas[i] + areas[js] - inter)
        select[_i + 1:] &= ~(ovr > iou_threshold)  # :50
    return order[select]


def batched_nms(boxes, scores, idxs, iou_threshold, split_thr=10000):
    """mmcv/ops/nms.py:264-381 (class_agnostic False, plain nms): the coordinate-offset trick
    (:339-342) below split_thr, per-id NMS then a score sort above it (:359-378)."""
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    boxes_for_nms = boxes + offsets[:, None]
    if boxes_for_nms.shape[0] < split_thr:
        keep = nms_cpu(boxes_for_nms, scores, iou_threshold)
        boxes = boxes[keep]
        scores = scores[keep]
    else:
        total_mask = scores.new_zeros(scores.size(), dtype=torch.bool)
        for cid in torch.unique(idxs):
            mask = (idxs == cid).nonzero(as_tuple=False).view(-1)
            k = nms_cpu(boxes_for_nms[mask], scores[mask], iou_threshold)
            total_mask[mask[k]] = True
        keep = total_mask.nonzero(as_tuple=False).view(-1)
        scores, inds = scores[keep].sort(descending=True)
        keep = keep[inds]
        boxes = boxes[keep]
    return torch.cat([boxes, scores[:, None]], -1), keep


def rpn(sd, feats, img_shape, stats, rule="2.25"):
    """RPNHead.forward_single (mmdet/models/dense_heads/rpn_head.py:62-68), get_bboxes
    (base_dense_head.py:32-107), _get_bboxes_single (rpn_head.py:103-187) and
    _bbox_post_process (:189-235).

    rule="2.11" swaps in the size filter of the official repo's mmdet 2.11 RPNHead._get_bboxes
    (its mmdet/models/dense_heads/rpn_head.py:221-231): applied only when min_bbox_size > 0 and
    with '>=', so with min_bbox_size 0 it keeps the zero-width/height proposals that 2.25 drops.
    Used only to report whether the goldens would differ under the official fork."""
    scores_l, deltas_l, anchors_l, ids_l = [], [], [], []
    for lvl, f in enumerate(feats):
        x = F.relu(F.conv2d(f, sd["rpn_head.rpn_conv.weight"], sd["rpn_head.rpn_conv.bias"], padding=1))
        cls = F.conv2d(x, sd["rpn_head.rpn_cls.weight"], sd["rpn_head.rpn_cls.bias"])[0]
        reg = F.conv2d(x, sd["rpn_head.rpn_reg.weight"], sd["rpn_head.rpn_reg.bias"])[0]
        anchors = grid_priors(f.shape[-2:], STRIDES[lvl])
        scores = cls.permute(1, 2, 0).reshape(-1).sigmoid()  # :154-157, use_sigmoid_cls
        reg = reg.permute(1, 2, 0).reshape(-1, 4)  # :165
        nms_pre = RPN_CFG["nms_pre"]
        if 0 < nms_pre < scores.shape[0]:  # :168-175
            ranked, rank_inds = scores.sort(descending=True)
            gap = float(ranked[nms_pre - 1] - ranked[nms_pre])
            stats["rpn_topk_cut_gap"] = min(gap, stats.get("rpn_topk_cut_gap", gap))
            topk = rank_inds[:nms_pre]
            scores = ranked[:nms_pre]
            reg = reg[topk, :]
            anchors = anchors[topk, :]
        scores_l.append(scores)
        deltas_l.append(reg)
        anchors_l.append(anchors)
        ids_l.append(scores.new_full((scores.size(0),), lvl, dtype=torch.long))
    scores = torch.cat(scores_l)
    anchors = torch.cat(anchors_l)
    deltas = torch.cat(deltas_l)
    proposals = delta2bbox(anchors, deltas, RPN_STDS, img_shape)
    ids = torch.cat(ids_l)
    stats["rpn_candidates"] = int(scores.numel())
    stats["rpn_removed_by_min_bbox_size"] = 0
    if rule == "2.11":
        if RPN_CFG["min_bbox_size"] > 0:
            raise NotImplementedError
    elif RPN_CFG["min_bbox_size"] >= 0:  # :221-228: strict '>' drops zero-width/height (border-clamped) boxes
        w = proposals[:, 2] - proposals[:, 0]
        h = proposals[:, 3] - proposals[:, 1]
        valid = (w > RPN_CFG["min_bbox_size"]) & (h > RPN_CFG["min_bbox_size"])
        stats["rpn_removed_by_min_bbox_size"] = int((~valid).sum())
        if not valid.all():
            proposals, scores, ids = proposals[valid], scores[valid], ids[valid]
    if proposals.numel() == 0:
        return proposals.new_zeros(0, 5)
    dets, _ = batched_nms(proposals, scores, ids, RPN_CFG["iou_threshold"])
    return dets[:RPN_CFG["max_per_img"]]


def bbox2roi(boxes):
    """mmdet/core/bbox/transforms.py:75-94 for one image."""
    return torch.cat([boxes.new_zeros((boxes.size(0), 1)), boxes[:, :4]], dim=-1)


def roi_extract(feats, rois, out_size):
    """SingleRoIExtractor.forward (mmdet/models/roi_heads/roi_extractors/single_level_roi_extractor.py:58-115)
    over the first 4 FPN levels, map_roi_levels (:36-55) with finest_scale 56.
    mmcv RoIAlign (aligned=True default, pool_mode avg, sampling_ratio 0;
    mmcv/ops/csrc/pytorch/cpu/roi_align.cpp:114-190) is the same Caffe2/detectron2 algorithm as
    torchvision.ops.roi_align(aligned=True): the -0.5 offset (:129), adaptive grid
    ceil(roi_size/out) (:148-151), the same bilinear weights and border rules, mean over the
    grid; so torchvision's op is used."""
    num_levels = 4
    roi_feats = feats[0].new_zeros(rois.size(0), FPN_C, out_size, out_size)
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    lvls = torch.floor(torch.log2(scale / FINEST_SCALE + 1e-6)).clamp(min=0, max=num_levels - 1).long()
    for i in range(num_levels):
        inds = (lvls == i).nonzero(as_tuple=False).squeeze(1)
        if inds.numel() > 0:
            roi_feats[inds] = tv_roi_align(feats[i], rois[inds], (out_size, out_size), spatial_scale=1 / STRIDES[i],
                                           sampling_ratio=0, aligned=True)
    return roi_feats, lvls


def multiclass_nms(multi_bboxes, multi_scores, score_thr, iou_threshold, max_num):
    """mmdet/core/post_processing/bbox_nms.py:8-95: background is the last column (:36),
    scores strictly above score_thr (:55), class-offset batched NMS (:86), first max_num."""
    num_classes = multi_scores.size(1) - 1
    bboxes = multi_bboxes.view(multi_scores.size(0), -1, 4)
    scores = multi_scores[:, :-1]
    labels = torch.arange(num_classes, dtype=torch.long).view(1, -1).expand_as(scores)
    bboxes, scores, labels = bboxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
    valid = scores > score_thr
    inds = valid.nonzero(as_tuple=False).squeeze(1)
    bboxes, scores, labels = bboxes[inds], scores[inds], labels[inds]
    if bboxes.numel() == 0:
        return torch.cat([bboxes, scores[:, None]], -1), labels, 0
    dets, keep = batched_nms(bboxes, scores, labels, iou_threshold)
    if max_num > 0:
        dets, keep = dets[:max_num], keep[:max_num]
    return dets, labels[keep], int(inds.numel())


def bbox_head(sd, roi_feats):
    """Shared2FCBBoxHead: ConvFCBBoxHead.forward (mmdet/models/roi_heads/bbox_heads/convfc_bbox_head.py:159-197)."""
    p = "roi_head.bbox_head."
    x = roi_feats.flatten(1)
    x = F.relu(F.linear(x, sd[p + "shared_fcs.0.weight"], sd[p + "shared_fcs.0.bias"]))
    x = F.relu(F.linear(x, sd[p + "shared_fcs.1.weight"], sd[p + "shared_fcs.1.bias"]))
    return (F.linear(x, sd[p + "fc_cls.weight"], sd[p + "fc_cls.bias"]),
            F.linear(x, sd[p + "fc_reg.weight"], sd[p + "fc_reg.bias"]))


def mask_head(sd, x):
    """FCNMaskHead.forward (mmdet/models/roi_heads/mask_heads/fcn_mask_head.py:128-136):
    4 x ConvModule(conv3x3 + ReLU), deconv (ConvTranspose2d 2, stride 2) + ReLU, conv_logits 1x1."""
    p = "roi_head.mask_head."
    for i in range(4):
        x = F.relu(F.conv2d(x, sd[p + f"convs.{i}.conv.weight"], sd[p + f"convs.{i}.conv.bias"], padding=1))
    x = F.relu(F.conv_transpose2d(x, sd[p + "upsample.weight"], sd[p + "upsample.bias"], stride=2))
    return F.conv2d(x, sd[p + "conv_logits.weight"], sd[p + "conv_logits.bias"])


def do_paste_mask(masks, boxes, img_h, img_w):
    """_do_paste_mask, fcn_mask_head.py:344-410, skip_empty=True (the CPU path)."""
    x0_int, y0_int = torch.clamp(boxes.min(dim=0).values.floor()[:2] - 1, min=0).to(dtype=torch.int32)
    x1_int = torch.clamp(boxes[:, 2].max().ceil() + 1, max=img_w).to(dtype=torch.int32)
    y1_int = torch.clamp(boxes[:, 3].max().ceil() + 1, max=img_h).to(dtype=torch.int32)
    x0, y0, x1, y1 = torch.split(boxes, 1, dim=1)
    n = masks.shape[0]
    img_y = torch.arange(y0_int, y1_int).to(torch.float32) + 0.5
    img_x = torch.arange(x0_int, x1_int).to(torch.float32) + 0.5
    img_y = (img_y - y0) / (y1 - y0) * 2 - 1
    img_x = (img_x - x0) / (x1 - x0) * 2 - 1
    if torch.isinf(img_x).any():
        img_x[torch.where(torch.isinf(img_x))] = 0
    if torch.isinf(img_y).any():
        img_y[torch.where(torch.isinf(img_y))] = 0
    gx = img_x[:, None, :].expand(n, img_y.size(1), img_x.size(1))
    gy = img_y[:, :, None].expand(n, img_y.size(1), img_x.size(1))
    grid = torch.stack([gx, gy], dim=3)
    img_masks = F.grid_sample(masks.to(dtype=torch.float32), grid, align_corners=False)  # bilinear, zeros padding
    return img_masks[:, 0], (slice(y0_int, y1_int), slice(x0_int, x1_int))


def get_seg_masks(mask_pred, det_bboxes, det_labels, ori_shape, scale_factor, stats=None):
    """FCNMaskHead.get_seg_masks, fcn_mask_head.py:179-310, rescale=True on CPU: sigmoid, boxes
    divided by scale_factor (:252), pasted one at a time (num_chunks = N, :265), binarised with
    '>= mask_thr_binary' (:301)."""
    mask_pred = mask_pred.sigmoid()
    bboxes = det_bboxes[:, :4]
    labels = det_labels
    img_h, img_w = ori_shape[:2]
    bboxes = bboxes / scale_factor.to(bboxes)
    n = len(mask_pred)
    chunks = torch.chunk(torch.arange(n), n)
    im_mask = torch.zeros(n, img_h, img_w, dtype=torch.bool)
    mask_pred = mask_pred[range(n), labels][:, None]
    for inds in chunks:
        chunk, spatial = do_paste_mask(mask_pred[inds], bboxes[inds], img_h, img_w)
        im_mask[(inds,) + spatial] = (chunk >= RCNN_CFG["mask_thr_binary"]).to(dtype=torch.bool)
        if stats is not None:
            near = int(((chunk - RCNN_CFG["mask_thr_binary"]).abs() < 1e-4).sum())
            stats["mask_pixels_within_1e-4_of_thr"] = stats.get("mask_pixels_within_1e-4_of_thr", 0) + near
    return im_mask


# ============================================================================
# Test pipeline
# ============================================================================

def load_and_preprocess(path):
    """LoadImageFromFile (mmdet/datasets/pipelines/loading.py:68-77: mmcv.imfrombytes, flag
    'color' = cv2.imdecode IMREAD_COLOR, BGR uint8; mmcv/image/io.py:259), then the
    MultiScaleFlipAug transforms: Resize keep_ratio (transforms.py:215-246), RandomFlip (no-op),
    Normalize (transforms.py:707), Pad size_divisor (transforms.py:622-638)."""
    img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_COLOR)
    ori_shape = img.shape
    h, w = img.shape[:2]
    # mmcv.imrescale -> rescale_size (mmcv/image/geometric.py:196-230, scale factor at :219)
    # -> _scale_size (:16-29: int(x * s + 0.5)) -> imresize cv2.resize INTER_LINEAR (:100)
    s = min(max(IMG_SCALE) / max(h, w), min(IMG_SCALE) / min(h, w))
    new_w, new_h = int(w * float(s) + 0.5), int(h * float(s) + 0.5)
    img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    # scale_factor from the actual sizes (transforms.py:227-241)
    w_scale, h_scale = new_w / w, new_h / h
    scale_factor = np.array([w_scale, h_scale, w_scale, h_scale], dtype=np.float32)
    img_shape = img.shape
    # mmcv.imnormalize_ (mmcv/image/photometric.py:25-45): BGR->RGB, cv2.subtract / cv2.multiply
    # with float64 mean and 1/std scalars; cv2 computes in double and rounds once to float32,
    # i.e. float32((x - mean) * (1 / std)) with mean/std the float32 config values.
    mean = np.array(MEAN, dtype=np.float32)
    std = np.array(STD, dtype=np.float32)
    x = img.copy().astype(np.float32)
    m64 = np.float64(mean.reshape(1, -1))
    stdinv = 1 / np.float64(std.reshape(1, -1))
    cv2.cvtColor(x, cv2.COLOR_BGR2RGB, x)
    cv2.subtract(x, m64, x)
    cv2.multiply(x, stdinv, x)
    # mmcv.impad_to_multiple (mmcv/image/geometric.py:535-548): zeros bottom/right, after Normalize
    ph = int(np.ceil(x.shape[0] / SIZE_DIVISOR)) * SIZE_DIVISOR
    pw = int(np.ceil(x.shape[1] / SIZE_DIVISOR)) * SIZE_DIVISOR
    x = cv2.copyMakeBorder(x, 0, ph - x.shape[0], 0, pw - x.shape[1], cv2.BORDER_CONSTANT, value=0)
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]  # ImageToTensor + collate (one image)
    meta = dict(ori_shape=ori_shape, img_shape=img_shape, pad_shape=x.shape, scale_factor=scale_factor)
    return t, meta


def detect(sd, img, meta, rpn_rule="2.25"):
    """TwoStageDetector.simple_test (mmdet/models/detectors/two_stage.py:173-184) with rescale=True:
    StandardRoIHead.simple_test (standard_roi_head.py:223-267) -> simple_test_bboxes
    (test_mixins.py:51-136) and simple_test_mask (test_mixins.py:224-279).

    The official fork's mmdet 2.11 differs here in two places: the RPN size rule (see rpn()), and
    its batched simple_test_mask (its test_mixins.py:277, 303) drops detections whose y2 is 0
    ("supplement_mask = det_bbox[..., -1] != 0" on boxes already cut to 4 columns) from the
    masks. Neither is reproduced in the goldens, which follow 2.25."""
    stats = {}
    stages = mmdet_backbone(sd, img)
    feats = fpn(sd, stages)
    proposals = rpn(sd, feats, meta["img_shape"], stats, rpn_rule)
    # simple_test_bboxes
    rois = bbox2roi(proposals)
    roi_feats, _ = roi_extract(feats, rois, 7)
    cls_score, bbox_pred = bbox_head(sd, roi_feats)
    # BBoxHead.get_bboxes (bbox_head.py:316-376): softmax, class-specific decode clamped to img_shape,
    # divided by scale_factor BEFORE NMS (:366-369), multiclass_nms in original-image coordinates.
    scores = F.softmax(cls_score, dim=-1)
    bboxes = delta2bbox(rois[..., 1:], bbox_pred, RCNN_STDS, meta["img_shape"])
    sf = bboxes.new_tensor(meta["scale_factor"])
    bboxes = (bboxes.view(bboxes.size(0), -1, 4) / sf).view(bboxes.size()[0], -1)
    det_bboxes, det_labels, n_valid = multiclass_nms(bboxes, scores, RCNN_CFG["score_thr"], RCNN_CFG["iou_threshold"],
                                                     RCNN_CFG["max_per_img"])
    stats["rcnn_above_thr"] = n_valid
    stats["rcnn_scores"] = scores[:, :-1]
    # simple_test_mask: mask RoIs are det_bboxes * scale_factor (test_mixins.py:250-260)
    if det_bboxes.shape[0] == 0:
        masks = torch.zeros((0,) + tuple(meta["ori_shape"][:2]), dtype=torch.bool)
    else:
        sf_t = torch.from_numpy(meta["scale_factor"])
        _bboxes = det_bboxes[:, :4] * sf_t
        mask_feats, _ = roi_extract(feats, bbox2roi(_bboxes), 14)
        mask_pred = mask_head(sd, mask_feats)
        masks = get_seg_masks(mask_pred, _bboxes, det_labels, meta["ori_shape"], sf_t, stats)
    return dict(stages=stages, fpn=feats, proposals=proposals, det_bboxes=det_bboxes, det_labels=det_labels,
                masks=masks, stats=stats)


# ============================================================================
# Files
# ============================================================================

def images():
    os.makedirs(os.path.join(OUT, "images"), exist_ok=True)
    photo_like(150, 230, 11).save(os.path.join(OUT, "images", "wide.png"))
    # photo_like needs h >= 60 (its disc radii are randint(20, h // 3)): crop a 40-row band.
    strip = np.asarray(photo_like(120, 300, 12))[40:80]
    Image.fromarray(np.ascontiguousarray(strip)).save(os.path.join(OUT, "images", "strip.png"))
    return {"wide": "wide.png", "strip": "strip.png"}


LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
LEGACY_PROTOCOL = 1001
LEGACY_KEY_BASE = 140000000000000  # fixed-width decimal stand-ins for storage addresses


def save_legacy(obj, path):
    """torch.save(obj, f, _use_new_zipfile_serialization=False), as publish_model.py
    (tools/model_converters/publish_model.py:24-25) calls it, but deterministic.

    torch's _legacy_save (torch/serialization.py in 1.13) writes: pickles of the magic number,
    the protocol version and sys_info; the object pickled with persistent ids
    ('storage', <torch.XStorage>, key, location, numel, None); the sorted key list; then each
    storage as int64 numel + raw bytes, in key order. Its keys are str(storage._cdata), i.e.
    memory addresses, which change from run to run (and so would the data order). This writer
    produces the same stream with keys numbered in first-use order (same digit count, so
    sorted order == first-use order); verify_legacy() checks it against torch's own writer."""
    storages = collections.OrderedDict()
    keys = {}

    class Pickler(pickle.Pickler):
        def persistent_id(self, o):
            if isinstance(o, torch.storage.TypedStorage):
                cdata = o._storage._cdata
                if cdata not in keys:
                    keys[cdata] = str(LEGACY_KEY_BASE + len(keys))
                    storages[keys[cdata]] = o
                return ("storage", getattr(torch, o.pickle_storage_type()), keys[cdata], "cpu", o.size(), None)
            return None

    buf = io.BytesIO()
    sys_info = dict(protocol_version=LEGACY_PROTOCOL, little_endian=True, type_sizes=dict(short=2, int=4, long=4))
    pickle.dump(LEGACY_MAGIC, buf, protocol=2)
    pickle.dump(LEGACY_PROTOCOL, buf, protocol=2)
    pickle.dump(sys_info, buf, protocol=2)
    Pickler(buf, protocol=2).dump(obj)
    order = sorted(storages)
    assert order == list(storages)
    pickle.dump(order, buf, protocol=2)
    for k in order:
        st = storages[k]
        a = torch.tensor([], dtype=st.dtype).set_(st).numpy() if st.size() else np.zeros(0)
        buf.write(struct.pack("<q", st.size()))
        buf.write(np.ascontiguousarray(a).tobytes())
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def _pickle_ops(data):
    """Opcode names of the consecutive pickles at the start of a legacy file (5 of them) and the
    offset where the raw storages start."""
    f = io.BytesIO(data)
    seqs = []
    for _ in range(5):
        start = f.tell()
        ops = [op.name for op, arg, pos in pickletools.genops(f)]
        seqs.append(ops)
        assert f.tell() > start
    return seqs, f.tell()


def verify_legacy(obj, path):
    """The deterministic writer's stream has the same pickle structure and storage bytes as torch's."""
    ref = io.BytesIO()
    torch.save(obj, ref, _use_new_zipfile_serialization=False)
    mine = open(path, "rb").read()
    ref_ops, ref_off = _pickle_ops(ref.getvalue())
    my_ops, my_off = _pickle_ops(mine)
    assert ref_ops == my_ops, "legacy pickle structure differs from torch's"
    # same total storage payload (order differs: torch sorts addresses)
    assert len(ref.getvalue()) - ref_off == len(mine) - my_off
    loaded = torch.load(path, map_location="cpu")
    assert loaded["meta"] == obj["meta"] and list(loaded["state_dict"]) == list(obj["state_dict"])
    assert getattr(loaded["state_dict"], "_metadata", None) == getattr(obj["state_dict"], "_metadata", None)
    for k, v in obj["state_dict"].items():
        assert loaded["state_dict"][k].dtype == v.dtype and torch.equal(loaded["state_dict"][k], v), k


def make_optimizer_state(sd):
    """An AdamW state over a few tensors (published official checkpoints keep 'optimizer')."""
    names = ["backbone.patch_embed.proj.weight", "backbone.patch_embed.proj.bias",
             "neck.lateral_convs.0.conv.weight", "roi_head.bbox_head.fc_cls.weight"]
    params = [torch.nn.Parameter(sd[n].clone()) for n in names]
    opt = torch.optim.AdamW(params, lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)
    g = torch.Generator().manual_seed(7)
    for p in params:
        p.grad = (torch.randn(p.shape, generator=g) * 1e-3).half().float()
    opt.step()
    return opt.state_dict()


def with_mmcv_metadata(sd):
    """The state dict as mmcv's save_checkpoint stores it (mmcv/runner/checkpoint.py:738-777): a
    new OrderedDict carrying `_metadata` (weights_to_cpu keeps it, :652-667; get_state_dict fills
    one {'version': module._version} entry per module in DFS order, :721-725). Here the entries
    are the key prefixes (parameterless modules such as dropouts are left out); all versions are 1.
    mmcv < 1.3.13 (e.g. the official fork's era) dropped _metadata, so the official file has none."""
    out = collections.OrderedDict(sd)
    meta = collections.OrderedDict()
    meta[""] = dict(version=1)
    for k in sd:
        parts = k.split(".")[:-1]
        for i in range(1, len(parts) + 1):
            meta.setdefault(".".join(parts[:i]), dict(version=1))
    out._metadata = meta
    return out


def f32list(t):
    return [float(v) for v in t.reshape(-1).tolist()]


def main():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)

    # ---- inputs, weights and both layouts ----
    imgs = images()
    inputs = {c: load_and_preprocess(os.path.join(OUT, "images", f)) for c, f in imgs.items()}
    sd = make_weights()
    calibrate_classifier(sd, list(inputs.values()))
    ri_m, ri_o = rel_index_mmdet(), rel_index_official()
    assert ri_m.dtype == ri_o.dtype == torch.int64 and torch.equal(ri_m, ri_o), "relative_position_index differs"
    assert int(ri_m.min()) == 0 and int(ri_m.max()) == (2 * WIN - 1) ** 2 - 1
    sd_off = mmdet_to_official(sd)
    # the Unfold index formula used in the report
    c = EMBED
    w_m = sd["backbone.stages.0.downsample.reduction.weight"]
    w_o = sd_off["backbone.layers.0.downsample.reduction.weight"]
    for kh in range(2):
        for kw in range(2):
            for ch in range(c):
                assert torch.equal(w_m[:, 4 * ch + 2 * kh + kw], w_o[:, (kh + 2 * kw) * c + ch])

    meta_m = {"mmdet_version": "2.25.0", "CLASSES": CLASSES, "epoch": 12}
    obj_m = {"meta": meta_m, "state_dict": with_mmcv_metadata(sd)}
    path_m = os.path.join(OUT, "mask_rcnn_swin_tiny_mmdet.pth")
    save_legacy(obj_m, path_m)
    verify_legacy(obj_m, path_m)
    obj_o = {"meta": {"mmdet_version": "2.11.0", "CLASSES": CLASSES}, "state_dict": sd_off,
             "optimizer": make_optimizer_state(sd_off)}
    path_o = os.path.join(OUT, "mask_rcnn_swin_tiny_official.pth")
    torch.save(obj_o, path_o)
    lo = torch.load(path_o, map_location="cpu")
    for k, v in sd_off.items():
        assert torch.equal(lo["state_dict"][k], v), k

    # ---- cases ----
    gold = {"torch": torch.__version__, "cv2": cv2.__version__, "mmdet_reference": MMDET_REFERENCE,
            "note": ("detections are in multiclass_nms output order (score-descending); mmdet's "
                     "bbox2result (mmdet/core/bbox/transforms.py:116) regroups them per class, keeping "
                     "this order within a class. proposals are in resized-image coordinates."),
            "cases": {}, "cases_2.11": {}}
    maps = {}
    for cname, fname in imgs.items():
        img, meta = inputs[cname]
        with torch.no_grad():
            r = detect(sd, img, meta)
            off_stages = official_backbone(sd_off, img)
            r211 = detect(sd, img, meta, rpn_rule="2.11")
        for i, (a, b) in enumerate(zip(r["stages"], off_stages)):
            d = float((a - b).abs().max())
            assert a.shape == b.shape and d <= 1e-5, f"{cname} stage{i}: official vs mmdet layout differ by {d}"
        maps[f"{cname}.input"] = img.numpy()
        for i, s in enumerate(r["stages"]):
            maps[f"{cname}.stage{i}"] = s.numpy()
        for i, f in enumerate(r["fpn"]):
            maps[f"{cname}.fpn{i}"] = f.numpy()
        det, labels, masks = r["det_bboxes"], r["det_labels"], r["masks"].numpy()
        props = r["proposals"]
        areas = masks.reshape(len(masks), -1).sum(1) if len(masks) else np.zeros(0)
        sc = det[:, 4].numpy()
        gaps = np.diff(np.sort(sc)) if len(sc) > 1 else np.array([1.0])
        print(f"{cname}: orig {tuple(meta['ori_shape'][:2])} -> resized {tuple(meta['img_shape'][:2])} "
              f"-> padded {tuple(meta['pad_shape'][:2])}, scale_factor {meta['scale_factor'].tolist()}")
        print(f"  max|stage| {[round(float(s.abs().max()), 3) for s in r['stages']]}, "
              f"max|fpn| {[round(float(f.abs().max()), 3) for f in r['fpn']]}, "
              f"max stage diff official-vs-mmdet "
              f"{max(float((a - b).abs().max()) for a, b in zip(r['stages'], off_stages)):.2e}")
        print(f"  rpn: {r['stats']['rpn_candidates']} candidates, {r['stats']['rpn_removed_by_min_bbox_size']} "
              f"removed by min_bbox_size, {len(props)} proposals; rcnn: {r['stats']['rcnn_above_thr']} above "
              f"score_thr, {len(det)} detections, {len(set(labels.tolist()))} classes, scores "
              f"{sc.min() if len(sc) else 0:.3f}..{sc.max() if len(sc) else 0:.3f}, min gap {gaps.min():.2e}")
        same = (len(r211["det_bboxes"]) == len(det) and torch.equal(r211["det_bboxes"], det)
                and torch.equal(r211["det_labels"], labels) and torch.equal(r211["masks"], r["masks"]))
        print(f"  with the mmdet 2.11 RPN size rule: {len(r211['proposals'])} proposals, "
              f"{len(r211['det_bboxes'])} detections, final results {'identical' if same else 'DIFFERENT'}")
        allsc = r["stats"]["rcnn_scores"]
        print(f"  closest (RoI, class) score to score_thr: {float((allsc - RCNN_CFG['score_thr']).abs().min()):.2e}; "
              f"smallest score gap at an RPN nms_pre cut: {r['stats'].get('rpn_topk_cut_gap', float('nan')):.2e}; "
              f"mask pixels within 1e-4 of mask_thr_binary: {r['stats'].get('mask_pixels_within_1e-4_of_thr', 0)}")
        print(f"  mask areas: min {int(areas.min()) if len(areas) else 0}, max {int(areas.max()) if len(areas) else 0}, "
              f"empty {int((areas == 0).sum())}, image size {masks.shape[1] * masks.shape[2] if len(masks) else 0}")
        gold["cases"][cname] = dict(
            image=fname, orig=list(meta["ori_shape"][:2]), resized=list(meta["img_shape"][:2]),
            padded=list(meta["pad_shape"][:2]), scale_factor=[float(v) for v in meta["scale_factor"]],
            proposals=f32list(props[:, :4]), proposal_scores=f32list(props[:, 4]),
            boxes=f32list(det[:, :4]), scores=f32list(det[:, 4]), labels=[int(v) for v in labels],
            masks=[rle(m) for m in masks],
            rpn_removed_by_min_bbox_size=r["stats"]["rpn_removed_by_min_bbox_size"],
        )
        # The official repository's mmdet 2.11 RPN rule (min_bbox_size 0 filters nothing); every
        # detection keeps its mask (2.11's simple_test_mask drops the mask of a box whose y2 is 0,
        # reading y2 as a padding score: test_mixins.py:277,303; flbq does not reproduce that).
        d2 = r211["det_bboxes"]
        gold["cases_2.11"][cname] = dict(
            proposals=f32list(r211["proposals"][:, :4]), proposal_scores=f32list(r211["proposals"][:, 4]),
            boxes=f32list(d2[:, :4]), scores=f32list(d2[:, 4]), labels=[int(v) for v in r211["det_labels"]],
            masks=[rle(m) for m in r211["masks"].numpy()],
        )
    safetensors_np.save(os.path.join(OUT, "maps.safetensors"), maps, {})
    with open(os.path.join(OUT, "goldens.json"), "w") as f:
        json.dump(gold, f, separators=(",", ":"))
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(dp, fn)) for dp, _, fns in os.walk(OUT) for fn in fns)
    print(f"wrote {OUT} ({total / 1e6:.2f} MB); {len(sd)} mmdet keys, {len(sd_off)} official keys")


if __name__ == "__main__":
    main()
