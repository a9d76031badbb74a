#!/usr/bin/python3
"""Fixtures for tools/convert: the bundled random-weight ViT Mask R-CNN of
runtime/maskrcnn/testdata as the .pth files a torchvision user has.

    /usr/bin/python3 tools/refgen/convert_fixtures.py     # from the repo root

Writes tools/convert/testdata/:
    vit_maskrcnn.pth           torch.save(model.state_dict()), zip format, float32
    vit_maskrcnn_legacy.pth    {"state_dict": ..., "meta": {...}}, legacy format, float16
    vit_maskrcnn.config.json   its flbq.config (what the user states about the architecture)
"""
import collections
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_np  # noqa: E402

ROOT = os.path.join(HERE, "..", "..")
SRC = os.path.join(ROOT, "runtime", "maskrcnn", "testdata", "vit_maskrcnn.safetensors")
OUT = os.path.join(ROOT, "tools", "convert", "testdata")


def main():
    os.makedirs(OUT, exist_ok=True)
    arrays, meta = safetensors_np.load(SRC)
    sd = collections.OrderedDict((k, torch.from_numpy(np.asarray(v, dtype=np.float32) if v.dtype == np.float16 else v))
                                 for k, v in sorted(arrays.items()))
    torch.save(sd, os.path.join(OUT, "vit_maskrcnn.pth"))
    half = collections.OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in sd.items())
    torch.save({"state_dict": half, "meta": {"epoch": 1}}, os.path.join(OUT, "vit_maskrcnn_legacy.pth"),
               _use_new_zipfile_serialization=False)
    with open(os.path.join(OUT, "vit_maskrcnn.config.json"), "w") as f:
        json.dump(json.loads(meta["flbq.config"]), f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
