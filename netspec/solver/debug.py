"""Caffe's debug_info: per-layer mean absolute values of data and diffs (Net::ForwardDebugInfo,
BackwardDebugInfo and UpdateDebugInfo in src/caffe/net.cpp), in Caffe's log lines so the same
eyes and scripts read them:

    [Forward] Layer conv1, top blob conv1 data: 0.0473
    [Forward] Layer conv1, param blob 0 data: 0.00796
    [Backward] Layer conv1, bottom blob data diff: 3.1e-05
    [Backward] Layer conv1, param blob 0 diff: 0.000112
    [Update] Layer conv1, param 0 data: 0.00796; diff: 1.12e-06

Each value is asum / count. The eager path (CompiledNet.run_steps) runs so that every layer's inputs
and outputs are at hand; it computes the same numbers as the fx graph.
"""
from __future__ import annotations

import logging

import torch

from . import device_side
from .log import g6

log = logging.getLogger("netspec.solver.solver")


def _mean_abs(t: torch.Tensor | None) -> float:
    return float(t.detach().abs().float().mean()) if t is not None and t.numel() else 0.0


def forward_backward(net, inputs: dict, scale_loss=lambda loss: loss) -> tuple[dict, torch.Tensor]:
    """One forward and backward of `net` logging Caffe's [Forward] and [Backward] lines; (blobs, loss)."""
    read: dict[int, list[torch.Tensor]] = {}

    def after_layer(k, step, blobs):
        read[k] = [blobs[b] for b in step.bottoms]            # the versions this layer saw
        for t in step.tops:
            if blobs[t].requires_grad:
                blobs[t].retain_grad()
            log.info("    [Forward] Layer %s, top blob %s data: %s", step.layer.name, t, g6(_mean_abs(blobs[t])))
        for i, p in enumerate(step.layer.blobs):
            log.info("    [Forward] Layer %s, param blob %d data: %s", step.layer.name, i, g6(_mean_abs(p)))

    blobs = dict(inputs)
    for b in net.input_names:
        blobs[b] = blobs[b].detach().requires_grad_(True)
    net.run_steps(blobs, hook=after_layer)
    loss = net.total_loss(blobs).float()
    scale_loss(loss).backward()
    for k in range(len(net.steps) - 1, -1, -1):
        step = net.steps[k]
        if step.is_input or k not in read:
            continue
        for b, t in zip(step.bottoms, read[k]):
            if t.grad is not None:
                log.info("    [Backward] Layer %s, bottom blob %s diff: %s", step.layer.name, b, g6(_mean_abs(t.grad)))
        for i, p in enumerate(step.layer.blobs):
            if p.requires_grad:
                log.info("    [Backward] Layer %s, param blob %d diff: %s", step.layer.name, i, g6(_mean_abs(p.grad)))
    params = [p.tensor for p in net.learnable_params()]
    # A model-parallel net's blobs live on several devices: the norms are taken on the first one's.
    data = device_side.cat([p.detach().float().flatten() for p in params]) if params else torch.zeros(0)
    diff = device_side.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach().float().flatten()
                      for p in params]) if params else torch.zeros(0)
    log.info("    [Backward] All net params (data, diff): L1 norm = (%s, %s); L2 norm = (%s, %s)",
             g6(float(data.abs().sum())), g6(float(diff.abs().sum())), g6(float(data.norm())), g6(float(diff.norm())))
    return blobs, loss


def before_update(net) -> list[float]:
    """Each learnable blob's mean |data| before the update (Caffe logs the data it is about to change)."""
    return [_mean_abs(p.tensor) for p in net.learnable_params()]


def after_update(net, data_before: list[float]) -> None:
    """Caffe's [Update] lines: data before the step, and the update applied (left in the diff)."""
    for p, data in zip(net.learnable_params(), data_before):
        log.info("    [Update] Layer %s, param %d data: %s; diff: %s", p.layer, p.index, g6(data),
                 g6(_mean_abs(p.tensor.grad)))
