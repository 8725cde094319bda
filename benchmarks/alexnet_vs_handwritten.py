"""A compiled prototxt net against the same net written by hand in PyTorch: forward + backward.

For AlexNet (models/alexnet/train_val.prototxt, TRAIN, both columns on one device) and CaffeNet
(models/caffenet/train_val.prototxt), the Data layer replaced by in-memory Input blobs: netspec's
path is the one the solver runs (the fx graph returning the loss, Caffe's weighted loss sum,
autograd backward); the baseline is benchmarks/common.py's hand-written nn.Module with the same
weights. Before timing, one forward+backward of each with the same dropout seed must give the same
loss and fc8 gradient (else the two are not the same net). Then the variants take turns, `--repeat`
rounds, and the median (and minimum) seconds per forward+backward and the ratio netspec/hand are
printed. Goal: ratio <= 1.03.

    python benchmarks/alexnet_vs_handwritten.py [--batch 32] [--repeat 11] [--device cpu]
"""
from __future__ import annotations

import argparse

import torch

from common import (add_clock_args, apply_clock_args, compile_train_net, hand_model, interleaved, loss_fn,
                    machine, median, synthetic_batch)


def same_net(model, net, hand, data, label) -> float:
    """Worst fc8 weight-gradient difference after one seeded forward+backward of each (asserted small)."""
    f = loss_fn(net)
    torch.manual_seed(5)
    a = f(data, label.float())
    a.backward()
    torch.manual_seed(5)
    b = hand(data, label)
    b.backward()
    g, h = net.layers["fc8"].weight.grad, hand.fc8.weight.grad
    err = float((g - h).abs().max())
    assert abs(float(a) - float(b)) <= 1e-4 * abs(float(b)) and err <= 1e-4 * float(h.abs().max()), \
        f"{model}: netspec loss {float(a)} vs hand {float(b)}, fc8 grad worst error {err}"
    return err


def step_fns(model, batch, device):
    net = compile_train_net(model, batch, device)
    hand = hand_model(model, net, device)
    data, label = synthetic_batch(batch, device)
    err = same_net(model, net, hand, data, label)
    f, flabel = loss_fn(net), label.float()

    def netspec():
        f(data, flabel).backward()
        net.zero_grad(set_to_none=True)

    def handwritten():
        hand(data, label).backward()
        hand.zero_grad(set_to_none=True)

    return {"netspec": netspec, "hand": handwritten}, err


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=None, help="default 32 on the CPU, 128 on a GPU")
    ap.add_argument("--repeat", type=int, default=11)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default="alexnet,caffenet")
    add_clock_args(ap)
    args = ap.parse_args()
    device = torch.device(args.device)
    clock = apply_clock_args(args, device)
    batch = args.batch or (128 if device.type == "cuda" else 32)
    print(machine())
    print(f"forward+backward, batch {batch}, {device}, {args.repeat} interleaved rounds, {clock} seconds")
    for model in args.models.split(","):
        fns, err = step_fns(model, batch, device)
        for fn in fns.values():            # warm-up: allocator, mkldnn/cuDNN plans
            fn()
        t = interleaved(fns, args.repeat, device, clock)
        med, low = {k: median(v) for k, v in t.items()}, {k: min(v) for k, v in t.items()}
        print(f"{model:9s} netspec {med['netspec']:.3f} s (min {low['netspec']:.3f})   "
              f"hand {med['hand']:.3f} s (min {low['hand']:.3f})   "
              f"ratio median {med['netspec'] / med['hand']:.3f}  min {low['netspec'] / low['hand']:.3f}   "
              f"(same net: fc8 grad worst error {err:.1e})")


if __name__ == "__main__":
    main()
