"""Training images/s: netspec's Solver against a hand-written model and torch.optim.SGD, per speed option.

For AlexNet and CaffeNet (models/*/train_val.prototxt, TRAIN, Data layer replaced by in-memory Input
blobs holding one synthetic batch, so the net and the solver are measured, not the data path), and
for each of netspec's speed options (fp32, bf16 autocast, channels_last, torch.compile):
  netspec   Solver.step(1) with the SolverParameter field set (precision: "bf16", channels_last: true,
            torch_compile: true): zero the diffs, forward, loss, backward, the smoothed loss and the
            non-finite check, SGD with momentum, weight decay and the prototxt's lr_mult/decay_mult
  hand      the same net written by hand (benchmarks/common.py) under the same option (torch.autocast,
            .to(memory_format=channels_last), torch.compile(model)), torch.optim.SGD with the same
            momentum, weight decay and per-blob multipliers (biases: 2x rate, no decay),
            zero_grad, forward, backward, loss.item() (the solver reads its loss every iteration), step
The two sides take turns, one iteration each, after `--warmup` untimed iterations each (compilation
happens there); images/s = batch / median seconds per iteration.

    python benchmarks/train_throughput.py [--batch 128] [--iters 3] [--warmup 1]
           [--options fp32,bf16,channels_last,torch_compile] [--models alexnet,caffenet]
"""
from __future__ import annotations

import argparse
import gc
import logging

import torch

from common import (add_clock_args, apply_clock_args, hand_model, interleaved, machine, median,
                    synthetic_batch, train_net_param)
from netspec.proto import pb
from netspec.solver.solver import Solver

OPTIONS = ("fp32", "bf16", "channels_last", "torch_compile")
LR, MOMENTUM, DECAY = 0.01, 0.9, 5e-4


def solver_param(model: str, batch: int, option: str) -> pb.SolverParameter:
    sp = pb.SolverParameter(base_lr=LR, momentum=MOMENTUM, weight_decay=DECAY, lr_policy="fixed",
                            max_iter=1_000_000, display=0, snapshot_after_train=False)
    sp.net_param.CopyFrom(train_net_param(model, batch))
    if option == "bf16":
        sp.precision = "bf16"
    elif option == "channels_last":
        sp.channels_last = True
    elif option == "torch_compile":
        sp.torch_compile = True
    return sp


def netspec_step(model, batch, option, device, data, label):
    solver = Solver(solver_param(model, batch, option), None, device=device)
    solver.feed(data=data, label=label.float())      # the Input blobs every step reads
    return lambda: solver.step(1)


def hand_step(model, option, device, data, label, read_loss: bool = True):
    m = hand_model(model, device=device).train()
    if option == "channels_last":
        m = m.to(memory_format=torch.channels_last)
    weights = [p for n, p in m.named_parameters() if n.endswith("weight")]
    biases = [p for n, p in m.named_parameters() if n.endswith("bias")]
    opt = torch.optim.SGD([{"params": weights, "lr": LR, "weight_decay": DECAY},
                           {"params": biases, "lr": 2 * LR, "weight_decay": 0.0}], lr=LR, momentum=MOMENTUM)
    fwd = torch.compile(m) if option == "torch_compile" else m
    dtype = torch.bfloat16 if option == "bf16" else None

    def step():
        opt.zero_grad()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = fwd(data, label)
        loss.backward()
        if read_loss:
            loss.item()
        opt.step()

    return step


def measure(model, batch, option, device, iters, warmup, clock):
    data, label = synthetic_batch(batch, device)
    fns = {"netspec": netspec_step(model, batch, option, device, data, label),
           "hand": hand_step(model, option, device, data, label)}
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    t = interleaved(fns, iters, device, clock)
    return {k: batch / median(v) for k, v in t.items()}, {k: batch / min(v) for k, v in t.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--options", default=",".join(OPTIONS))
    ap.add_argument("--models", default="alexnet,caffenet")
    add_clock_args(ap)
    args = ap.parse_args()
    device = torch.device(args.device)
    clock = apply_clock_args(args, device)
    logging.getLogger("netspec").setLevel(logging.ERROR)   # the solver warns that nothing feeds its inputs
    print(machine())
    print(f"training images/s ({clock} seconds), batch {args.batch}, {device}, median of {args.iters} "
          f"interleaved iterations after {args.warmup} warm-up")
    print(f"{'model':9s} {'option':14s} {'netspec':>9s} {'hand':>9s} {'ratio':>6s}   best of each: "
          f"{'netspec':>9s} {'hand':>9s} {'ratio':>6s}")
    for model in args.models.split(","):
        for option in args.options.split(","):
            r, best = measure(model, args.batch, option, device, args.iters, args.warmup, clock)
            print(f"{model:9s} {option:14s} {r['netspec']:9.2f} {r['hand']:9.2f} "
                  f"{r['netspec'] / r['hand']:6.3f}   {'':14s}{best['netspec']:9.2f} {best['hand']:9.2f} "
                  f"{best['netspec'] / best['hand']:6.3f}", flush=True)
            gc.collect()
            torch._dynamo.reset()


if __name__ == "__main__":
    main()
