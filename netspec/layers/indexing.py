"""Layers that pick, gather or repeat parts of a blob: BatchReindex, Filter, Embed, Crop and Tile
(Caffe's batch_reindex_layer.cpp, filter_layer.cpp, embed_layer.cpp, crop_layer.cpp, tile_layer.cpp).

Index bottoms (BatchReindex's permutation, Filter's selector, Embed's ids) are data, not
differentiable: Caffe refuses to back-propagate to them, and here they are read detached. The
gradient of the gathered bottom is autograd's, which is Caffe's: summed over repeated indices
(BatchReindex, Embed's weight rows), zero for rows that were not forwarded (Filter). Bad indices are
found only when the data arrives, so they are `run_error`s, placed at the layer's file:line.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Layer, WeightBiasLayer, canonical_axis, register


def _indices(layer: Layer, values: torch.Tensor, bound: int, what: str) -> torch.Tensor:
    """`values` truncated to integers (Caffe's static_cast<int>), each checked to lie in [0, bound)."""
    index = values.detach().to(torch.int64)
    bad = (index < 0) | (index >= bound)
    if bool(bad.any()):
        pos = int(bad.flatten().nonzero()[0])
        raise layer.run_error(f"{what} {values.detach().flatten()[pos].item():g} at position {pos} is "
                              f"out of range [0, {bound})")
    return index


@register("BatchReindex")
class BatchReindex(Layer):
    """top[i] = bottom0[permut[i]] along axis 0; permut (bottom 1) is a 1-axis list of indices."""

    exact_bottoms, exact_tops = 2, 1

    def setup(self, bottom_shapes):
        if len(bottom_shapes[1]) != 1:
            raise self.shape_error(f"bottom 1 '{self.lp.bottom[1]}' has shape {bottom_shapes[1]}; "
                                   f"the indices must be a 1-axis blob")

    def infer_top_shapes(self, bottom_shapes):
        return [tuple(bottom_shapes[1][:1]) + tuple(bottom_shapes[0][1:])]

    def forward(self, x, permut):
        index = _indices(self, permut, x.shape[0], f"index (bottom '{self.lp.bottom[1]}')")
        return x.index_select(0, index)


@register("Filter")
class Filter(Layer):
    """Forward the items (axis-0 rows) of every bottom but the last whose selector (the last bottom,
    shape (N,) or (N, 1, ...)) is 1; the tops' batch size depends on the data. Caffe's header asks for
    a 0/1 selector: any other value is an error here."""

    min_bottoms, min_tops = 2, 1

    def setup(self, bottom_shapes):
        if len(self.lp.top) != len(bottom_shapes) - 1:
            raise self.error(f"Filter makes one top per bottom but the selector: {len(bottom_shapes)} "
                             f"bottoms need {len(bottom_shapes) - 1} tops, found {len(self.lp.top)}")
        sel = bottom_shapes[-1]
        if len(sel) < 1 or any(d != 1 for d in sel[1:]):
            raise self.shape_error(f"selector '{self.lp.bottom[-1]}' has shape {sel}; it must be (N,) "
                                   f"or (N, 1, ...)")
        for name, s in zip(self.lp.bottom, bottom_shapes[:-1]):
            if not s or s[0] != sel[0]:
                raise self.shape_error(f"bottom '{name}' has shape {s}; its first axis must be the "
                                       f"selector's {sel[0]}")

    def infer_top_shapes(self, bottom_shapes):
        # Before any data Caffe's first Reshape keeps the whole batch.
        return [tuple(s) for s in bottom_shapes[:-1]]

    def forward(self, *bottoms):
        sel = bottoms[-1].detach().reshape(-1)
        bad = (sel != 0) & (sel != 1)
        if bool(bad.any()):
            pos = int(bad.nonzero()[0])
            raise self.run_error(f"selector '{self.lp.bottom[-1]}' holds {sel[pos].item():g} at item {pos}; "
                                 f"it must be 0 or 1")
        keep = sel.nonzero().reshape(-1)
        tops = tuple(b.index_select(0, keep) for b in bottoms[:-1])
        return tops[0] if len(tops) == 1 else tops


@register("Embed")
class Embed(WeightBiasLayer):
    """A lookup table: each integer id in the bottom (0 <= id < input_dim) becomes weight row id
    (input_dim x num_output) plus the bias; the top has the bottom's shape with num_output appended."""

    exact_bottoms = exact_tops = 1

    def setup(self, bottom_shapes):
        p = self.param
        if p.num_output <= 0:
            raise self.error("embed_param num_output must be given and positive")
        if p.input_dim <= 0:
            raise self.error("embed_param input_dim must be given and positive")
        self.input_dim, self.num_output = p.input_dim, p.num_output
        self.new_weight_bias((self.input_dim, self.num_output), self.num_output)

    def infer_top_shapes(self, bottom_shapes):
        return [tuple(bottom_shapes[0]) + (self.num_output,)]

    def forward(self, ids):
        index = _indices(self, ids, self.input_dim, f"id (bottom '{self.lp.bottom[0]}', input_dim "
                                                   f"{self.input_dim})")
        top = F.embedding(index, self.weight)
        return top + self.bias if self.bias_term else top


@register("Crop")
class Crop(Layer):
    """bottom0 cut to bottom1's size on every axis from `axis` on, starting at `offset` (one value for
    all those axes, or one per axis; none means 0). Bottom 1 only gives the size: no gradient."""

    exact_bottoms, exact_tops = 2, 1

    def setup(self, bottom_shapes):
        p, n = self.param, len(bottom_shapes[0])
        self.axis = canonical_axis(p.axis, n, self)
        self.offset = list(p.offset)
        if len(self.offset) > 1 and self.axis + len(self.offset) != n:
            raise self.error(f"{len(self.offset)} offsets for the {n - self.axis} axes from axis {self.axis}; "
                             f"give 1 or {n - self.axis}")
        if len(bottom_shapes[1]) != n:
            raise self.shape_error(f"bottom '{self.lp.bottom[1]}' has shape {bottom_shapes[1]}, bottom "
                                   f"'{self.lp.bottom[0]}' {bottom_shapes[0]}: they need the same number of axes")

    def _starts(self, n: int) -> list[int]:
        if not self.offset:
            return [0] * n
        return [0] * self.axis + [self.offset[0] if len(self.offset) == 1 else self.offset[i - self.axis]
                                  for i in range(self.axis, n)]

    def infer_top_shapes(self, bottom_shapes):
        data, ref = bottom_shapes
        starts = self._starts(len(data))
        for i in range(self.axis, len(data)):
            if data[i] - starts[i] < ref[i]:
                raise self.shape_error(f"crop of axis {i} to size {ref[i]} at offset {starts[i]} goes past "
                                       f"bottom '{self.lp.bottom[0]}' {tuple(data)}")
        return [tuple(data[: self.axis]) + tuple(ref[self.axis:])]

    def forward(self, x, ref):
        index = tuple(slice(s, s + size) for s, size in zip(self._starts(x.dim()), ref.shape))
        return x[tuple(slice(None) for _ in range(self.axis)) + index[self.axis:]]


@register("Tile")
class Tile(Layer):
    """`tiles` copies of the bottom laid end to end along `axis`: [x, x, x], not [x0 x0 x0 x1 ...]."""

    exact_bottoms = exact_tops = 1

    def setup(self, bottom_shapes):
        p = self.param
        if p.tiles <= 0:
            raise self.error(f"tile_param tiles must be given and positive, found {p.tiles}")
        self.tiles = p.tiles
        self.axis = canonical_axis(p.axis, len(bottom_shapes[0]), self)

    def infer_top_shapes(self, bottom_shapes):
        s = list(bottom_shapes[0])
        s[self.axis] *= self.tiles
        return [tuple(s)]

    def forward(self, x):
        reps = [1] * x.dim()
        reps[self.axis] = self.tiles
        return x.repeat(*reps)

