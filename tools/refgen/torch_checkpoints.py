#!/usr/bin/python3
"""Checkpoint fixtures for tools/torchckpt: small torch.save files in both
formats and the values they hold.

    /usr/bin/python3 tools/refgen/torch_checkpoints.py     # from the repo root

Writes tools/torchckpt/testdata/:
    zip_state_dict.pth      OrderedDict state dict, zip format (record folder "zip_state_dict")
    legacy_mmdet.pth        {"meta": {...}, "state_dict": ...}, legacy format (as mmdetection publishes)
    zip_model.weird.name.pth  {"model": ..., "iteration": 7}, zip format, folder renamed to "archive"
    evil.pth                a legacy-format pickle whose state dict calls os.system (must be refused)
    expected.json           every tensor's dtype, shape and float values (row-major)
"""
import collections
import io
import json
import os
import pickle
import shutil
import zipfile

import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "torchckpt", "testdata")


def state_dict():
    g = torch.Generator().manual_seed(3)
    sd = collections.OrderedDict()
    sd["backbone.conv.weight"] = torch.randn(4, 3, 2, 2, generator=g)
    sd["backbone.conv.bias"] = torch.randn(4, generator=g)
    # A transposed (non-contiguous) view and two views of one storage.
    base = torch.randn(5, 6, generator=g)
    sd["head.fc.weight_t"] = base.t()
    sd["head.rows.a"] = base[1:3]
    sd["head.rows.b"] = base[3, 2:5]
    sd["half"] = torch.tensor([1.0, -2.5, 65504.0, 6e-8, 0.0], dtype=torch.float16)
    sd["bf16"] = torch.tensor([1.0, -3.0, 1e30, 0.0078125], dtype=torch.bfloat16)
    sd["f64"] = torch.tensor([[1.25, -1e-3]], dtype=torch.float64)
    sd["bn.num_batches_tracked"] = torch.tensor(12345, dtype=torch.int64)
    sd["mask"] = torch.tensor([True, False, True])
    sd["empty"] = torch.zeros(0, 3)
    sd["param"] = torch.nn.Parameter(torch.arange(6, dtype=torch.float32).reshape(2, 3))
    return sd


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/flbq-torchckpt-pwned",))


def main():
    os.makedirs(OUT, exist_ok=True)
    sd = state_dict()
    torch.save(sd, os.path.join(OUT, "zip_state_dict.pth"))
    torch.save({"meta": {"mmdet_version": "2.25.0", "CLASSES": ("person", "car"), "epoch": 12},
                "state_dict": sd}, os.path.join(OUT, "legacy_mmdet.pth"), _use_new_zipfile_serialization=False)
    # A zip whose record folder is not the file's stem.
    tmp = os.path.join(OUT, "tmp.pth")
    torch.save({"model": sd, "iteration": 7}, tmp)
    dst = os.path.join(OUT, "zip_model.weird.name.pth")
    with zipfile.ZipFile(tmp) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            info = zipfile.ZipInfo("archive/" + item.filename.split("/", 1)[1], date_time=(1980, 1, 1, 0, 0, 0))
            zout.writestr(info, zin.read(item.filename))
    os.remove(tmp)
    torch.save({"state_dict": {"w": torch.ones(2)}, "x": Evil()}, os.path.join(OUT, "evil.pth"),
               _use_new_zipfile_serialization=False)
    exp = {}
    for k, v in sd.items():
        v = v.detach()
        exp[k] = {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape),
                  "values": v.reshape(-1).to(torch.float64).tolist()}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(exp, f, indent=1, sort_keys=True)
        f.write("\n")
    for n in sorted(os.listdir(OUT)):
        print(n, os.path.getsize(os.path.join(OUT, n)))


if __name__ == "__main__":
    main()
