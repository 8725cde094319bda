"""Pooling: MAX, AVE, STOCHASTIC over 4-axis blobs (Caffe's pooling_layer.cpp / .cu).

Caffe's rules, which torch's pooling does not share in the edge cases:
- output size: ceil((H + 2p - k) / s) + 1 (floor with round_mode FLOOR), minus one when p > 0 and
  the last window would start inside the right padding ((out - 1)·s ≥ H + p);
- MAX windows are clipped to the image (padding never wins);
- AVE divides by the window clipped to the padded extent [-p, H + p) — computed before clipping
  to the image — but sums only the in-image values.
torch's pooling with its own padding and ceil_mode reproduces this whenever its output size agrees
and pad <= kernel/2; otherwise the input is padded explicitly and pooled without either.
The forks' `ceil_mode` (a schema extension) is another name for round_mode.
STOCHASTIC follows Caffe's GPU kernels: TRAIN samples one element per window with probability
proportional to its (non-negative) value; TEST gives the value-weighted mean Σx²/Σx.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..proto import pb
from .base import Layer, register

P = pb.PoolingParameter
_FLT_MIN = 1.1754943508222875e-38
_FLT_MAX = 3.4028234663852886e38


class _MaxPoolChannelsLast(torch.autograd.Function):
    """MAX pooling with a gradient on the CPU: the forward on a channels-last copy, the backward from its
    indices on NCHW tensors. torch's NCHW forward with indices is 4-6x slower than its channels-last
    one on the CPU, and its channels-last backward is slower than the NCHW one; the mixed pair takes
    LeNet's pool1 (64x20x24x24) forward + backward from 9.1 to 4.3 ms on one thread. The indices are
    the same flat h*W + w positions either way (the first maximum of each window in scan order, as
    Caffe's), so values and gradients are identical to torch's NCHW pooling."""

    @staticmethod
    def forward(ctx, x, kernel, stride, pad, ceil):
        y, idx = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), kernel, stride, pad,
                              ceil_mode=ceil, return_indices=True)
        ctx.save_for_backward(x, idx)      # left channels-last: the NCHW backward reads it as well (0.6 ms less)
        ctx.geometry = (list(kernel), list(stride), list(pad), bool(ceil))
        return y.contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, idx = ctx.saved_tensors
        kernel, stride, pad, ceil = ctx.geometry
        dx = torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), x, kernel, stride, pad, [1, 1],
                                                              ceil, idx)
        return dx, None, None, None, None


@register("Pooling")
class Pooling(Layer):
    exact_bottoms = 1
    min_tops, max_tops = 1, 2  # MAX may output its argmax mask as top 1

    def _hw(self, p, one: str, h: str, w: str, default):
        if p.HasField(h) or p.HasField(w):
            if p.HasField(one):
                raise self.error(f"give either {one} or {h} and {w}, not both")
            if not (p.HasField(h) and p.HasField(w)):
                raise self.error(f"{h} and {w} must be given together")
            return getattr(p, h), getattr(p, w)
        if default is None and not p.HasField(one):
            raise self.error(f"{one} (or {h} and {w}) is required")
        return (getattr(p, one),) * 2

    def setup(self, bottom_shapes):
        p, shape = self.param, bottom_shapes[0]
        if len(shape) != 4:
            raise self.shape_error(
                f"bottom '{self.lp.bottom[0]}' has shape {shape}; Pooling needs 4 axes (N, C, H, W)"
            )
        self.method = p.pool
        if len(self.lp.top) == 2 and self.method != P.MAX:
            raise self.error("only MAX pooling has a second (mask) top")
        self.pad = self._hw(p, "pad", "pad_h", "pad_w", 0)
        self.stride = self._hw(p, "stride", "stride_h", "stride_w", 1)
        self.global_pooling = p.global_pooling
        if p.global_pooling:
            if p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w"):
                raise self.error("global_pooling takes its kernel from the bottom; give no kernel size")
            if self.pad != (0, 0) or self.stride != (1, 1):
                raise self.error("global_pooling needs pad 0 and stride 1")
            self.kernel = tuple(shape[2:])
        else:
            self.kernel = self._hw(p, "kernel_size", "kernel_h", "kernel_w", None)
        if min(self.kernel) <= 0 or min(self.stride) <= 0:
            raise self.error(f"kernel {self.kernel} and stride {self.stride} must be positive")
        if self.pad != (0, 0):
            if self.method == P.STOCHASTIC:
                raise self.error("padding is implemented only for MAX and AVE pooling")
            if self.pad[0] >= self.kernel[0] or self.pad[1] >= self.kernel[1]:
                raise self.error(f"pad {self.pad} must be smaller than kernel {self.kernel}")
        self.ceil = self._rounds_up(p)

    def _rounds_up(self, p) -> bool:
        """round_mode, or the forks' ceil_mode (OpenCV's field 1013) when given: the same rounding of
        the output size, named twice; both given with different meanings is refused."""
        if not p.HasField("ceil_mode"):
            return p.round_mode == P.CEIL
        if p.HasField("round_mode") and (p.round_mode == P.CEIL) != p.ceil_mode:
            raise self.error(f"ceil_mode: {str(p.ceil_mode).lower()} contradicts round_mode: "
                             f"{P.RoundMode.Name(p.round_mode)}; give one of them")
        return p.ceil_mode

    def _out_size(self, size: int, i: int) -> int:
        k, s, p = self.kernel[i], self.stride[i], self.pad[i]
        rnd = math.ceil if self.ceil else math.floor
        out = int(rnd((size + 2 * p - k) / s)) + 1
        if p > 0 and (out - 1) * s >= size + p:
            out -= 1
        return out

    def _reshape(self, shape):
        """Caffe's Reshape: global pooling takes its kernel from the current bottom."""
        if self.global_pooling:
            self.kernel = (int(shape[2]), int(shape[3]))

    def infer_top_shapes(self, bottom_shapes):
        self._reshape(bottom_shapes[0])
        n, c, h, w = bottom_shapes[0]
        if h + 2 * self.pad[0] < self.kernel[0] or w + 2 * self.pad[1] < self.kernel[1]:
            raise self.shape_error(
                f"bottom '{self.lp.bottom[0]}' has shape {bottom_shapes[0]}, smaller than "
                f"kernel {self.kernel} with pad {self.pad}"
            )
        top = (n, c, self._out_size(h, 0), self._out_size(w, 1))
        return [top] * len(self.lp.top)

    def _padded(self, x, out, value):
        """x padded by `pad` on the left and far enough on the right for `out` whole windows."""
        rights = [
            max(0, (o - 1) * s + k - size - p)
            for o, s, k, size, p in zip(out, self.stride, self.kernel, x.shape[2:], self.pad)
        ]
        return F.pad(x, (self.pad[1], rights[1], self.pad[0], rights[0]), value=value)

    def _divisor(self, x, out):
        """Caffe's pool_size per output cell: the window clipped to [-p, size + p)."""
        sizes = []
        for o, s, k, size, p in zip(out, self.stride, self.kernel, x.shape[2:], self.pad):
            start = torch.arange(o, device=x.device) * s - p
            sizes.append((torch.clamp(start + k, max=size + p) - start).to(x.dtype))
        return sizes[0][:, None] * sizes[1][None, :]

    def _native(self, x, out) -> bool:
        """Whether torch's own padding and ceil_mode give Caffe's windows: they do (its AVE divisor is
        Caffe's pool_size too) whenever its output size agrees and pad <= kernel/2, torch's limit."""
        for o, size, k, s, p in zip(out, x.shape[2:], self.kernel, self.stride, self.pad):
            t = (size + 2 * p - k + (s - 1 if self.ceil else 0)) // s + 1
            if self.ceil and (t - 1) * s >= size + p:
                t -= 1
            if p > k // 2 or t != o:
                return False
        return True

    @staticmethod
    def _fast_layout(x):
        """On the CPU torch pools channels-last tensors several times faster than NCHW ones when no
        gradient is wanted (inference); the values are the same. (MAX with a gradient: _MaxPoolChannelsLast.)"""
        if (x.device.type == "cpu" and x.dim() == 4 and not x.requires_grad and x.is_contiguous()
                and x.numel() >= 1 << 16):       # below that the two copies cost more than they save
            return x.contiguous(memory_format=torch.channels_last), True
        return x, False

    def _max(self, x, out):
        if not self._native(x, out):
            return self._max_explicit(x, out)
        if self.num_tops == 1 and x.requires_grad and x.device.type == "cpu" and x.dim() == 4 \
                and x.numel() >= 1 << 16 and torch.is_grad_enabled():
            return _MaxPoolChannelsLast.apply(x, self.kernel, self.stride, self.pad, self.ceil)
        if self.num_tops == 1:
            xl, moved = self._fast_layout(x)
            y = F.max_pool2d(xl, self.kernel, self.stride, self.pad, ceil_mode=self.ceil)
            return y.contiguous() if moved else y
        y, idx = F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil, return_indices=True)
        return y, idx.to(x.dtype)  # Caffe's mask: the flat in-image index h·W + w, as a float

    def _max_explicit(self, x, out):
        xp = self._padded(x, out, float("-inf"))
        y, idx = F.max_pool2d(xp, self.kernel, self.stride, return_indices=True)
        y, idx = y[:, :, : out[0], : out[1]], idx[:, :, : out[0], : out[1]]
        if any((o - 1) * s - p >= size for o, s, p, size in zip(out, self.stride, self.pad, x.shape[2:])):
            y = y.clamp(min=-_FLT_MAX)  # a window wholly past the image: Caffe's start value -FLT_MAX
        if self.num_tops == 1:
            return y
        hp, wp = idx // xp.shape[3], idx % xp.shape[3]
        mask = (hp - self.pad[0]) * x.shape[3] + (wp - self.pad[1])
        return y, mask.to(x.dtype)

    def _ave(self, x, out):
        if self._native(x, out):
            xl, moved = self._fast_layout(x)
            y = F.avg_pool2d(xl, self.kernel, self.stride, self.pad, ceil_mode=self.ceil, count_include_pad=True)
            return y.contiguous() if moved else y
        return self._ave_explicit(x, out)

    def _ave_explicit(self, x, out):
        xp = self._padded(x, out, 0.0)
        total = F.avg_pool2d(xp, self.kernel, self.stride, divisor_override=1)[:, :, : out[0], : out[1]]
        return total / self._divisor(x, out)

    def _stochastic(self, x, out):
        xp = self._padded(x, out, 0.0)
        if self.phase != pb.TRAIN:
            s1 = F.avg_pool2d(xp, self.kernel, self.stride, divisor_override=1)[:, :, : out[0], : out[1]]
            s2 = F.avg_pool2d(xp * xp, self.kernel, self.stride, divisor_override=1)[:, :, : out[0], : out[1]]
            return s2 / (s1 + _FLT_MIN)
        return self._sample(x, xp, out)

    def _windows(self, xp, out):
        """(N·C, k_h·k_w, out_h·out_w): the elements of every pooling window."""
        nc = xp.shape[0] * xp.shape[1]
        cols = F.unfold(xp.reshape(nc, 1, *xp.shape[2:]), self.kernel, stride=self.stride)
        full = [(size - k) // s + 1 for size, k, s in zip(xp.shape[2:], self.kernel, self.stride)]
        cols = cols.reshape(nc, -1, *full)[:, :, : out[0], : out[1]]
        return cols.reshape(nc, cols.shape[1], -1)

    def _sample(self, x, xp, out):
        cols = self._windows(xp, out)
        real = self._windows(self._padded(torch.ones_like(x[:1, :1]), out, 0.0), out) > 0
        # Pick the first element whose running sum reaches u·(window sum), as Caffe's kernel does.
        cum = cols.detach().cumsum(dim=1)
        thres = torch.rand(cum[:, :1].shape, device=x.device) * cum[:, -1:]
        pick = ((cum >= thres) & real).to(torch.int8).argmax(dim=1, keepdim=True)
        return cols.gather(1, pick).reshape(x.shape[0], x.shape[1], out[0], out[1])

    def forward(self, x):
        self._reshape(x.shape)
        out = (self._out_size(x.shape[2], 0), self._out_size(x.shape[3], 1))
        if self.method == P.MAX:
            return self._max(x, out)
        if self.method == P.AVE:
            return self._ave(x, out)
        return self._stochastic(x, out)
