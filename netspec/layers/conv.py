"""Convolution and Deconvolution (Caffe's base_conv_layer.cpp, conv_layer.cpp, deconv_layer.cpp).

Weights are (num_output, C/group, k...) for Convolution and (C, num_output/group, k...) for
Deconvolution, exactly Caffe's blob layout, which is also torch's. The axes before `axis` are
flattened into the batch; the axes after it are the 1 to 3 spatial axes.

netspec extension: `LayerParameter.device` may name one logical device per group; the compiler
then sets `group_devices` and each group runs on its own device (the paper's two-GPU AlexNet),
its output gathered onto the first group's device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import WeightBiasLayer, canonical_axis, register

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


class _ConvBase(WeightBiasLayer):
    min_bottoms = 1
    transposed = False

    def _spatial(self, name: str, n: int, default: int) -> tuple[int, ...]:
        """A repeated spatial field (kernel_size/pad/stride/dilation) with its _h/_w form."""
        p = self.param
        hw = {
            "kernel_size": ("kernel_h", "kernel_w"),
            "pad": ("pad_h", "pad_w"),
            "stride": ("stride_h", "stride_w"),
        }.get(name)
        if hw and (p.HasField(hw[0]) or p.HasField(hw[1])):
            if n != 2:
                raise self.error(f"{hw[0]}/{hw[1]} are for 2 spatial axes, the bottom has {n}")
            if len(getattr(p, name)):
                raise self.error(f"give either {name} or {hw[0]}/{hw[1]}, not both")
            return (getattr(p, hw[0]), getattr(p, hw[1]))
        values = tuple(getattr(p, name))
        if not values:
            if default is None:
                raise self.error("kernel_size (or kernel_h and kernel_w) is required")
            return (default,) * n
        if len(values) not in (1, n):
            raise self.error(f"{name} has {len(values)} values; give 1 or one per spatial axis ({n})")
        return values * n if len(values) == 1 else values

    def setup(self, bottom_shapes):
        shape = bottom_shapes[0]
        if len(self.lp.top) != len(bottom_shapes):
            raise self.error(
                f"{self.type} makes one top per bottom: {len(bottom_shapes)} bottom(s), "
                f"{len(self.lp.top)} top(s)"
            )
        for i, s in enumerate(bottom_shapes[1:], 1):
            if s != shape:
                raise self.shape_error(
                    f"bottom {i} '{self.lp.bottom[i]}' has shape {s}, bottom 0 has {shape}; "
                    "all bottoms must have the same shape"
                )
        p = self.param
        self.axis = canonical_axis(p.axis, len(shape), self)
        n = len(shape) - self.axis - 1
        if n not in _CONV:
            raise self.shape_error(
                f"bottom '{self.lp.bottom[0]}' has shape {shape}: {n} spatial axes after "
                f"axis {self.axis}, netspec supports 1 to 3"
            )
        self.kernel = self._spatial("kernel_size", n, None)
        self.pad = self._spatial("pad", n, 0)
        self.stride = self._spatial("stride", n, 1)
        self.dilation = self._spatial("dilation", n, 1)
        self.group, self.num_output, channels = p.group, p.num_output, shape[self.axis]
        if self.num_output == 0:
            raise self.error("num_output must be given and positive")
        for what, v in (("channels", channels), ("num_output", self.num_output)):
            if v % self.group:
                raise self.shape_error(
                    f"bottom '{self.lp.bottom[0]}' has shape {shape}: group {self.group} "
                    f"does not divide {what} {v}"
                )
        if self.transposed:
            w_shape = (channels, self.num_output // self.group) + self.kernel
        else:
            w_shape = (self.num_output, channels // self.group) + self.kernel
        self.new_weight_bias(w_shape, self.num_output)
        self.group_devices: list[torch.device] | None = None

    def _conv(self, x, weight, bias, groups):
        f = (_DECONV if self.transposed else _CONV)[len(self.kernel)]
        return f(x, weight, bias, stride=self.stride, padding=self.pad, dilation=self.dilation, groups=groups)

    def _grouped_on_devices(self, x):
        """Each group on its own device; outputs concatenated on group_devices[0]."""
        xs = x.chunk(self.group, dim=1)
        ws = self.weight.chunk(self.group, dim=0)
        bs = self.bias.chunk(self.group, dim=0) if self.bias_term else [None] * self.group
        if len(self.group_devices) != self.group:
            raise self.error(f"{len(self.group_devices)} group devices for group {self.group}")
        home = self.group_devices[0]
        outs = []
        for xg, wg, bg, dev in zip(xs, ws, bs, self.group_devices):
            bg = bg.to(dev) if bg is not None else None
            outs.append(self._conv(xg.to(dev), wg.to(dev), bg, 1).to(home))
        return torch.cat(outs, dim=1)

    def _one(self, x):
        lead = x.shape[: self.axis]
        x = x.reshape((math.prod(lead),) + tuple(x.shape[self.axis :]))
        if self.group_devices is not None and self.group > 1:
            y = self._grouped_on_devices(x)
        else:
            y = self._conv(x, self.weight, self.bias if self.bias_term else None, self.group)
        return y.reshape(tuple(lead) + tuple(y.shape[1:]))

    def forward(self, *bottoms):
        tops = tuple(self._one(x) for x in bottoms)
        return tops[0] if len(tops) == 1 else tops

    def infer_top_shapes(self, bottom_shapes):
        out = []
        for s in bottom_shapes:
            spatial = []
            for i, (k, p, st, d) in enumerate(zip(self.kernel, self.pad, self.stride, self.dilation)):
                extent, size = d * (k - 1) + 1, s[self.axis + 1 + i]
                o = st * (size - 1) + extent - 2 * p if self.transposed else (size + 2 * p - extent) // st + 1
                if o <= 0:
                    raise self.shape_error(
                        f"bottom '{self.lp.bottom[0]}' has shape {s}: spatial axis {i} of size "
                        f"{size} gives output size {o} with kernel {k}, pad {p}, stride {st}, "
                        f"dilation {d}"
                    )
                spatial.append(o)
            out.append(tuple(s[: self.axis]) + (self.num_output,) + tuple(spatial))
        return out


@register("Convolution")
class Convolution(_ConvBase):
    """Cross-correlation with Caffe's kernel/pad/stride/dilation/group rules."""


@register("Deconvolution")
class Deconvolution(_ConvBase):
    """Transposed convolution; output = stride·(in-1) + dilation·(k-1) + 1 - 2·pad."""

    transposed = True
