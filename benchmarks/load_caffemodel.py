"""How fast netspec reads a large .caffemodel, against numpy reading the same bytes.

Writes an AlexNet-shaped caffemodel (BVLC AlexNet's blob shapes: 60,965,224 parameters, 244 MB) to a
temporary folder, then times, on the warm page cache, the median of several runs of:
  baseline   np.fromfile(path, uint8)                    the bytes into memory, nothing else
  fast       read_weights(path)                          netspec's reader (what load_weights uses)
  load       load_weights(tensors, path)                 the same, then copied into torch tensors
  protobuf   weights_by_layer(read_caffemodel(path))     full NetParameter parse, then arrays
  write      write_caffemodel(...) vs writing the arrays' bytes to a file, both with fsync

    python benchmarks/load_caffemodel.py [--repeat 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from netspec.formats.caffemodel import (
    load_weights,
    read_caffemodel,
    read_weights,
    weights_by_layer,
    write_caffemodel,
)
from netspec.proto import pb

ALEXNET = {  # BVLC AlexNet (grouped conv2/4/5), layer -> blob shapes
    "conv1": [(96, 3, 11, 11), (96,)], "conv2": [(256, 48, 5, 5), (256,)],
    "conv3": [(384, 256, 3, 3), (384,)], "conv4": [(384, 192, 3, 3), (384,)],
    "conv5": [(256, 192, 3, 3), (256,)], "fc6": [(4096, 9216), (4096,)],
    "fc7": [(4096, 4096), (4096,)], "fc8": [(1000, 4096), (1000,)],
}


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_params(rng) -> dict:
    return {name: [rng.standard_normal(s, dtype=np.float32) for s in shapes]
            for name, shapes in ALEXNET.items()}


def write_raw(path, params) -> None:
    with open(path, "wb") as f:
        f.writelines(a.data for blobs in params.values() for a in blobs)
        f.flush()
        os.fsync(f.fileno())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    params = make_params(np.random.default_rng(0))
    layers = [pb.LayerParameter(name=n, type="Convolution" if n.startswith("conv") else "InnerProduct")
              for n in ALEXNET]
    count = sum(a.size for blobs in params.values() for a in blobs)
    with tempfile.TemporaryDirectory() as tmp:
        path, raw = Path(tmp) / "alexnet.caffemodel", Path(tmp) / "raw.bin"
        write = timed(lambda: write_caffemodel(path, layers, params, name="AlexNet"), args.repeat)
        raw_write = timed(lambda: write_raw(raw, params), args.repeat)
        check = read_weights(path)
        assert all(np.array_equal(a, b) for n in ALEXNET for a, b in zip(params[n], check[n][1]))
        np.fromfile(path, np.uint8)  # warm the page cache
        base = timed(lambda: np.fromfile(path, np.uint8), args.repeat)
        fast = timed(lambda: read_weights(path), args.repeat)
        full = timed(lambda: weights_by_layer(read_caffemodel(path)), args.repeat)
        tensors = {name: [torch.empty(s) for s in shapes] for name, shapes in ALEXNET.items()}
        load = timed(lambda: load_weights(tensors, path), args.repeat)
        size = path.stat().st_size
    print(f"{count:,} parameters, {size / 1e6:.1f} MB, median of {args.repeat} runs")
    print(f"np.fromfile (baseline)                   {base:7.3f} s")
    print(f"read_weights                             {fast:7.3f} s   {fast / base:5.2f}x baseline")
    print(f"load_weights into torch tensors          {load:7.3f} s   {load / base:5.2f}x baseline")
    print(f"weights_by_layer(read_caffemodel(...))   {full:7.3f} s   {full / base:5.2f}x baseline")
    print(f"write_caffemodel                         {write:7.3f} s   {write / raw_write:5.2f}x writing the "
          f"raw arrays ({raw_write:.3f} s)")


if __name__ == "__main__":
    main()
