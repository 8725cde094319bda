"""Small nets, where the framework shows (issue 15): BVLC's LeNet (examples/mnist, batch 64) and
cifar10_quick (examples/cifar10, batch 100), netspec against the same net written by hand in torch.

    .venv/bin/python benchmarks/small_nets.py [--iters 20] [--rounds 5] [--threads 1]

Rows, each a ratio netspec / hand of median seconds measured interleaved in one process:
  pycaffe loop   `net.blobs['data'].data[...] = x; net.blobs['label'].data[...] = y; solver.step(1)`
                 (netspec.pycaffe.SGDSolver) against a hand-written torch loop with Caffe's SGD rule
                 (h = momentum*h + lr*lr_mult*(g + decay*decay_mult*w); w -= h, the lr policy per step)
  solver alone   netspec's Solver.step(iters) on Input blobs fed once, against the hand loop
  train (LMDB)   netspec's Solver reading the Data layer from an LMDB of raw records (what `netspec
                 train` runs), `step(iters)`, against the same hand loop fed from memory
  inference      pycaffe `Net.forward()` of the deploy net (Input -> prob) at batch 1 and 10 against
                 the hand-written module's forward + softmax, outputs read as numpy on both sides
Goals: pycaffe loop <= 1.05, train from LMDB <= 1.10, inference <= 1.05.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, machine, median  # noqa: E402

from netspec import pycaffe  # noqa: E402
from netspec.data import db as dbmod  # noqa: E402
from netspec.frontend import load_solver  # noqa: E402
from netspec.proto import pb  # noqa: E402
from netspec.solver.solver import Solver  # noqa: E402

P12 = "param { lr_mult: 1 } param { lr_mult: 2 }"


def conv(name, bottom, n, k, filler, pad=0):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" {P12} '
            f'convolution_param {{ num_output: {n} kernel_size: {k} pad: {pad} stride: 1 '
            f'weight_filler {{ {filler} }} bias_filler {{ type: "constant" }} }} }}\n')


def ip(name, bottom, n, filler):
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "{bottom}" top: "{name}" {P12} '
            f'inner_product_param {{ num_output: {n} weight_filler {{ {filler} }} bias_filler {{ type: "constant" }} }} }}\n')


def pool(name, bottom, kind, k, s):
    return (f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" '
            f'pooling_param {{ pool: {kind} kernel_size: {k} stride: {s} }} }}\n')


def relu(name, blob):
    return f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n'


XAVIER = 'type: "xavier"'


def gauss(std):
    return f'type: "gaussian" std: {std}'


# BVLC's layer sizes, fillers and multipliers (examples/mnist/lenet_train_test.prototxt and
# examples/cifar10/cifar10_quick_train_test.prototxt); inputs are Input blobs or a Data layer.
BODIES = {
    "lenet": conv("conv1", "data", 20, 5, XAVIER) + pool("pool1", "conv1", "MAX", 2, 2)
    + conv("conv2", "pool1", 50, 5, XAVIER) + pool("pool2", "conv2", "MAX", 2, 2)
    + ip("ip1", "pool2", 500, XAVIER) + relu("relu1", "ip1") + ip("ip2", "ip1", 10, XAVIER),
    "cifar10_quick": conv("conv1", "data", 32, 5, gauss(0.0001), 2) + pool("pool1", "conv1", "MAX", 3, 2)
    + relu("relu1", "pool1") + conv("conv2", "pool1", 32, 5, gauss(0.01), 2) + relu("relu2", "conv2")
    + pool("pool2", "conv2", "AVE", 3, 2) + conv("conv3", "pool2", 64, 5, gauss(0.01), 2) + relu("relu3", "conv3")
    + pool("pool3", "conv3", "AVE", 3, 2) + ip("ip1", "pool3", 64, gauss(0.1)) + ip("ip2", "ip1", 10, gauss(0.1)),
}
SHAPES = {"lenet": (64, 1, 28, 28), "cifar10_quick": (100, 3, 32, 32)}
SOLVERS = {"lenet": 'base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "inv" gamma: 0.0001 power: 0.75',
           "cifar10_quick": 'base_lr: 0.001 momentum: 0.9 weight_decay: 0.004 lr_policy: "fixed"'}


def input_layers(shape) -> str:
    n, c, h, w = shape
    return (f'layer {{ name: "input" type: "Input" top: "data" top: "label" input_param {{ '
            f'shape {{ dim: {n} dim: {c} dim: {h} dim: {w} }} shape {{ dim: {n} }} }} }}\n')


def data_layer(source: Path, shape) -> str:
    return (f'layer {{ name: "data" type: "Data" top: "data" top: "label" transform_param {{ scale: 0.00390625 }} '
            f'data_param {{ source: "{source}" batch_size: {shape[0]} backend: LMDB }} }}\n')


LOSS = 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }\n'
PROB = 'layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }\n'


def write_solver(folder: Path, model: str, net: str, tag: str = "") -> Path:
    (folder / f"{model}{tag}.prototxt").write_text(f'name: "{model}"\n' + net)
    path = folder / f"{model}{tag}_solver.prototxt"
    path.write_text(f'net: "{model}{tag}.prototxt" {SOLVERS[model]} display: 0 max_iter: 100000 '
                    f'snapshot_after_train: false solver_mode: CPU')
    return path


# ---- the hand-written side -----------------------------------------------------------------------------
class Hand(nn.Module):
    def __init__(self, model: str):
        super().__init__()
        self.model = model
        if model == "lenet":
            self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
            self.ip1, self.ip2 = nn.Linear(800, 500), nn.Linear(500, 10)
        else:
            self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 32, 5, padding=2), nn.Conv2d(32, 32, 5, padding=2), \
                nn.Conv2d(32, 64, 5, padding=2)
            self.ip1, self.ip2 = nn.Linear(1024, 64), nn.Linear(64, 10)

    def forward(self, x):
        if self.model == "lenet":
            x = F.max_pool2d(self.conv2(F.max_pool2d(self.conv1(x), 2, 2)), 2, 2)
            return self.ip2(F.relu(self.ip1(x.flatten(1))))
        x = F.relu(F.max_pool2d(self.conv1(x), 3, 2, ceil_mode=True))
        x = F.avg_pool2d(F.relu(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.avg_pool2d(F.relu(self.conv3(x)), 3, 2, ceil_mode=True)
        return self.ip2(self.ip1(x.flatten(1)))


def caffe_sgd(model: Hand, model_name: str):
    """Caffe's SGD update, written as a torch user would: one loop over the parameters."""
    sp = pb.SolverParameter()
    from google.protobuf import text_format
    text_format.Merge(SOLVERS[model_name], sp)
    params = [(p, 2.0 if n.endswith("bias") else 1.0, 0.0 if n.endswith("bias") else 1.0)
              for n, p in model.named_parameters()]
    hist = [torch.zeros_like(p) for p, _, _ in params]
    state = {"iter": 0}

    @torch.no_grad()
    def step():
        it = state["iter"]
        rate = sp.base_lr * (1 + sp.gamma * it) ** -sp.power if sp.lr_policy == "inv" else sp.base_lr
        for (p, lr_mult, decay_mult), h in zip(params, hist):
            g = p.grad.add(p, alpha=sp.weight_decay * decay_mult) if decay_mult else p.grad
            h.mul_(sp.momentum).add_(g, alpha=rate * lr_mult)
            p.sub_(h)
        state["iter"] = it + 1

    return step


def copy_weights(hand: Hand, blobs: dict) -> None:
    """The netspec net's initial weights into the hand-written module, so both sides compute the same
    numbers (small nets' gradients reach float32's subnormal range, whose arithmetic is far slower
    on a CPU: different starting weights would time different arithmetic)."""
    with torch.no_grad():
        for name, module in hand.named_children():
            w, b = blobs[name]
            module.weight.copy_(torch.as_tensor(np.asarray(w)).reshape(module.weight.shape))
            module.bias.copy_(torch.as_tensor(np.asarray(b)).reshape(module.bias.shape))


def hand_loop(model_name: str, x, y, blobs: dict):
    model = Hand(model_name)
    copy_weights(model, blobs)
    update = caffe_sgd(model, model_name)
    data, label = torch.empty(x.shape), torch.empty(y.shape, dtype=torch.long)

    def one():
        data.copy_(torch.from_numpy(x))
        label.copy_(torch.from_numpy(y))
        model.zero_grad(set_to_none=False)
        F.cross_entropy(model(data), label).backward()
        update()

    return model, one


# ---- the rows ----------------------------------------------------------------------------------------------
def pycaffe_loop(folder: Path, model: str, iters: int, rounds: int) -> float:
    shape = SHAPES[model]
    solver = pycaffe.SGDSolver(str(write_solver(folder, model, input_layers(shape) + BODIES[model] + LOSS)))
    rng = np.random.default_rng(0)
    x = rng.random(shape, dtype=np.float32)
    y = rng.integers(0, 10, shape[0]).astype(np.float32)
    hand, hand_one = hand_loop(model, x, y.astype(np.int64),
                               {k: [b.data for b in v] for k, v in solver.net.params.items()})
    assert sum(p.numel() for p in hand.parameters()) == sum(b.data.size for bs in solver.net.params.values()
                                                            for b in bs), "not the same net"

    def ours():
        for _ in range(iters):
            solver.net.blobs["data"].data[...] = x
            solver.net.blobs["label"].data[...] = y
            solver.step(1)

    fns = {"netspec": ours, "hand": lambda: [hand_one() for _ in range(iters)]}
    for f in fns.values():
        f()
    t = interleaved(fns, rounds)
    return median(t["netspec"]) / median(t["hand"])


def solver_in_memory(folder: Path, model: str, iters: int, rounds: int) -> float:
    """The core Solver on Input blobs fed once (Solver.feed): the solver's own overhead, no data path."""
    shape = SHAPES[model]
    sp, path = load_solver(write_solver(folder, model, input_layers(shape) + BODIES[model] + LOSS, "_mem"))
    solver = Solver(sp, path, device="cpu")
    rng = np.random.default_rng(0)
    x = rng.random(shape, dtype=np.float32)
    y = rng.integers(0, 10, shape[0])
    solver.feed(data=x, label=y.astype(np.float32))
    _, hand_one = hand_loop(model, x, y, {k: [t.detach() for t in v] for k, v in solver.net.params().items()})
    fns = {"netspec": lambda: solver.step(iters), "hand": lambda: [hand_one() for _ in range(iters)]}
    for f in fns.values():
        f()
    t = interleaved(fns, rounds)
    return median(t["netspec"]) / median(t["hand"])


def lmdb_of(folder: Path, shape, records: int) -> Path:
    rng = np.random.default_rng(1)
    _, c, h, w = shape
    writer = dbmod.Writer(folder / f"lmdb_{c}x{h}")
    for i in range(records):
        d = pb.Datum(channels=c, height=h, width=w, label=int(i % 10),
                     data=rng.integers(0, 256, c * h * w, dtype=np.uint8).tobytes())
        writer.put(dbmod.caffe_key(i, f"{i}.png"), d.SerializeToString())
    writer.close()
    return folder / f"lmdb_{c}x{h}"


def train_from_lmdb(folder: Path, model: str, iters: int, rounds: int) -> float:
    shape = SHAPES[model]
    source = lmdb_of(folder, shape, 4 * shape[0])
    sp, path = load_solver(write_solver(folder, model, data_layer(source, shape) + BODIES[model] + LOSS, "_lmdb"))
    solver = Solver(sp, path, device="cpu")
    rng = np.random.default_rng(0)
    x = (rng.integers(0, 256, shape) * np.float32(0.00390625)).astype(np.float32)
    _, hand_one = hand_loop(model, x, rng.integers(0, 10, shape[0]),
                            {k: [t.detach() for t in v] for k, v in solver.net.params().items()})
    fns = {"netspec": lambda: solver.step(iters), "hand": lambda: [hand_one() for _ in range(iters)]}
    for f in fns.values():
        f()
    t = interleaved(fns, rounds)
    solver.net.close()
    return median(t["netspec"]) / median(t["hand"])


def inference(folder: Path, model: str, batch: int, iters: int, rounds: int) -> float:
    shape = (batch,) + SHAPES[model][1:]
    deploy = folder / f"{model}_deploy_{batch}.prototxt"
    n, c, h, w = shape
    deploy.write_text(f'name: "{model}"\nlayer {{ name: "input" type: "Input" top: "data" input_param {{ '
                      f'shape {{ dim: {n} dim: {c} dim: {h} dim: {w} }} }} }}\n' + BODIES[model] + PROB)
    net = pycaffe.Net(str(deploy), phase=pb.TEST)
    hand = Hand(model).eval()
    copy_weights(hand, {k: [b.data for b in v] for k, v in net.params.items()})
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    xt = torch.empty(shape)

    def ours():
        for _ in range(iters):
            net.blobs["data"].data[...] = x
            net.forward()["prob"].sum()

    @torch.no_grad()
    def theirs():
        for _ in range(iters):
            xt.copy_(torch.from_numpy(x))
            torch.softmax(hand(xt), 1).numpy().sum()

    fns = {"netspec": ours, "hand": theirs}
    for f in fns.values():
        f()
    t = interleaved(fns, rounds)
    return median(t["netspec"]) / median(t["hand"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="lenet,cifar10_quick")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import logging
    logging.getLogger("netspec").setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for model in args.models.split(","):
            t0 = time.perf_counter()
            rows.append((model, f"pycaffe loop, batch {SHAPES[model][0]}", pycaffe_loop(folder, model, args.iters, args.rounds), 1.05))
            rows.append((model, "Solver.step on fed Input blobs (the solver alone)",
                         solver_in_memory(folder, model, args.iters, args.rounds), 1.05))
            rows.append((model, "Solver from LMDB (netspec train)", train_from_lmdb(folder, model, args.iters, args.rounds), 1.10))
            for batch in (1, 10):
                rows.append((model, f"inference Net.forward, batch {batch}",
                              inference(folder, model, batch, args.iters, args.rounds), 1.05))
            print(f"[{model}: {time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
    print(f"- Machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the end")
    print(f"- Command: `.venv/bin/python benchmarks/small_nets.py --iters {args.iters} --rounds {args.rounds} "
          f"--threads {args.threads}`\n")
    print("| net | what | netspec / hand | goal |")
    print("|---|---|---:|---:|")
    for model, what, ratio, goal in rows:
        print(f"| {model} | {what} | {ratio:.3f}× | ≤ {goal:.2f}× |")


if __name__ == "__main__":
    main()
