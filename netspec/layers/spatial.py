"""Spatial rearrangements: Im2col and SPP (Caffe's im2col_layer.cpp, spp_layer.cpp).

Im2col lays every convolution window out as a column: the top is (N, C·k₁·k₂…, out₁, out₂, …) with
Caffe's column order (channel, then kernel offsets row-major), for any number of spatial axes.
SPP pools the bottom at pyramid_height levels — level l into 2^l x 2^l bins, with the kernel, stride
and padding SPPLayer::GetPoolingParam picks so one level covers the whole image — and concatenates
the flattened levels; a one-level pyramid is that single pooling, top (N, C, 1, 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..proto import pb
from .base import Layer, canonical_axis, register
from .conv import _ConvBase
from .pooling import Pooling


@register("Im2col")
class Im2col(Layer):
    """Reads convolution_param's kernel/pad/stride/dilation (and axis); num_output is not used."""

    exact_bottoms = exact_tops = 1
    _spatial = _ConvBase._spatial

    @property
    def param(self):
        return self.lp.convolution_param

    def setup(self, bottom_shapes):
        shape = bottom_shapes[0]
        self.axis = canonical_axis(self.param.axis, len(shape), self)
        n = len(shape) - self.axis - 1
        if n < 1:
            raise self.shape_error(f"bottom '{self.lp.bottom[0]}' has shape {shape}: no spatial axis after "
                                   f"axis {self.axis}")
        self.kernel = self._spatial("kernel_size", n, None)
        self.pad = self._spatial("pad", n, 0)
        self.stride = self._spatial("stride", n, 1)
        self.dilation = self._spatial("dilation", n, 1)
        for what, v in (("kernel", self.kernel), ("stride", self.stride), ("dilation", self.dilation)):
            if min(v) <= 0:
                raise self.error(f"{what} {v} must be positive")

    def infer_top_shapes(self, bottom_shapes):
        shape = bottom_shapes[0]
        out = []
        for size, k, p, s, d in zip(shape[self.axis + 1:], self.kernel, self.pad, self.stride, self.dilation):
            o = (size + 2 * p - (d * (k - 1) + 1)) // s + 1
            if o <= 0:
                raise self.shape_error(f"bottom '{self.lp.bottom[0]}' has shape {shape}, smaller than kernel "
                                       f"{self.kernel} with pad {self.pad} and dilation {self.dilation}")
            out.append(o)
        return [tuple(shape[: self.axis]) + (shape[self.axis] * math.prod(self.kernel),) + tuple(out)]

    def forward(self, x):
        lead, c = x.shape[: self.axis], x.shape[self.axis]
        n = len(self.kernel)
        cols = x.reshape((-1, c) + tuple(x.shape[self.axis + 1:]))
        cols = F.pad(cols, [p for p in reversed(self.pad) for _ in (0, 1)])
        for i, (k, s, d) in enumerate(zip(self.kernel, self.stride, self.dilation)):
            # windows along spatial axis i become a trailing axis of span d·(k-1)+1, every d-th kept
            cols = cols.unfold(2 + i, d * (k - 1) + 1, s)[..., ::d]
        # (B, C, out..., k...) -> (B, C, k..., out...): Caffe's row = (c, k₁, k₂, ...)
        order = [0, 1] + list(range(2 + n, 2 + 2 * n)) + list(range(2, 2 + n))
        cols = cols.permute(order)
        out = cols.shape[2 + n:]
        return cols.reshape(tuple(lead) + (c * math.prod(self.kernel),) + tuple(out))


@register("SPP")
class SPP(Layer):
    exact_bottoms = exact_tops = 1

    def setup(self, bottom_shapes):
        shape = bottom_shapes[0]
        if len(shape) != 4:
            raise self.shape_error(f"bottom '{self.lp.bottom[0]}' has shape {shape}; SPP needs 4 axes (N, C, H, W)")
        if shape[2] <= 0 or shape[3] <= 0:
            raise self.shape_error(f"bottom '{self.lp.bottom[0]}' has shape {shape}; H and W must be positive")
        self.height = self.param.pyramid_height
        if self.height < 1:
            raise self.error(f"spp_param pyramid_height must be given and at least 1, found {self.height}")
        self._levels: dict[tuple[int, int], list[Pooling]] = {}

    def _pools(self, h: int, w: int) -> list[Pooling]:
        """The level poolings for an h x w bottom (rebuilt when the bottom's size changes, as Caffe's Reshape)."""
        if (h, w) not in self._levels:
            self._levels[(h, w)] = [self._pooling(level, h, w) for level in range(self.height)]
        return self._levels[(h, w)]

    def _pooling(self, level: int, h: int, w: int) -> Pooling:
        bins = 2 ** level
        kh, kw = math.ceil(h / bins), math.ceil(w / bins)
        pp = pb.PoolingParameter(pool=self.param.pool, kernel_h=kh, kernel_w=kw, stride_h=kh, stride_w=kw,
                                 pad_h=(kh * bins - h + 1) // 2, pad_w=(kw * bins - w + 1) // 2)
        lp = pb.LayerParameter(name=self.name, type="Pooling", bottom=list(self.lp.bottom), top=["level"],
                               pooling_param=pp)
        if pp.pad_h >= kh or pp.pad_w >= kw:   # Caffe's PoolingLayer refuses it (CHECK_LT pad, kernel)
            raise self.shape_error(f"pyramid level {level} ({bins}x{bins} bins) of a {h}x{w} bottom needs pad "
                                   f"({pp.pad_h}, {pp.pad_w}) not smaller than kernel ({kh}, {kw}); lower "
                                   f"pyramid_height or enlarge the input")
        return Pooling(lp, [(1, 1, h, w)], self.phase)

    def infer_top_shapes(self, bottom_shapes):
        n, c, h, w = bottom_shapes[0]
        tops = [pool.infer_top_shapes([(n, c, h, w)])[0] for pool in self._pools(h, w)]
        if self.height == 1:
            return tops
        return [(n, sum(math.prod(t[1:]) for t in tops))]

    def forward(self, x):
        levels = [pool(x) for pool in self._pools(x.shape[2], x.shape[3])]
        if self.height == 1:
            return levels[0]
        return torch.cat([y.flatten(1) for y in levels], 1)
