"""What AlexNet's two-column placement costs: the net with its columns on two logical devices against
the same net with no `device:` fields at all, forward + backward.

  one device   models/alexnet/train_val.prototxt (TRAIN, Input data) with every `device:` removed:
               the fx graph has no transfer nodes
  two logical  the prototxt as written, device map gpu0=D,gpu1=D: the graph keeps a transfer node
               (`.to(D)`) wherever a column reads the other's blob, a no-op when both are D
  two GPUs     (only with 2+ CUDA devices) gpu0=cuda:0,gpu1=cuda:1: real copies between the GPUs
Both variants are compiled with the same seed, so they hold the same weights; their losses must
agree before timing. The variants take turns; median seconds and the ratio to "one device".

    python benchmarks/model_parallel_overhead.py [--batch 32] [--repeat 9] [--device cpu]
"""
from __future__ import annotations

import argparse

import torch

from common import (add_clock_args, apply_clock_args, compile_train_net, interleaved, loss_fn, machine,
                    median, synthetic_batch)


def transfer_nodes(net) -> int:
    return sum(1 for n in net.graph_module(outputs=list(net.loss_weights)).graph.nodes
               if "netspec_transfer" in n.meta)


def variants(batch: int, device: torch.device) -> dict:
    same = f"gpu0={device},gpu1={device}"
    nets = {"one device": compile_train_net("alexnet", batch, device, strip_devices=True),
            "two logical": compile_train_net("alexnet", batch, device, device_map=same)}
    if torch.cuda.device_count() >= 2:
        nets["two GPUs"] = compile_train_net("alexnet", batch, "cuda:0", device_map="gpu0=cuda:0,gpu1=cuda:1")
    return nets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=None, help="default 32 on the CPU, 128 on a GPU")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    add_clock_args(ap)
    args = ap.parse_args()
    device = torch.device(args.device)
    clock = apply_clock_args(args, device)
    batch = args.batch or (128 if device.type == "cuda" else 32)
    print(machine())
    print(f"AlexNet forward+backward, batch {batch}, {args.repeat} interleaved rounds, {clock} seconds"
          + ("" if torch.cuda.device_count() >= 2 else "; two GPUs not measured (fewer than 2 CUDA devices)"))
    nets = variants(batch, device)
    data, label = synthetic_batch(batch, device)
    fns, losses = {}, {}
    for name, net in nets.items():
        f = loss_fn(net)
        torch.manual_seed(3)
        losses[name] = float(f(data, label.float()).detach())

        def step(f=f, net=net):
            f(data, label.float()).backward()
            net.zero_grad(set_to_none=True)

        fns[name] = step
        step()                                       # warm-up
    base = losses["one device"]
    assert all(abs(v - base) <= 1e-5 * abs(base) for v in losses.values()), f"losses differ: {losses}"
    t = interleaved(fns, args.repeat, device, clock)
    ref = median(t["one device"])
    for name, net in nets.items():
        m = median(t[name])
        print(f"{name:12s} {transfer_nodes(net):2d} transfer nodes   {m:.3f} s (min {min(t[name]):.3f})   "
              f"ratio {m / ref:.3f}")


if __name__ == "__main__":
    main()
