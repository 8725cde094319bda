"""LRN across channels, forward + backward: the layer's training path (Caffe's closed-form backward,
netspec/layers/norm.py) against autograd through the same forward formula (the path it replaced)
and torch's nn.LocalResponseNorm, in one process, rounds interleaved.

    .venv/bin/python benchmarks/lrn_backward.py [--shape 32,96,55,55] [--rounds 7] [--device cpu]

Default shape: AlexNet's norm1 (conv1's output) at batch 32. Prints the median seconds of each and
the ratios, and checks the three gradients agree.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]
from common import interleaved, machine, median  # noqa: E402
from layer_runner import make_layer  # noqa: E402

from netspec.layers.norm import _window_sums  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="32,96,55,55")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    shape, device = tuple(int(v) for v in args.shape.split(",")), torch.device(args.device)
    layer = make_layer('type: "LRN" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }', [shape]).to(device)
    torch_lrn = torch.nn.LocalResponseNorm(5, alpha=0.0001, beta=0.75, k=1.0)

    def autograd_chain(x):       # the layer's forward formula, differentiated by autograd
        total = _window_sums(x * x, layer.size)
        return x * layer._power(layer.k + (layer.alpha / layer.size) * total)

    x = (torch.randn(shape, device=device) * 40).requires_grad_()
    dy = torch.randn(shape, device=device)

    def step(f):
        x.grad = None
        f(x).backward(dy)
        return x.grad

    fns = {"netspec": layer, "autograd chain": autograd_chain, "nn.LocalResponseNorm": torch_lrn}
    grads = {k: step(f).clone() for k, f in fns.items()}
    for k, g in grads.items():
        err = float((g - grads["autograd chain"]).abs().max() / grads["autograd chain"].abs().max())
        assert err < 1e-5, f"{k}: gradient differs by {err:.2g}"
    t = interleaved({k: (lambda f=f: step(f)) for k, f in fns.items()}, args.rounds, device)
    print(f"- {machine()}; shape {shape}, {args.rounds} interleaved rounds, forward+backward")
    base = median(t["netspec"])
    for k, v in t.items():
        print(f"| {k} | {median(v) * 1000:.1f} ms | {median(v) / base:.2f}× netspec's |")


if __name__ == "__main__":
    main()
