#!/usr/bin/env python3
"""compare_weights.py A B TOL — whether two checkpoints' model tensors agree: for every tensor,
||a - b|| <= TOL ||a|| (the norm relative error; elementwise relative error is no measure for
AdamW-trained weights, whose smallest elements are noise). Plain Python: no numpy needed."""
import json
import math
import struct
import sys
from array import array


def tensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, t in header.items():
        if name == "__metadata__" or name.startswith(("optim.", "train.")):
            continue
        begin, end = t["data_offsets"]
        values = array("f")
        values.frombytes(data[8 + n + begin:8 + n + end])
        out[name] = values
    return out


a, b, tol = tensors(sys.argv[1]), tensors(sys.argv[2]), float(sys.argv[3])
if a.keys() != b.keys():
    sys.exit(f"different tensors: {sorted(a.keys() ^ b.keys())}")
worst = max((math.sqrt(sum((x - y) ** 2 for x, y in zip(a[k], b[k])) / max(sum(x * x for x in a[k]), 1e-300)), k)
            for k in a)
print(f"largest relative difference {worst[0]:.3g} (in {worst[1]}), tolerance {tol:g}")
sys.exit(0 if worst[0] <= tol else 1)
