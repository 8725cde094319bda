"""Shared pieces of the speed benchmarks: the models/ nets compiled with in-memory inputs, the same
nets written by hand in PyTorch, weight copying between the two, and timing helpers.

The hand-written modules are what a PyTorch user would write for models/alexnet/train_val.prototxt
and models/caffenet/train_val.prototxt (TRAIN phase), layer for layer and in the prototxt's order:
nn.Conv2d, nn.ReLU, nn.LocalResponseNorm (torch divides alpha by the size, as Caffe does, so the
prototxt's numbers go in unchanged), nn.MaxPool2d(3, 2, ceil_mode=True) (Caffe rounds pooling
output sizes up), nn.Linear, nn.Dropout and F.cross_entropy. The two-column AlexNet keeps both
copies of every Concat the prototxt has (one per column's device), so both sides do the same work.
"""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netspec.graph.inspect import substitute_missing_data  # noqa: E402
from netspec.frontend import load_net  # noqa: E402
from netspec.graph import compile_net  # noqa: E402
from netspec.proto import pb  # noqa: E402

MODELS = {"alexnet": ROOT / "models" / "alexnet", "caffenet": ROOT / "models" / "caffenet"}


# ---- the netspec side ---------------------------------------------------------------------------------
def train_net_param(model: str, batch: int, strip_devices: bool = False) -> pb.NetParameter:
    """models/<model>/train_val.prototxt, TRAIN phase, its Data layer replaced by Input blobs
    data (batch, 3, 227, 227) and label (batch,); optionally with every `device:` removed."""
    path = MODELS[model] / "train_val.prototxt"
    net = load_net(path, phase=pb.TRAIN)
    net, notes = substitute_missing_data(net, pb.TRAIN, str(path), {"data": (batch, 3, 227, 227),
                                                                    "label": (batch,)})
    if "data" not in notes:
        raise SystemExit(f"{path}: its Data layer opened a real LMDB; the benchmark wants in-memory data")
    if strip_devices:
        for lp in net.layer:
            del lp.device[:]
    return net


def compile_train_net(model: str, batch: int, device="cpu", device_map=None, strip_devices=False, seed=1):
    path = MODELS[model] / "train_val.prototxt"
    return compile_net(train_net_param(model, batch, strip_devices), phase=pb.TRAIN,
                       device_map=device_map or str(device), device=device, seed=seed, source=str(path))


def loss_fn(net):
    """The solver's forward: the fx graph returning the loss blob(s); then Caffe's weighted sum."""
    gm = net.graph_module(outputs=list(net.loss_weights))
    return lambda data, label: net.total_loss(gm(data, label))


# ---- the hand-written side ----------------------------------------------------------------------------
def _lrn():
    return nn.LocalResponseNorm(5, alpha=0.0005, beta=0.75, k=2.0)


def _pool():
    return nn.MaxPool2d(3, 2, ceil_mode=True)


class HandCaffeNet(nn.Module):
    """models/caffenet/train_val.prototxt (TRAIN) by hand: one column, no groups."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 96, 11, stride=4), nn.Conv2d(96, 256, 5, padding=2)
        self.conv3, self.conv4 = nn.Conv2d(256, 384, 3, padding=1), nn.Conv2d(384, 384, 3, padding=1)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1)
        self.fc6, self.fc7, self.fc8 = nn.Linear(9216, 4096), nn.Linear(4096, 4096), nn.Linear(4096, 1000)
        self.relu, self.norm, self.pool, self.drop = nn.ReLU(), _lrn(), _pool(), nn.Dropout(0.5)

    def forward(self, data, label):
        x = self.pool(self.norm(self.relu(self.conv1(data))))
        x = self.pool(self.norm(self.relu(self.conv2(x))))
        x = self.relu(self.conv3(x))
        x = self.relu(self.conv4(x))
        x = self.pool(self.relu(self.conv5(x))).flatten(1)
        x = self.drop(self.relu(self.fc6(x)))
        x = self.drop(self.relu(self.fc7(x)))
        return F.cross_entropy(self.fc8(x), label)


class HandAlexNet(nn.Module):
    """models/alexnet/train_val.prototxt (TRAIN) by hand: two columns, crossing into conv3 and the
    fully connected layers; column c's layers are conv1.c, fc6.c, ..."""

    def __init__(self):
        super().__init__()

        def two(make):
            return nn.ModuleList([make(), make()])

        self.conv1 = two(lambda: nn.Conv2d(3, 48, 11, stride=4))
        self.conv2 = two(lambda: nn.Conv2d(48, 128, 5, padding=2))
        self.conv3 = two(lambda: nn.Conv2d(256, 192, 3, padding=1))
        self.conv4 = two(lambda: nn.Conv2d(192, 192, 3, padding=1))
        self.conv5 = two(lambda: nn.Conv2d(192, 128, 3, padding=1))
        self.fc6 = two(lambda: nn.Linear(9216, 2048))
        self.fc7 = two(lambda: nn.Linear(4096, 2048))
        self.fc8 = nn.Linear(4096, 1000)
        self.relu, self.norm, self.pool, self.drop = nn.ReLU(), _lrn(), _pool(), nn.Dropout(0.5)

    def forward(self, data, label):
        x = [self.pool(self.norm(self.relu(self.conv1[c](data)))) for c in (0, 1)]
        x = [self.pool(self.norm(self.relu(self.conv2[c](x[c])))) for c in (0, 1)]
        both = [torch.cat(x, 1) for c in (0, 1)]           # concat2_0 and concat2_1
        x = [self.relu(self.conv3[c](both[c])) for c in (0, 1)]
        x = [self.relu(self.conv4[c](x[c])) for c in (0, 1)]
        x = [self.pool(self.relu(self.conv5[c](x[c]))) for c in (0, 1)]
        both = [torch.cat(x, 1).flatten(1) for c in (0, 1)]
        x = [self.drop(self.relu(self.fc6[c](both[c]))) for c in (0, 1)]
        both = [torch.cat(x, 1) for c in (0, 1)]
        x = [self.drop(self.relu(self.fc7[c](both[c]))) for c in (0, 1)]
        return F.cross_entropy(self.fc8(torch.cat(x, 1)), label)


HAND = {"alexnet": HandAlexNet, "caffenet": HandCaffeNet}


def hand_model(model: str, net=None, device="cpu") -> nn.Module:
    """The hand-written model, with `net`'s weights when given (so both compute the same thing)."""
    m = HAND[model]()
    if net is not None:
        with torch.no_grad():
            for name, module in m.named_modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    layer = net.layers[name.replace(".", "_")]
                    module.weight.copy_(layer.weight)
                    module.bias.copy_(layer.bias)
    return m.to(device)


def synthetic_batch(batch: int, device="cpu", seed: int = 0):
    """Standard normal images and random labels, made once and kept in memory."""
    gen = torch.Generator().manual_seed(seed)
    data = torch.randn(batch, 3, 227, 227, generator=gen)
    label = torch.randint(0, 1000, (batch,), generator=gen)
    return data.to(device), label.to(device)


# ---- timing -----------------------------------------------------------------------------------------------
def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


# wall: elapsed seconds. cpu: this process's CPU seconds (user + system), which on a VM whose host
# takes the vCPUs away now and then (without reporting steal time) counts only the work done.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def interleaved(fns: dict, repeat: int, device="cpu", clock: str = "wall") -> dict[str, list[float]]:
    """Seconds of each call of each fn, the fns taking turns (order reversed every round, so drift
    and thermal state hit all of them alike)."""
    now = CLOCKS[clock]
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(repeat):
        for k in (names if r % 2 == 0 else names[::-1]):
            sync(device)
            t0 = now()
            fns[k]()
            sync(device)
            times[k].append(now() - t0)
    return times


def median(xs) -> float:
    return statistics.median(xs)


def add_clock_args(ap) -> None:
    ap.add_argument("--threads", type=int, default=None,
                    help="torch intra-op threads (default: one per core)")
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall seconds, or CPU seconds of this process (CPU only; use with --threads 1)")


def apply_clock_args(args, device) -> str:
    """Set the thread count; the clock to use. CPU seconds are a steadier measure on a shared VM, with
    one thread: with two, a vCPU the host takes away leaves the other spinning at every op's barrier,
    and the spinning counts as CPU time."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu" and torch.device(device).type != "cpu":
        raise SystemExit("--clock cpu measures CPU work; on a GPU use wall time")
    return args.clock


def machine() -> str:
    """`lscpu` model name and core count, torch version, date: the header of every result."""
    name = platform.processor() or "?"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        name = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                    if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{name}, {os.cpu_count()} cores, torch using {torch.get_num_threads()} thread(s), "
            f"{gpu}, torch {torch.__version__}, {datetime.date.today().isoformat()}")
