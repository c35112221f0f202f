#!/usr/bin/python3
"""Derives a non-uniform grid of 2^bits INT8 levels for fedcal's low-bit weights (models/quant/
int4_format.h, int5_format.h): Lloyd's algorithm (k-means in one dimension) on a model's linear weights,
each group of 32 input channels divided by its extreme so that the extreme lands on -1, with -1 and 0
held fixed, the levels then rounded to 1/127.
    /usr/bin/python3 bench/derive_grid.py models/tinystories-1.8m/hf/model.safetensors --bits 5
Needs numpy (Debian python3-numpy). Prints the levels, ascending."""
import argparse
import json
import struct

import numpy as np


def linear_weights(path):
    with open(path, "rb") as f:
        header_len = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(header_len))
        data = f.read()
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32" or len(info["shape"]) != 2:
            continue
        begin, end = info["data_offsets"]
        yield name, np.frombuffer(data[begin:end], dtype=np.float32).reshape(info["shape"])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("safetensors")
    p.add_argument("--bits", type=int, default=5)
    p.add_argument("--iterations", type=int, default=200)
    a = p.parse_args()
    groups = []
    for _, w in linear_weights(a.safetensors):
        if w.shape[1] % 32:
            continue
        g = w.reshape(-1, 32).astype(np.float64)
        extreme = g[np.arange(len(g)), np.abs(g).argmax(axis=1)]
        keep = extreme != 0
        groups.append(-g[keep] / extreme[keep, None])  # the extreme at -1
    y = np.sort(np.concatenate(groups).ravel())
    n = 2 ** a.bits
    # Start from the uniform grid between -1 and the largest value seen; -1 and 0 stay where they are.
    centers = np.concatenate([np.linspace(-1, 0, n // 2 + 1)[:-1], np.linspace(0, y[-1], n // 2)])
    fixed = np.isin(centers, [-1.0, 0.0])
    for _ in range(a.iterations):
        edges = (centers[1:] + centers[:-1]) / 2
        which = np.searchsorted(edges, y)
        sums = np.bincount(which, weights=y, minlength=n)
        counts = np.bincount(which, minlength=n)
        moved = np.where(counts > 0, sums / np.maximum(counts, 1), centers)
        centers = np.where(fixed, centers, moved)
    levels = np.round(centers * 127).astype(int)
    if len(set(levels)) != n:
        raise SystemExit(f"levels collide after rounding: {levels}")
    print(", ".join(str(v) for v in levels))


if __name__ == "__main__":
    main()
