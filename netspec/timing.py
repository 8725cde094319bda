"""Per-layer forward and backward timing of a compiled net: Caffe's `caffe time` (tools/caffe.cpp time()).

Caffe runs one untimed forward and backward (so memory is allocated), then N iterations, each
timing every layer's Forward in order and every layer's Backward in reverse order, and reports the
per-layer means, the forward and backward totals, the mean iteration and the whole run.

netspec has no hand-written backward per layer; autograd's graph is cut at layer boundaries instead.
The forward of layer k records the blobs it read and the tops it wrote; its backward is
`torch.autograd.grad(tops, bottoms + params, upstream diffs)`; the diffs it returns for its
bottoms are added to those blobs' diffs (a blob read by two layers sums both, as Caffe's Split
does) and those of its parameters to their `.grad`, as Caffe accumulates parameter diffs, so the
layer-by-layer pass leaves the same `.grad` as one `total_loss(...).backward()`. Bottoms that need
no gradient (data, labels, propagate_down: false) and frozen parameters (lr_mult 0) are left out,
as Caffe's bottom_need_backward / param_propagate_down leave them out.
The diffs start at each loss top as its loss_weight. A net without a loss (a deploy net) is timed
as if every output blob fed a loss: its outputs get diffs of ones. Caffe would run each layer's
Backward there too but, its Net::Init having switched off every bottom diff, time only parameter
gradients; netspec times the backward a training step would run.

On CUDA every timed region starts and ends with a device synchronisation of every device the net
runs on, so a layer's time is its kernels' time, not their launch.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from .errors import NetspecError
from .solver.log import g6


@dataclass
class Timing:
    """What `time_net` measured, in milliseconds summed over `iterations`."""
    iterations: int
    layers: list[str]
    forward: list[float]
    backward: list[float]
    forward_total: float = 0.0
    backward_total: float = 0.0
    total: float = 0.0
    per_iteration: list[float] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Caffe's summary, from "Average time per layer:" to "Total Time:"."""
        n = self.iterations
        out = ["Average time per layer: "]
        for name, f, b in zip(self.layers, self.forward, self.backward):
            out.append(f"{name:>10}\tforward: {g6(f / n)} ms.")
            out.append(f"{name:>10}\tbackward: {g6(b / n)} ms.")
        out += [f"Average Forward pass: {g6(self.forward_total / n)} ms.",
                f"Average Backward pass: {g6(self.backward_total / n)} ms.",
                f"Average Forward-Backward: {g6(self.total / n)} ms.",
                f"Total Time: {g6(self.total)} ms."]
        return out


class Clock:
    """perf_counter in milliseconds, after waiting for the net's CUDA devices (kernels are queued:
    without the wait a layer's time would be its launch, and the next layer would pay for it)."""

    def __init__(self, devices=()):
        self.cuda = sorted({d for d in devices if d.type == "cuda"}, key=str)

    def now(self) -> float:
        for d in self.cuda:
            torch.cuda.synchronize(d)
        return time.perf_counter() * 1e3


def net_devices(net) -> list[torch.device]:
    """Every device a layer of `net` (or a group of a grouped convolution) runs on."""
    devices = {s.device for s in net.steps}
    for s in net.steps:
        devices.update(getattr(s.layer, "group_devices", None) or ())
    return sorted(devices, key=str)


@dataclass
class _Record:
    """One layer's forward: the blobs it read (before any copy to its device) and the tops it wrote."""
    bottoms: list
    tops: list


def forward_layers(net, blobs: dict, clock: Clock, times: list) -> list[_Record]:
    """Run every layer in order over `blobs`, adding each layer's milliseconds to `times[k]`."""
    records = []
    for k, step in enumerate(net.steps):
        bottoms = [None if d else blobs[b] for b, d in zip(step.bottoms, step.detach)]
        t0 = clock.now()
        net.run_steps(blobs, k, k)
        times[k] += clock.now() - t0
        records.append(_Record(bottoms, [blobs[t] for t in step.tops]))
    return records


class _Diffs:
    """Blob diffs keyed by the tensor (a blob rewritten in place is a new tensor per version)."""

    def __init__(self):
        self._d: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def add(self, t: torch.Tensor, g: torch.Tensor | None) -> None:
        if g is not None:
            old = self._d.get(id(t))
            self._d[id(t)] = (t, g if old is None else old[1] + g)

    def get(self, t: torch.Tensor):
        hit = self._d.get(id(t))
        return None if hit is None else hit[1]


def initial_diffs(net, blobs: dict) -> _Diffs:
    """loss_weight at every loss top; ones at every output of a net without a loss."""
    diffs = _Diffs()
    seeds = dict(net.loss_weights) or {b: 1.0 for b in net.output_names}
    for b, w in seeds.items():
        if blobs[b].requires_grad:
            diffs.add(blobs[b], torch.full_like(blobs[b], w))
    return diffs


def _unique(tensors) -> list[torch.Tensor]:
    seen, out = set(), []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


def layer_backward(step, rec: _Record, diffs: _Diffs) -> None:
    """One layer's backward: its bottoms' diffs (added to theirs) and its parameters' (added to .grad)."""
    bottoms = _unique(b for b in rec.bottoms if b is not None and b.requires_grad)
    # A top that is its bottom (Split, one-input Concat, Dropout at TEST) already shares its diff.
    tops = [t for t in _unique(rec.tops) if t.requires_grad and all(t is not b for b in bottoms)]
    pairs = [(t, diffs.get(t)) for t in tops if diffs.get(t) is not None]
    params = [p for p in _unique(step.layer.parameters()) if p.requires_grad]
    if not pairs or not bottoms + params:
        return
    grads = torch.autograd.grad([t for t, _ in pairs], bottoms + params, [g for _, g in pairs],
                                allow_unused=True)
    for b, g in zip(bottoms, grads):
        diffs.add(b, g)
    for p, g in zip(params, grads[len(bottoms):]):   # parameter diffs accumulate, as Caffe's do
        if g is not None:
            p.grad = g if p.grad is None else p.grad.add_(g)


def backward_layers(net, records: list, diffs: _Diffs, clock: Clock, times: list) -> None:
    """Every layer's backward in reverse order (none for data layers), adding each layer's
    milliseconds to `times[k]`."""
    for k in range(len(net.steps) - 1, -1, -1):
        step = net.steps[k]
        t0 = clock.now()
        if not step.layer.is_data:
            layer_backward(step, records[k], diffs)
        times[k] += clock.now() - t0
        records[k] = None        # free this layer's saved tensors now, as autograd's backward would


def warm_up(net, inputs: dict, say=lambda line: None) -> float:
    """Caffe's untimed first forward and backward (memory gets allocated); the loss (0 without one)."""
    clock, scratch = Clock(net_devices(net)), [0.0] * len(net.steps)
    blobs = dict(inputs)
    say("Performing Forward")
    records = forward_layers(net, blobs, clock, scratch)
    loss = float(net.total_loss(blobs).detach()) if net.loss_weights else 0.0
    say(f"Initial loss: {loss:g}")
    say("Performing Backward")
    backward_layers(net, records, initial_diffs(net, blobs), clock, scratch)
    return loss


def time_net(net, iterations: int, inputs: dict, on_iteration=None) -> Timing:
    """`iterations` timed forward+backward passes (the caller runs the warm-up first);
    `on_iteration(j, ms)` after each, as Caffe logs "Iteration: j forward-backward time"."""
    if iterations <= 0:
        raise NetspecError(f"-iterations must be positive, got {iterations}")
    n, clock = len(net.steps), Clock(net_devices(net))
    result = Timing(iterations, [s.layer.name for s in net.steps], [0.0] * n, [0.0] * n)
    start = clock.now()
    for j in range(iterations):
        t0 = clock.now()
        blobs = dict(inputs)
        records = forward_layers(net, blobs, clock, result.forward)
        t1 = clock.now()
        backward_layers(net, records, initial_diffs(net, blobs), clock, result.backward)
        t2 = clock.now()
        result.forward_total += t1 - t0
        result.backward_total += t2 - t1
        result.per_iteration.append(t2 - t0)
        if on_iteration is not None:
            on_iteration(j, t2 - t0)
    result.total = clock.now() - start
    return result


def synthetic_inputs(net, device, label_blobs=()) -> dict[str, torch.Tensor]:
    """Values for the net's input blobs: standard normal data, zeros for labels (class 0 exists in
    every classifier). A blob counts as a label when it is in `label_blobs` or its name says so."""
    gen = torch.Generator().manual_seed(0)
    out = {}
    for b in net.input_names:
        shape = net.blob_shapes[b]
        if b in label_blobs or "label" in b.lower():
            out[b] = torch.zeros(shape, device=device)
        else:
            out[b] = torch.randn(shape, generator=gen).to(device)
    return out
