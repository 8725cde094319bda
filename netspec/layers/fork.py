"""Single layers of released Caffe forks: SegNet's Upsample (alexgkendall/caffe-segnet,
upsample_layer.cpp), ShuffleNet's ShuffleChannel (farmingyard/ShuffleNet), MobileNet's
ConvolutionDepthwise (conv_dw_layer.cpp of the MobileNet-Caffe forks) and SENet's Axpy
(hujie-frank/SENet, axpy_layer.cpp). Field numbers: README "Fork layers".
"""

from __future__ import annotations

import torch

from ..proto import pb
from .base import Layer, register
from .conv import _ConvBase


class _Unpool(torch.autograd.Function):
    """Upsample's scatter through the mask: the last element naming a target wins (the fork's
    loop order); the backward gives every element the diff of its target, winner or not."""

    @staticmethod
    def forward(ctx, x, index, size: int):
        rows, idx = x.reshape(-1, x.shape[-2] * x.shape[-1]), index.reshape(-1, x.shape[-2] * x.shape[-1])
        order = torch.arange(idx.shape[1], device=x.device).expand_as(idx)
        last = torch.full((idx.shape[0], size), -1, dtype=torch.long, device=x.device)
        last = last.scatter_reduce(1, idx, order, "amax")
        wins = last.gather(1, idx) == order
        top = rows.new_zeros(rows.shape[0], size).scatter_add(1, idx, torch.where(wins, rows, 0))
        ctx.save_for_backward(idx)
        ctx.shape = x.shape
        return top

    @staticmethod
    def backward(ctx, grad):
        (idx,) = ctx.saved_tensors
        return grad.gather(1, idx).reshape(ctx.shape), None, None


@register("Upsample")
class Upsample(Layer):
    """Max-unpooling: bottom 0's values placed at the flat positions bottom 1 (a pooling mask)
    names in an upsample_h × upsample_w map (or H·scale - pad_out), zeros elsewhere."""

    exact_bottoms, exact_tops = 2, 1

    def setup(self, bottom_shapes):
        x, mask = bottom_shapes
        if len(x) != 4 or tuple(mask) != tuple(x):
            raise self.shape_error(f"bottoms have shapes {x} and {mask}; Upsample needs two equal N×C×H×W")
        self.size = self._out_size(self.param, x[2], x[3])

    def _out_size(self, p, h: int, w: int) -> tuple[int, int]:
        if p.HasField("upsample_h") and p.HasField("upsample_w"):
            if min(p.upsample_h, p.upsample_w) <= 1:
                raise self.error(f"upsample_h and upsample_w must be > 1, found {p.upsample_h} and {p.upsample_w}")
            return p.upsample_h, p.upsample_w
        if p.HasField("scale_h") or p.HasField("scale_w"):
            if p.HasField("scale") or not (p.HasField("scale_h") and p.HasField("scale_w")):
                raise self.error("give upsample_h and upsample_w, or scale, or scale_h and scale_w together")
            sh, sw = p.scale_h, p.scale_w
        else:
            sh = sw = p.scale
        if min(sh, sw) <= 1:
            raise self.error(f"upsample scale must be > 1, found {sh}×{sw}")
        for pad, s, axis in ((p.pad_out_h, sh, "h"), (p.pad_out_w, sw, "w")):
            if pad and s != 2:
                raise self.error(f"pad_out_{axis} needs scale 2, found {s}")
        return h * sh - int(p.pad_out_h), w * sw - int(p.pad_out_w)

    def infer_top_shapes(self, bottom_shapes):
        return [tuple(bottom_shapes[0][:2]) + tuple(self.size)]

    def forward(self, x, mask):
        size = self.size[0] * self.size[1]
        index = mask.detach().to(torch.long)  # the fork's int cast truncates
        low, high = (int(index.min()), int(index.max())) if index.numel() else (0, 0)
        if low < 0 or high >= size:
            raise self.run_error(f"mask '{self.lp.bottom[1]}' names position {high if high >= size else low}, "
                                 f"outside the {self.size[0]}×{self.size[1]} output; check the scale matches "
                                 "the pooling layer's")
        top = _Unpool.apply(x, index, size)
        return top.reshape(x.shape[0], x.shape[1], *self.size)


@register("ShuffleChannel")
class ShuffleChannel(Layer):
    """Channels read as group × (C/group), written transposed: channel i·(C/g)+j goes to j·g+i."""

    exact_bottoms = exact_tops = 1

    def setup(self, bottom_shapes):
        shape, self.group = bottom_shapes[0], self.param.group
        if self.group <= 0:
            raise self.error(f"shuffle_channel_param group must be > 0, found {self.group}")
        if len(shape) < 2 or shape[1] % self.group:
            raise self.shape_error(f"bottom '{self.lp.bottom[0]}' has shape {shape}; group {self.group} "
                                   "must divide its channels")

    def infer_top_shapes(self, bottom_shapes):
        return [bottom_shapes[0]]

    def forward(self, x):
        n, c = x.shape[:2]
        return x.reshape(n, self.group, c // self.group, *x.shape[2:]).transpose(1, 2).reshape(x.shape)


@register("ConvolutionDepthwise")
class ConvolutionDepthwise(_ConvBase):
    """A convolution with one k_h × k_w filter per channel: weight C×1×k, bias C. Reads
    convolution_param; group and num_output are the bottom's channels whatever they say (the fork
    ignores both); a num_output that is not the channel count is refused, the weights would not fit."""

    exact_bottoms = exact_tops = 1

    def setup(self, bottom_shapes):
        given, shape = self.lp.convolution_param, bottom_shapes[0]
        if len(shape) != 4:
            raise self.shape_error(f"bottom '{self.lp.bottom[0]}' has shape {shape}; "
                                   "ConvolutionDepthwise needs N×C×H×W")
        if given.HasField("num_output") and given.num_output != shape[1]:
            raise self.error(f"num_output {given.num_output} is not the {shape[1]} channels of bottom "
                             f"'{self.lp.bottom[0]}'; a depthwise convolution keeps the channels")
        self._depthwise = pb.ConvolutionParameter()
        self._depthwise.CopyFrom(given)
        self._depthwise.num_output = self._depthwise.group = shape[1]
        self._depthwise.ClearField("axis")
        super().setup(bottom_shapes)

    @property
    def param(self):
        depthwise = self.__dict__.get("_depthwise")
        return depthwise if depthwise is not None else self.lp.convolution_param


@register("Axpy")
class Axpy(Layer):
    """a·x + y with a (N×C or N×C×1×1) scaling each channel of x (SENet's fused Scale + Eltwise)."""

    exact_bottoms, exact_tops = 3, 1

    def setup(self, bottom_shapes):
        a, x, y = bottom_shapes
        if len(x) < 2 or tuple(a[:2]) != tuple(x[:2]) or any(d != 1 for d in a[2:]):
            raise self.shape_error(f"bottom 0 '{self.lp.bottom[0]}' has shape {a}; Axpy needs N×C or "
                                   f"N×C×1×1 matching bottom 1 '{self.lp.bottom[1]}' {x}")
        if tuple(x) != tuple(y):
            raise self.shape_error(f"bottoms 1 and 2 have shapes {x} and {y}; Axpy needs them equal")

    def infer_top_shapes(self, bottom_shapes):
        return [bottom_shapes[1]]

    def forward(self, a, x, y):
        return a.reshape(a.shape[:2] + (1,) * (x.dim() - 2)) * x + y
