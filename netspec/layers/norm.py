"""Normalisation layers: LRN, BatchNorm, Scale, Bias (Caffe's lrn_layer.cpp, batch_norm_layer.cpp,
scale_layer.cpp, bias_layer.cpp).

LRN (Krizhevsky et al. 2012, section 3.3) has two regions:
- ACROSS_CHANNELS: y = x · (k + α/n · Σ x²)^-β, the sum over n channels centred on each, zero padded;
- WITHIN_CHANNEL: y = x · (1 + α · AVE_POOL_{nxn}(x²))^-β. Caffe builds it from its Pooling layer
  (pad (n-1)/2, stride 1), whose divisor is always n² here, and from a Power layer with shift 1:
  `k` is not used.
BatchNorm keeps Caffe's three blobs: running mean and variance sums and their scale factor; the
statistics are those sums divided by the factor (factor 0 reads as 0). It has no learned affine
part: Caffe pairs it with a Scale layer.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from ..proto import pb
from .base import Layer, canonical_axis, register


_ONE_OPERATOR = False     # set by lrn_as_one_operator()


@contextlib.contextmanager
def lrn_as_one_operator():
    """Inside: LRN across channels is the one operator netspec::lrn_across, for netspec's ONNX export
    through torch.export (onnx_translations() maps it to ONNX's LRN). netspec says so itself rather
    than asking torch.compiler.is_exporting(): torch 2.11's dynamo answers True inside torch.compile
    too, which put the operator (no autograd formula) into compiled training steps."""
    global _ONE_OPERATOR
    before, _ONE_OPERATOR = _ONE_OPERATOR, True
    try:
        yield
    finally:
        _ONE_OPERATOR = before


def _exporting() -> bool:
    return _ONE_OPERATOR or torch.onnx.is_in_onnx_export()


@torch.library.custom_op("netspec::lrn_across", mutates_args=())
def lrn_across(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """Caffe's ACROSS_CHANNELS LRN as one operator, for exporters: ONNX's LRN computes the same
    x / (k + alpha/size * sum of x^2 over `size` channels centred on each)^beta (netspec/export_onnx.py
    writes it as that node)."""
    return x * torch.pow(k + (alpha / size) * _window_sums(x * x, size), -beta)


@lrn_across.register_fake
def _(x, size, alpha, beta, k):
    return torch.empty_like(x)


def _window_sums(sq: torch.Tensor, size: int) -> torch.Tensor:
    """The sums of `sq` over the `size` channels centred on each channel, zero beyond the edges, as
    2·pre shifted adds onto the centre: several times faster on the CPU than a 3-D average pooling, and
    windows longer than the channel axis need no special case."""
    total = sq.clone()
    for d in range(1, (size - 1) // 2 + 1):    # add_ on the view: `+=` on a slice also copies it onto itself
        total[:, d:].add_(sq[:, :-d])
        total[:, :-d].add_(sq[:, d:])
    return total


def onnx_translations() -> dict:
    """For torch.onnx.export(dynamo=True, custom_translation_table=...): lrn_across as ONNX's LRN."""
    from onnxscript import opset18 as op

    def lrn(x, size: int, alpha: float, beta: float, k: float):
        return op.LRN(x, size=size, alpha=alpha, beta=beta, bias=k)

    return {torch.ops.netspec.lrn_across.default: lrn}


def _lrn_symbolic(g, x, size, alpha, beta, k):
    from torch.onnx import symbolic_helper as sh

    return g.op("LRN", x, size_i=sh._get_const(size, "i", "size"), alpha_f=sh._get_const(alpha, "f", "alpha"),
                beta_f=sh._get_const(beta, "f", "beta"), bias_f=sh._get_const(k, "f", "k"))


def _register_torchscript_symbolic() -> None:
    """lrn_across as ONNX's LRN for the TorchScript exporter (registered on its first export)."""
    torch.onnx.register_custom_op_symbolic("netspec::lrn_across", _lrn_symbolic, 9)


@register("LRN")
class LRN(Layer):
    exact_bottoms = exact_tops = 1

    def setup(self, bottom_shapes):
        p, shape = self.param, bottom_shapes[0]
        if len(shape) != 4:
            raise self.shape_error(
                f"bottom '{self.lp.bottom[0]}' has shape {shape}; LRN needs 4 axes (N, C, H, W)"
            )
        if p.local_size % 2 == 0:
            raise self.error(f"local_size must be odd, found {p.local_size}")
        self.size, self.alpha, self.beta, self.k = p.local_size, p.alpha, p.beta, p.k
        self.across = p.norm_region == pb.LRNParameter.ACROSS_CHANNELS

    def infer_top_shapes(self, bottom_shapes):
        return [bottom_shapes[0]]

    def forward(self, x):
        if self.across and _exporting():   # one ONNX LRN node (same formula), not the shifted adds
            if torch.onnx.is_in_onnx_export():
                _register_torchscript_symbolic()
            return lrn_across(x, self.size, self.alpha, self.beta, self.k)
        return self._lrn(x)

    def _lrn(self, x):
        # In float32 whatever autocast gave us: x² overflows float16 from |x| = 256 (AlexNet's conv1
        # on 0-255 pixels reaches that), and the loss scaler would then shrink for ever.
        out_dtype = x.dtype
        if self.across and torch.is_grad_enabled() and x.requires_grad:
            # training: Caffe's closed-form backward, two saved tensors instead of a chain of them
            return _AcrossChannels.apply(x, self, out_dtype)
        x = x.float()
        if self.across:
            scale = self._across_scale(x)
            if self.k > 0 and self.alpha >= 0:      # inference: no new tensors
                return scale.log_().mul_(-self.beta).exp_().mul_(x).to(out_dtype)
        else:
            pre = (self.size - 1) // 2
            sq = x * x
            if min(x.shape[2:]) < self.size:
                sq, pad = F.pad(sq, (pre, pre, pre, pre)), 0
            else:
                pad = pre
            mean = F.avg_pool2d(sq, self.size, stride=1, padding=pad, count_include_pad=True)
            scale = 1.0 + self.alpha * mean
        return (x * self._power(scale)).to(out_dtype)

    def _across_scale(self, x):
        """Caffe's k + (alpha/n)·Σ x² over the n-channel window centred on each channel (float32)."""
        return _window_sums(x * x, self.size).mul_(self.alpha / self.size).add_(self.k)

    def _power(self, scale):
        """scale^-beta. Where scale is surely positive (k > 0 or the within-channel 1, alpha >= 0) as
        exp(-beta·log(scale)): about 3x faster than a fractional pow on the CPU, within 2e-7."""
        base = self.k if self.across else 1.0
        if base > 0 and self.alpha >= 0:
            return torch.exp(torch.log(scale) * -self.beta)
        return scale.pow(-self.beta)


class _AcrossChannels(torch.autograd.Function):
    """ACROSS_CHANNELS LRN for training with Caffe's own backward (lrn_layer.cpp,
    CrossChannelBackward): dx = dy·scale^-β − (2αβ/n)·x·Σ_window(dy·y/scale). Autograd through the
    forward's shifted adds, log and exp keeps every intermediate and runs about twice the kernels;
    this keeps the input (in its own dtype) and the scale. The forward is the layer's own, the
    arithmetic float32 whatever autocast gave (x² overflows float16 from |x| = 256)."""

    @staticmethod
    def forward(ctx, x, layer, out_dtype):
        xf = x.float()
        scale = layer._across_scale(xf)
        ctx.save_for_backward(x, scale)
        ctx.layer = layer
        y = xf * layer._power(scale)
        # No .to() when the dtype is already right: torch 2.11's dynamo, compiling this Function,
        # then sent the gradient to the wrong output (dx all zeros under torch.compile).
        return y if y.dtype == out_dtype else y.to(out_dtype)

    @staticmethod
    def backward(ctx, dy):
        x, scale = ctx.saved_tensors
        layer = ctx.layer
        xf, dyf = x.float(), dy.float()
        power = layer._power(scale)                           # scale^-β
        ratio = dyf * xf * power / scale                      # dy·y/scale
        coeff = 2.0 * layer.alpha * layer.beta / layer.size
        dx = dyf * power - coeff * xf * _window_sums(ratio, layer.size)
        return dx.to(x.dtype), None, None


@register("BatchNorm")
class BatchNorm(Layer):
    exact_bottoms = exact_tops = 1
    blob_names = ("mean", "variance", "scale_factor")

    def setup(self, bottom_shapes):
        p, shape = self.param, bottom_shapes[0]
        for i, spec in enumerate(self.lp.param):
            if spec.lr_mult != 0:
                raise self.error(
                    f"param {i} has lr_mult {spec.lr_mult}; BatchNorm statistics are not learned "
                    "(lr_mult must be 0)"
                )
        self.use_global_stats = (
            p.use_global_stats if p.HasField("use_global_stats") else self.phase == pb.TEST
        )
        self.maf, self.eps = p.moving_average_fraction, p.eps
        self.channels = shape[1] if len(shape) > 1 else 1
        for name, n in zip(self.blob_names, (self.channels, self.channels, 1)):
            self.new_blob(name, (n,), requires_grad=False)

    def infer_top_shapes(self, bottom_shapes):
        return [bottom_shapes[0]]

    def _view(self, v, x):
        return v.reshape((1, -1) + (1,) * (x.dim() - 2)) if x.dim() > 1 else v

    def forward(self, x):
        if x.dim() > 1 and x.shape[1] != self.channels:
            raise self.shape_error(
                f"bottom has {x.shape[1]} channels, the layer was set up for {self.channels}"
            )
        if self.use_global_stats:
            sf = self.scale_factor[0]
            inv = torch.where(sf == 0, torch.zeros_like(sf), 1.0 / sf)
            mean, var = self.mean * inv, self.variance * inv
        else:
            dims = [d for d in range(x.dim()) if d != 1] if x.dim() > 1 else [0]
            mean = x.mean(dim=dims)
            var = ((x - self._view(mean, x)) ** 2).mean(dim=dims)  # biased, as Caffe's E((X-EX)²)
            self._update_stats(mean.detach(), var.detach(), x.numel() // self.channels)
        return (x - self._view(mean, x)) / self._view(torch.sqrt(var + self.eps), x)

    def _update_stats(self, mean, var, m: int):
        """Caffe's running sums: factor·maf + 1, mean·maf + μ, variance·maf + m/(m-1)·σ²."""
        with torch.no_grad():
            self.scale_factor.mul_(self.maf).add_(1.0)
            self.mean.mul_(self.maf).add_(mean)
            self.variance.mul_(self.maf).add_(var * (m / (m - 1) if m > 1 else 1.0))


class _Affine(Layer):
    """Shared shape logic of Scale and Bias: a blob broadcast over bottom axes [axis, axis+num_axes)."""

    min_bottoms, max_bottoms = 1, 2
    exact_tops = 1

    def _operand_shape(self, bottom_shapes, axis: int, num_axes: int):
        """Axis where the operand starts, and its shape, for the 1- or 2-bottom form."""
        shape = bottom_shapes[0]
        if len(bottom_shapes) == 2:
            other = bottom_shapes[1]
            start = 0 if len(other) == 0 else canonical_axis(axis, len(shape), self)
            if tuple(shape[start : start + len(other)]) != tuple(other):
                raise self.shape_error(
                    f"bottom 1 '{self.lp.bottom[1]}' has shape {other}, which does not match "
                    f"bottom 0 {shape} from axis {start}"
                )
            return start, tuple(other)
        start = canonical_axis(axis, len(shape), self) if shape else 0
        if num_axes < -1:
            raise self.error(f"num_axes must be -1 or more, found {num_axes}")
        end = len(shape) if num_axes == -1 else start + num_axes
        if end > len(shape):
            raise self.shape_error(
                f"bottom '{self.lp.bottom[0]}' has shape {shape}: axis {start} + num_axes "
                f"{num_axes} goes past its last axis"
            )
        return start, tuple(shape[start:end])

    def _broadcast(self, v, x):
        return v.reshape((1,) * self.start + tuple(v.shape) + (1,) * (x.dim() - self.start - v.dim()))

    def infer_top_shapes(self, bottom_shapes):
        return [bottom_shapes[0]]


@register("Scale")
class Scale(_Affine):
    """y = x · scale (+ bias); scale is blob 0, or bottom 1 in the two-bottom form."""

    def setup(self, bottom_shapes):
        p = self.param
        self.start, shape = self._operand_shape(bottom_shapes, p.axis, p.num_axes)
        names = []
        if len(bottom_shapes) == 1:
            self.new_blob("scale", shape)
            names.append("scale")
        self.bias_term = p.bias_term
        if self.bias_term:
            self.new_blob("bias", shape)
            names.append("bias")
        self.blob_names = tuple(names)

    def filler(self, blob_name):
        p = self.param
        if blob_name == "bias":
            return p.bias_filler if p.HasField("bias_filler") else None
        return p.filler if p.HasField("filler") else pb.FillerParameter(type="constant", value=1.0)

    def forward(self, x, scale=None):
        y = x * self._broadcast(self.scale if scale is None else scale, x)
        return y + self._broadcast(self.bias, x) if self.bias_term else y


@register("Bias")
class Bias(_Affine):
    """y = x + bias; bias is blob 0, or bottom 1 in the two-bottom form."""

    def setup(self, bottom_shapes):
        p = self.param
        self.start, shape = self._operand_shape(bottom_shapes, p.axis, p.num_axes)
        if len(bottom_shapes) == 1:
            self.new_blob("bias", shape)
            self.blob_names = ("bias",)

    def filler(self, blob_name):
        return self.param.filler if self.param.HasField("filler") else None

    def forward(self, x, bias=None):
        return x + self._broadcast(self.bias if bias is None else bias, x)
