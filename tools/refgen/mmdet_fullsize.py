#!/usr/bin/python3
"""A random-weight full-size Swin-T Mask R-CNN checkpoint in mmdetection's
layout (configs/swin/mask_rcnn_swin-t-p4-w7_fpn_1x_coco.py: embed 96,
depths 2-2-6-2, heads 3-6-12-24, window 7, FPN 256, Shared2FCBBoxHead
1024, FCNMaskHead 4×256, 80 classes), saved as mmdetection publishes
(legacy torch.save format, {"meta", "state_dict"}), for measuring
`flbq convert` and the pipeline at full size. Not a fixture: nothing is
committed.

    /usr/bin/python3 tools/refgen/mmdet_fullsize.py /tmp/swin_t_mmdet.pth
"""
import collections
import sys

import torch


def state_dict(embed=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), window=7, fpn=256, fc=1024, classes=80):
    g = torch.Generator().manual_seed(0)
    sd = collections.OrderedDict()

    def t(*shape, std=0.02):
        return torch.randn(*shape, generator=g) * std

    def ln(name, c):
        sd[name + ".weight"] = 1 + t(c)
        sd[name + ".bias"] = t(c)

    def lin(name, o, i, bias=True):
        sd[name + ".weight"] = t(o, i)
        if bias:
            sd[name + ".bias"] = t(o)

    def conv(name, o, i, k):
        sd[name + ".weight"] = t(o, i, k, k, std=(2.0 / (i * k * k)) ** 0.5)
        sd[name + ".bias"] = t(o)

    conv("backbone.patch_embed.projection", embed, 3, 4)
    ln("backbone.patch_embed.norm", embed)
    T = window * window
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
    index = rel[..., 0] * (2 * window - 1) + rel[..., 1]
    for i, (d, h) in enumerate(zip(depths, heads)):
        dim = embed << i
        for j in range(d):
            p = f"backbone.stages.{i}.blocks.{j}."
            ln(p + "norm1", dim)
            sd[p + "attn.w_msa.relative_position_bias_table"] = t((2 * window - 1) ** 2, h)
            lin(p + "attn.w_msa.qkv", 3 * dim, dim)
            lin(p + "attn.w_msa.proj", dim, dim)
            sd[p + "attn.w_msa.relative_position_index"] = index.clone()
            ln(p + "norm2", dim)
            lin(p + "ffn.layers.0.0", 4 * dim, dim)
            lin(p + "ffn.layers.1", dim, 4 * dim)
        if i < len(depths) - 1:
            ln(f"backbone.stages.{i}.downsample.norm", 4 * dim)
            lin(f"backbone.stages.{i}.downsample.reduction", 2 * dim, 4 * dim, bias=False)
        ln(f"backbone.norm{i}", dim)
    for i in range(len(depths)):
        conv(f"neck.lateral_convs.{i}.conv", fpn, embed << i, 1)
        conv(f"neck.fpn_convs.{i}.conv", fpn, fpn, 3)
    conv("rpn_head.rpn_conv", fpn, fpn, 3)
    conv("rpn_head.rpn_cls", 3, fpn, 1)
    conv("rpn_head.rpn_reg", 12, fpn, 1)
    lin("roi_head.bbox_head.fc_cls", classes + 1, fc)
    lin("roi_head.bbox_head.fc_reg", 4 * classes, fc)
    lin("roi_head.bbox_head.shared_fcs.0", fc, fpn * 49)
    lin("roi_head.bbox_head.shared_fcs.1", fc, fc)
    for i in range(4):
        conv(f"roi_head.mask_head.convs.{i}.conv", fpn, fpn, 3)
    sd["roi_head.mask_head.upsample.weight"] = t(fpn, fpn, 2, 2, std=0.05)
    sd["roi_head.mask_head.upsample.bias"] = t(fpn)
    conv("roi_head.mask_head.conv_logits", classes, fpn, 1)
    return sd


if __name__ == "__main__":
    sd = state_dict()
    torch.save({"meta": {"mmdet_version": "2.25.0", "epoch": 12}, "state_dict": sd}, sys.argv[1],
               _use_new_zipfile_serialization=False)
    print(f"wrote {sys.argv[1]}: {len(sd)} tensors, {sum(v.numel() for v in sd.values())} values")
