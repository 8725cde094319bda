"""netspec's speed options in the SolverParameter (extension fields, all off by default so that
training is Caffe's float32 arithmetic): precision (bf16/fp16 autocast; fp16 with dynamic loss
scaling), channels_last memory format, torch_compile, cudnn_benchmark.

Loss scaling follows torch.amp.GradScaler's dynamic rule (start 2^16, halve and skip the update on
an overflow, double after 2000 clean iterations) but works on the solver's own update rules.

How far each option may move results from float32 (tests/test_speed_options.py, a small CaffeNet-like
net; on CUDA against fp32 with TF32 off). Blob: worst |x - x_fp32| / max |x_fp32|; loss: relative;
update: ||Δw - Δw_fp32|| / ||Δw_fp32|| of one SGD step, per parameter blob.

    option          blob     loss     update   (measured on the CPU: blob, loss, worst update)
    bf16 autocast   3e-2     1e-2     0.2      7e-3, 2e-3, 0.11 (conv1's weights: its gradient sums
                                                 many terms that cancel, each with bf16's 8-bit significand)
    fp16 autocast   5e-3     2e-3     3e-2     1e-3, 1e-4, 0.012 (with loss scaling)
    channels_last   1e-5     1e-5     1e-5     0, 0, 8e-7
torch_compile is checked against eager by tests/test_models.py (the CaffeNet deploy net).
"""
from __future__ import annotations

import contextlib
import logging

import torch

from ..errors import NetspecError

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str, source=None):
    if precision not in PRECISIONS:
        raise NetspecError(f"precision: expected one of {', '.join(PRECISIONS)}, found '{precision}'", file=source)
    return PRECISIONS[precision]


def autocast(device: torch.device, dtype):
    """A forward-pass autocast context (nothing for fp32)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class LossScaler:
    """Dynamic loss scaling for fp16: scale the loss before backward, unscale the diffs after."""

    def __init__(self, init_scale=2.0 ** 16, growth_interval=2000):
        self.scale, self.growth_interval, self.good_steps = float(init_scale), growth_interval, 0

    def scaled(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale

    def unscale(self, tensors) -> bool:
        """Divide every .grad by the scale; False (and a smaller scale) when one overflowed."""
        grads = [t.grad for t in tensors if t.grad is not None]
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        if not finite:
            self.scale /= 2.0
            self.good_steps = 0
            log.info("fp16 gradients overflowed: update skipped, loss scale lowered to %g", self.scale)
            return False
        for g in grads:
            g.div_(self.scale)
        self.good_steps += 1
        if self.good_steps % self.growth_interval == 0:
            self.scale *= 2.0
        return True


def configure(net, sp, device: torch.device, source=None):
    """Apply channels_last and cudnn_benchmark to `net`; return (autocast dtype, LossScaler or None)."""
    dtype = autocast_dtype(sp.precision, source)
    if dtype is not None:
        log.info("Mixed precision: forward in %s autocast%s", sp.precision,
                 ", dynamic loss scaling" if dtype is torch.float16 else "")
    if sp.channels_last:
        net.to(memory_format=torch.channels_last)
        log.info("Using channels_last memory format")
    if sp.cudnn_benchmark and device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        log.info("cuDNN autotuning (cudnn_benchmark) on")
    return dtype, LossScaler() if dtype is torch.float16 else None


def compiled(fn, sp):
    """torch.compile(fn) when the solver asks for it."""
    if not sp.torch_compile:
        return fn
    log.info("Compiling the net with torch.compile")
    return torch.compile(fn)
