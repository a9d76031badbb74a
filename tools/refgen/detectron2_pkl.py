#!/usr/bin/python3
"""detectron2-style .pkl checkpoint fixtures for tools/torchckpt: a pickled
dict {"model": {name: numpy array}, "__author__": ...} as detectron2's
model zoo publishes (detectron2/checkpoint/detection_checkpoint.py reads
such files with pickle.load(f, encoding="latin1")).

    /usr/bin/python3 tools/refgen/detectron2_pkl.py      # from the repo root

Writes tools/torchckpt/testdata/:
    d2_proto2.pkl, d2_proto4.pkl   the same arrays at pickle protocols 2 and 4
    d2_object.pkl                  an object array (must be refused)
    d2_expected.json               dtype, shape and values of every array
"""
import json
import os
import pickle

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "torchckpt", "testdata")


def arrays():
    rng = np.random.RandomState(5)
    m = {}
    m["backbone.net.patch_embed.proj.weight"] = rng.randn(4, 3, 2, 2).astype(np.float32)
    m["backbone.net.blocks.0.attn.rel_pos_h"] = rng.randn(7, 4).astype(np.float32)
    m["fortran"] = np.asfortranarray(rng.randn(3, 5).astype(np.float32))
    m["f64"] = rng.randn(2, 2)
    m["f16"] = np.array([1.0, -0.5, 65504.0], dtype=np.float16)
    m["big_endian"] = np.array([1.5, -2.0, 3.25], dtype=">f4")
    m["i64"] = np.array([1, -2, 3], dtype=np.int64)
    m["u8"] = np.array([0, 255, 7], dtype=np.uint8)
    m["scalar"] = np.array(3.5, dtype=np.float32)
    return m


def main():
    os.makedirs(OUT, exist_ok=True)
    m = arrays()
    for proto in (2, 4):
        with open(os.path.join(OUT, "d2_proto%d.pkl" % proto), "wb") as f:
            pickle.dump({"model": m, "__author__": "flbq refgen", "matching_heuristics": True}, f, protocol=proto)
    with open(os.path.join(OUT, "d2_object.pkl"), "wb") as f:
        pickle.dump({"model": {"w": np.array([1, "x"], dtype=object)}}, f, protocol=2)
    exp = {k: {"dtype": v.dtype.newbyteorder("=").name, "shape": list(v.shape),
               "values": v.astype(np.float64).reshape(-1).tolist()} for k, v in m.items()}
    with open(os.path.join(OUT, "d2_expected.json"), "w") as f:
        json.dump(exp, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    main()
