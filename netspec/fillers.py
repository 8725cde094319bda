"""Parameter initialisers named by FillerParameter.type (Caffe's include/caffe/filler.hpp).

`fill(tensor, filler, generator)` writes the filler's values into `tensor` in place. The draws come
from `generator` (a CPU torch.Generator; None means torch's global RNG), so a seed reproduces them;
they cannot reproduce Caffe's own boost RNG stream, only its distributions.
Fan sizes follow Caffe's legacy blob accessors: fan_in = count / shape[0], fan_out = count / shape[1].
"""

from __future__ import annotations

import math

import torch

from .errors import NetspecError
from .proto import pb


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    count = math.prod(shape)
    fan_in = count // shape[0] if shape else 1
    # A 1-axis blob has Caffe's legacy channels() == 1.
    fan_out = count // shape[1] if len(shape) > 1 else count
    return fan_in, fan_out


def _variance_n(shape, fp: pb.FillerParameter) -> float:
    fan_in, fan_out = _fans(shape)
    if fp.variance_norm == pb.FillerParameter.AVERAGE:
        return (fan_in + fan_out) / 2.0
    if fp.variance_norm == pb.FillerParameter.FAN_OUT:
        return float(fan_out)
    return float(fan_in)


def _uniform(shape, lo: float, hi: float, gen) -> torch.Tensor:
    return torch.rand(shape, generator=gen) * (hi - lo) + lo


def _gaussian(shape, fp: pb.FillerParameter, gen) -> torch.Tensor:
    values = torch.randn(shape, generator=gen) * fp.std + fp.mean
    if fp.sparse >= 0:
        # Keep each weight with probability sparse / num_outputs (num_outputs = shape[0]), so an
        # output unit has `sparse` non-zero inputs on average.
        if not shape:
            raise NetspecError("gaussian filler with 'sparse' needs a blob with at least one axis")
        keep = torch.rand(shape, generator=gen) < fp.sparse / shape[0]
        values = values * keep
    return values


def _positive_unitball(shape, gen) -> torch.Tensor:
    values = torch.rand(shape, generator=gen)
    rows = values.reshape(shape[0] if shape else 1, -1)
    return (rows / rows.sum(dim=1, keepdim=True)).reshape(shape)


def _bilinear(shape) -> torch.Tensor:
    """Per-channel bilinear upsampling kernel (for Deconvolution used as upsampling)."""
    if len(shape) != 4 or shape[2] != shape[3]:
        raise NetspecError(f"bilinear filler needs a square 4-axis blob, found shape {tuple(shape)}")
    k = shape[3]
    f = math.ceil(k / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    t = 1 - (torch.arange(k, dtype=torch.float64) / f - c).abs()
    return (t[:, None] * t[None, :]).to(torch.float32).expand(shape).clone()


def make(shape, fp: pb.FillerParameter | None, generator: torch.Generator | None = None) -> torch.Tensor:
    """A new float32 CPU tensor of `shape` filled as `fp` says (None: constant 0)."""
    shape = tuple(int(d) for d in shape)
    if fp is None:
        return torch.zeros(shape)
    kind = fp.type
    if fp.sparse != -1 and kind != "gaussian":
        raise NetspecError(f"filler '{kind}' does not support 'sparse' (only gaussian does)")
    if kind == "constant":
        return torch.full(shape, fp.value)
    if kind == "uniform":
        return _uniform(shape, fp.min, fp.max, generator)
    if kind == "gaussian":
        return _gaussian(shape, fp, generator)
    if kind == "positive_unitball":
        return _positive_unitball(shape, generator)
    if kind == "xavier":
        scale = math.sqrt(3.0 / _variance_n(shape, fp))
        return _uniform(shape, -scale, scale, generator)
    if kind == "msra":
        return torch.randn(shape, generator=generator) * math.sqrt(2.0 / _variance_n(shape, fp))
    if kind == "bilinear":
        return _bilinear(shape)
    raise NetspecError(
        f"unknown filler type '{kind}' (known: constant, gaussian, uniform, xavier, msra, "
        "bilinear, positive_unitball)"
    )


def fill(tensor: torch.Tensor, fp: pb.FillerParameter | None, generator: torch.Generator | None = None):
    """Fill `tensor` in place; values are drawn on the CPU and copied to the tensor's device."""
    with torch.no_grad():
        tensor.copy_(make(tensor.shape, fp, generator))
    return tensor
