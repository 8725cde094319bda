"""Test helper: numerical gradient check of a layer in float64, as Caffe's GradientChecker does it.

The objective is Σ w·top over every top with fixed random weights w (so each top element has its
own weight in the gradient), and every element of the chosen bottoms and of the layer's parameter
blobs is perturbed by ±step: the central difference (f(x+h) - f(x-h)) / 2h must match the gradient
the layer's real backward (autograd, or its custom autograd Function) gives, within `tol`
relative to max(1, |numeric|).
"""

from __future__ import annotations

import torch


def _objective(layer, bottoms, weights):
    tops = layer(*bottoms)
    tops = tops if isinstance(tops, (tuple, list)) else (tops,)
    return sum((w * t).sum() for w, t in zip(weights, tops))


def check_gradients(layer, bottoms, check=None, params: bool = True, step: float = 1e-6,
                    tol: float = 1e-6, seed: int = 0) -> int:
    """Compare analytic and numeric gradients for bottoms `check` (default: all) and the layer's
    parameter blobs; returns how many elements were checked. Raises AssertionError naming the
    worst element."""
    layer = layer.double()
    bottoms = [b.detach().double().clone() for b in bottoms]
    check = range(len(bottoms)) if check is None else check
    for i in check:
        bottoms[i].requires_grad_(True)
    with torch.no_grad():
        tops = layer(*bottoms)
    tops = tops if isinstance(tops, (tuple, list)) else (tops,)
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(t.shape, generator=gen, dtype=torch.float64) for t in tops]
    targets = [(f"bottom {i}", bottoms[i]) for i in check]
    if params:
        targets += [(f"blob {n}", getattr(layer, n)) for n in layer.blob_names]
    for _, t in targets:
        t.grad = None
    _objective(layer, bottoms, weights).backward()
    checked = 0
    for what, t in targets:
        analytic = t.grad if t.grad is not None else torch.zeros_like(t)
        numeric = _numeric(layer, bottoms, weights, t, step)
        err = ((analytic - numeric).abs() / numeric.abs().clamp(min=1.0))
        worst = int(err.argmax()) if err.numel() else 0
        assert not err.numel() or float(err.max()) <= tol, (
            f"{layer.type} {what}: element {worst} analytic {analytic.flatten()[worst].item():.8g}, "
            f"numeric {numeric.flatten()[worst].item():.8g}")
        checked += t.numel()
    return checked


def _numeric(layer, bottoms, weights, t, step):
    out = torch.zeros_like(t)
    flat, grad = t.data.view(-1), out.view(-1)
    with torch.no_grad():
        for k in range(flat.numel()):
            keep = flat[k].item()
            flat[k] = keep + step
            plus = _objective(layer, bottoms, weights).item()
            flat[k] = keep - step
            minus = _objective(layer, bottoms, weights).item()
            flat[k] = keep
            grad[k] = (plus - minus) / (2 * step)
    return out
