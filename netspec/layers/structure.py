"""Layers that move data without arithmetic on it, plus Eltwise (Caffe's concat_layer.cpp,
slice_layer.cpp, split_layer.cpp, flatten_layer.cpp, reshape_layer.cpp, eltwise_layer.cpp,
silence_layer.cpp).
"""

from __future__ import annotations

import itertools
import math

import torch

from ..proto import pb
from .base import Layer, canonical_axis, register

E = pb.EltwiseParameter


def _axis(layer: Layer, legacy: str, num_axes: int) -> int:
    """The param's `axis`, or its legacy never-negative alias (concat_dim, slice_dim) when given."""
    p = layer.param
    if not p.HasField(legacy):
        return canonical_axis(p.axis, num_axes, layer)
    dim = getattr(p, legacy)
    if dim >= num_axes:
        raise layer.shape_error(f"{legacy} {dim} is out of range for a {num_axes}-axis blob")
    return dim


@register("Concat")
class Concat(Layer):
    min_bottoms, exact_tops = 1, 1

    def setup(self, bottom_shapes):
        self.axis = _axis(self, "concat_dim", len(bottom_shapes[0]))

    def infer_top_shapes(self, bottom_shapes):
        first = bottom_shapes[0]
        for i, s in enumerate(bottom_shapes[1:], 1):
            if len(s) != len(first) or self._others(s) != self._others(first):
                raise self.shape_error(
                    f"bottom {i} '{self.lp.bottom[i]}' has shape {s}, bottom 0 has {first}; "
                    f"they may differ only on axis {self.axis}"
                )
        total = sum(s[self.axis] for s in bottom_shapes)
        return [tuple(first[: self.axis]) + (total,) + tuple(first[self.axis + 1 :])]

    def _others(self, shape):
        return tuple(shape[: self.axis]) + tuple(shape[self.axis + 1 :])

    def forward(self, *bottoms):
        return bottoms[0] if len(bottoms) == 1 else torch.cat(bottoms, dim=self.axis)


@register("Slice")
class Slice(Layer):
    exact_bottoms, min_tops = 1, 1

    def setup(self, bottom_shapes):
        self.axis = _axis(self, "slice_dim", len(bottom_shapes[0]))
        self.points = list(self.param.slice_point)
        tops = len(self.lp.top)
        if self.points and len(self.points) != tops - 1:
            raise self.error(f"{len(self.points)} slice_point(s) for {tops} tops; give {tops - 1}")

    def _sizes(self, dim: int, shape) -> list[int]:
        tops = self.num_tops
        if not self.points:
            if dim % tops:
                raise self.shape_error(
                    f"bottom '{self.lp.bottom[0]}' has shape {shape}: {dim} on axis {self.axis} "
                    f"does not split evenly into {tops} tops"
                )
            return [dim // tops] * tops
        edges = [0] + self.points + [dim]
        sizes = [b - a for a, b in itertools.pairwise(edges)]
        if min(sizes) <= 0:
            raise self.shape_error(
                f"slice_point {self.points} must increase strictly inside (0, {dim}), "
                f"the size of axis {self.axis} of bottom shape {shape}"
            )
        return sizes

    def infer_top_shapes(self, bottom_shapes):
        s = bottom_shapes[0]
        return [
            tuple(s[: self.axis]) + (n,) + tuple(s[self.axis + 1 :]) for n in self._sizes(s[self.axis], s)
        ]

    def forward(self, x):
        tops = torch.split(x, self._sizes(x.shape[self.axis], tuple(x.shape)), dim=self.axis)
        return tops[0] if len(tops) == 1 else tuple(tops)


@register("Split")
class Split(Layer):
    """Every top is the bottom; autograd sums the gradients coming back, as Caffe's backward does."""

    exact_bottoms, min_tops = 1, 1

    def infer_top_shapes(self, bottom_shapes):
        return [bottom_shapes[0]] * len(self.lp.top)

    def forward(self, x):
        # A view per top: each top is its own graph node with its own diff, as Caffe's Split tops
        # share the bottom's data but not its diff (and a top of an input blob still has a grad_fn).
        tops = tuple(x.view_as(x) for _ in range(self.num_tops))
        return tops[0] if self.num_tops == 1 else tops


@register("Flatten")
class Flatten(Layer):
    exact_bottoms = exact_tops = 1

    def setup(self, bottom_shapes):
        n = len(bottom_shapes[0])
        self.start = canonical_axis(self.param.axis, n, self)
        self.end = canonical_axis(self.param.end_axis, n, self)
        if self.end < self.start:
            raise self.error(f"end_axis {self.end} comes before axis {self.start}")

    def infer_top_shapes(self, bottom_shapes):
        s = bottom_shapes[0]
        return [
            tuple(s[: self.start]) + (math.prod(s[self.start : self.end + 1]),) + tuple(s[self.end + 1 :])
        ]

    def forward(self, x):
        return x.flatten(self.start, self.end)


@register("Reshape")
class Reshape(Layer):
    """Replace bottom axes [axis, axis + num_axes) by `shape`: 0 copies a dim, one -1 is inferred."""

    exact_bottoms = exact_tops = 1

    def setup(self, bottom_shapes):
        p, n = self.param, len(bottom_shapes[0])
        self.dims = list(p.shape.dim)
        if self.dims.count(-1) > 1:
            raise self.error(f"shape {self.dims} has more than one -1")
        if any(d < -1 for d in self.dims):
            raise self.error(f"shape {self.dims}: dims must be -1, 0 or positive")
        self.start = p.axis if p.axis >= 0 else n + p.axis + 1
        if not 0 <= self.start <= n:
            raise self.shape_error(f"axis {p.axis} is out of range for a {n}-axis blob")
        if p.num_axes < -1:
            raise self.error(f"num_axes must be -1 or more, found {p.num_axes}")
        self.end = n if p.num_axes == -1 else self.start + p.num_axes
        if self.end > n:
            raise self.shape_error(f"axis {self.start} + num_axes {p.num_axes} goes past a {n}-axis blob")

    def infer_top_shapes(self, bottom_shapes):
        s = bottom_shapes[0]
        middle = []
        for i, d in enumerate(self.dims):
            if d == 0:
                if self.start + i >= len(s):
                    raise self.shape_error(
                        f"shape dim {i} is 0 (copy) but bottom shape {s} has no axis {self.start + i}"
                    )
                d = s[self.start + i]
            middle.append(d)
        top = list(s[: self.start]) + middle + list(s[self.end :])
        known = math.prod(d for d in top if d != -1)
        count = math.prod(s)
        if -1 in top:
            if known == 0 or count % known:
                raise self.shape_error(f"bottom shape {s} ({count} values) cannot be reshaped to {top}")
            top[top.index(-1)] = count // known
        if math.prod(top) != count:
            raise self.shape_error(f"bottom shape {s} ({count} values) cannot be reshaped to {top}")
        return [tuple(top)]

    def forward(self, x):
        return x.reshape(self.infer_top_shapes([tuple(x.shape)])[0])


@register("Eltwise")
class Eltwise(Layer):
    """SUM (with optional coefficients), PROD or MAX of same-shaped bottoms.

    MAX routes the gradient to one bottom per element as Caffe does: bottom 1 wins ties against
    bottom 0, later bottoms win only when strictly greater.
    """

    min_bottoms, exact_tops = 2, 1

    def setup(self, bottom_shapes):
        p = self.param
        self.op = p.operation
        self.coeff = list(p.coeff) or None
        if self.coeff is not None:
            if self.op != E.SUM:
                raise self.error("coeff is only for operation SUM")
            if len(self.coeff) != len(bottom_shapes):
                raise self.error(
                    f"{len(self.coeff)} coeff for {len(bottom_shapes)} bottoms; give one per bottom"
                )

    def infer_top_shapes(self, bottom_shapes):
        for i, s in enumerate(bottom_shapes[1:], 1):
            if s != bottom_shapes[0]:
                raise self.shape_error(
                    f"bottom {i} '{self.lp.bottom[i]}' has shape {s}, bottom 0 has "
                    f"{bottom_shapes[0]}; Eltwise needs equal shapes"
                )
        return [bottom_shapes[0]]

    def forward(self, *bottoms):
        if self.op == E.PROD:
            top = bottoms[0]
            for b in bottoms[1:]:
                top = top * b
            return top
        if self.op == E.MAX:
            top = torch.where(bottoms[0] > bottoms[1], bottoms[0], bottoms[1])
            for b in bottoms[2:]:
                top = torch.where(b > top, b, top)
            return top
        if self.coeff is None:
            return sum(bottoms[1:], start=bottoms[0])
        return sum((c * b for c, b in zip(self.coeff[1:], bottoms[1:])), start=self.coeff[0] * bottoms[0])


@register("Silence")
class Silence(Layer):
    """Consumes its bottoms so they are not net outputs; no tops, no gradient."""

    min_bottoms, exact_tops = 1, 0

    def infer_top_shapes(self, bottom_shapes):
        return []

    def forward(self, *bottoms):
        return ()
