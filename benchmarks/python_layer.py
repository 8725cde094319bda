"""The cost of pycaffe-style pieces, each against its netspec counterpart in the same process, taking
turns round by round; the figure is the best round's milliseconds per forward+backward.

1. A Python loss layer (tests/data/python_layers' EuclideanLoss, numpy, written as BVLC's pyloss.py)
   against netspec's EuclideanLoss, after an InnerProduct, through pycaffe's Net.forward/backward.
2. Net.forward/backward of LeNet with every blob's `.data`/`.diff` array held by the caller (each
   forward then copies its results into those arrays, pycaffe's stable arrays) against no array held.

    python benchmarks/python_layer.py --batch 256 --rounds 5
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "data" / "python_layers"))
import netspec as caffe  # noqa: E402

LOSS_NET = """name: "loss" force_backward: true
input: "x" input_shape {{ dim: {n} dim: 512 }}
input: "y" input_shape {{ dim: {n} dim: 256 }}
layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
  inner_product_param {{ num_output: 256 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" bottom: "ip" bottom: "y" top: "loss" {loss} }}
"""
PYTHON_LOSS = ('type: "Python" loss_weight: 1 '
               'python_param { module: "netspec_test_pylayers" layer: "EuclideanLoss" }')
LENET = """name: "LeNet"
input: "data" input_shape {{ dim: {n} dim: 1 dim: 28 dim: 28 }}
input: "label" input_shape {{ dim: {n} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 20 kernel_size: 5 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param {{ num_output: 50 kernel_size: 5 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
  inner_product_param {{ num_output: 500 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
"""


def net(text: str, folder: Path, name: str) -> caffe.Net:
    (folder / name).write_text(text)
    return caffe.Net(str(folder / name), caffe.TRAIN)


def step_ms(n: caffe.Net, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        n.forward()
        n.backward()
    return (time.perf_counter() - start) / iters * 1000


def compare(a: caffe.Net, b: caffe.Net, rounds: int, iters: int) -> tuple[float, float]:
    step_ms(a, 1), step_ms(b, 1)                       # warm-up
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(step_ms(a, iters))
        tb.append(step_ms(b, iters))
    return min(ta), min(tb)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=10)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        py = net(LOSS_NET.format(n=args.batch, loss=PYTHON_LOSS), folder, "py.prototxt")
        own = net(LOSS_NET.format(n=args.batch, loss='type: "EuclideanLoss"'), folder, "own.prototxt")
        for n in (py, own):
            n.blobs["x"].data[...] = rng.standard_normal((args.batch, 512))
            n.blobs["y"].data[...] = rng.standard_normal((args.batch, 256))
        tp, to = compare(py, own, args.rounds, args.iters)
        print(f"Python EuclideanLoss {tp:.2f} ms, netspec EuclideanLoss {to:.2f} ms: {tp / to:.2f}x")
        held = net(LENET.format(n=args.batch), folder, "held.prototxt")
        free = net(LENET.format(n=args.batch), folder, "free.prototxt")
        for n in (held, free):
            n.blobs["data"].data[...] = rng.random((args.batch, 1, 28, 28))
            n.blobs["label"].data[...] = rng.integers(0, 10, args.batch)
        arrays = [(b.data, b.diff) for b in held.blobs.values()]   # held for the whole run
        th, tf = compare(held, free, args.rounds, args.iters)
        print(f"LeNet arrays held {th:.2f} ms, none held {tf:.2f} ms: {th / tf:.2f}x ({len(arrays)} blobs)")


if __name__ == "__main__":
    main()
