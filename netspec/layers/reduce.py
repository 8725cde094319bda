"""Layers that reduce over axes: ArgMax, Reduction and MVN (Caffe's argmax_layer.cpp,
reduction_layer.cpp, mvn_layer.cpp).

ArgMax has no backward in Caffe; its top is computed without a graph. MVN's backward is Caffe's own
formula, which treats the eps-shifted deviation as if eps were not there; for Caffe's default eps
(1e-9) it is autograd's gradient, for a large eps it is not, so it is a custom autograd Function.
"""

from __future__ import annotations

import math

import torch

from ..proto import pb
from .base import Layer, canonical_axis, register

R = pb.ReductionParameter


@register("ArgMax")
class ArgMax(Layer):
    """The top_k largest values' indices (or values) along `axis`; without `axis`, over each sample's
    flattened values with a (N, 1 or 2, top_k, 1...) top of [indices; values]."""

    exact_bottoms = exact_tops = 1

    def setup(self, bottom_shapes):
        p, shape = self.param, bottom_shapes[0]
        self.top_k, self.out_max_val = p.top_k, p.out_max_val
        if self.top_k < 1:
            raise self.error(f"top_k must be at least 1, found {self.top_k}")
        self.axis = canonical_axis(p.axis, len(shape), self) if p.HasField("axis") else None
        dim = shape[self.axis] if self.axis is not None else math.prod(shape[1:])
        if self.top_k > dim:
            where = f"axis {self.axis}" if self.axis is not None else "the flattened sample"
            raise self.shape_error(f"top_k {self.top_k} is more than the {dim} values of {where} "
                                   f"of bottom '{self.lp.bottom[0]}' {shape}")

    def infer_top_shapes(self, bottom_shapes):
        shape = list(bottom_shapes[0])
        if self.axis is not None:
            shape[self.axis] = self.top_k
            return [tuple(shape)]
        top = [shape[0], 2 if self.out_max_val else 1, self.top_k] + [1] * (max(len(shape), 3) - 3)
        return [tuple(top)]

    def forward(self, x):
        x = x.detach()
        if self.axis is None:
            values, index = _top_k(x.reshape(x.shape[0], -1), 1, self.top_k)
            parts = [index, values] if self.out_max_val else [index]
            return torch.stack(parts, 1).reshape(self.infer_top_shapes([tuple(x.shape)])[0])
        values, index = _top_k(x, self.axis, self.top_k)
        return values if self.out_max_val else index


def _top_k(x, dim: int, k: int):
    """The k largest along `dim` ordered as Caffe's partial_sort of (value, index) pairs with
    std::greater: larger value first, and among equal values the larger index first."""
    n = x.shape[dim]
    values, index = torch.sort(x.flip(dim), dim=dim, descending=True, stable=True)
    index = (n - 1) - index   # the flip makes the stable sort put later indices first
    return values.narrow(dim, 0, k), index.narrow(dim, 0, k).to(x.dtype)


@register("Reduction")
class Reduction(Layer):
    """SUM, ASUM, SUMSQ or MEAN over every axis from `axis` on, times `coeff`; the top keeps the
    axes before `axis` (a scalar for axis 0)."""

    exact_bottoms = exact_tops = 1

    def setup(self, bottom_shapes):
        p = self.param
        self.op, self.coeff = p.operation, p.coeff
        self.axis = canonical_axis(p.axis, len(bottom_shapes[0]), self)

    def infer_top_shapes(self, bottom_shapes):
        return [tuple(bottom_shapes[0][: self.axis])]

    def forward(self, x):
        rows = x.reshape(tuple(x.shape[: self.axis]) + (-1,))
        if self.op == R.ASUM:
            total = rows.abs().sum(-1)
        elif self.op == R.SUMSQ:
            total = (rows * rows).sum(-1)
        else:
            total = rows.sum(-1)
        coeff = self.coeff / rows.shape[-1] if self.op == R.MEAN and rows.shape[-1] else self.coeff
        return total * coeff


@register("MVN")
class MVN(Layer):
    """Subtract the mean over each (sample, channel) — each sample with across_channels — and, with
    normalize_variance, divide by the standard deviation plus eps (eps added to the deviation)."""

    exact_bottoms = exact_tops = 1

    def setup(self, bottom_shapes):
        p, shape = self.param, bottom_shapes[0]
        if len(shape) > 4:
            raise self.shape_error(f"bottom '{self.lp.bottom[0]}' has shape {shape}; MVN takes at most 4 axes")
        self.normalize_variance, self.across_channels, self.eps = p.normalize_variance, p.across_channels, p.eps

    def infer_top_shapes(self, bottom_shapes):
        return [bottom_shapes[0]]

    def forward(self, x):
        lead = 1 if self.across_channels or x.dim() < 2 else 2
        rows = x.reshape(math.prod(x.shape[:lead]), -1)
        if self.normalize_variance:
            return _MVNFunction.apply(rows, self.eps).reshape(x.shape)
        return (rows - rows.mean(1, keepdim=True)).reshape(x.shape)


class _MVNFunction(torch.autograd.Function):
    """y = (x - mean) / (std + eps) per row; backward as MVNLayer::Backward_cpu:
    dx = (dy - mean(dy) - y·mean(y·dy)) / (std + eps)."""

    @staticmethod
    def forward(ctx, rows, eps):
        centred = rows - rows.mean(1, keepdim=True)
        scale = (centred * centred).mean(1, keepdim=True).sqrt() + eps
        y = centred / scale
        ctx.save_for_backward(y, scale)
        return y

    @staticmethod
    def backward(ctx, dy):
        y, scale = ctx.saved_tensors
        dx = dy - dy.mean(1, keepdim=True) - y * (y * dy).mean(1, keepdim=True)
        return dx / scale, None
