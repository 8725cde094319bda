"""netspec's speed options in the SolverParameter (extension fields, all off by default so that
training is Caffe's float32 arithmetic): precision (tf32 on a GPU; bf16/fp16 autocast; fp16 with
dynamic loss scaling), channels_last memory format, torch_compile, cudnn_benchmark.

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
import itertools
import logging

import torch

from ..errors import NetspecError
from ..graph.devices import use_tf32

log = logging.getLogger(__name__)

# tf32: float32 tensors, with cuDNN's and cuBLAS's TF32 arithmetic on a GPU (graph/devices.py)
PRECISIONS = {"fp32": None, "tf32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_dtype(precision: str, source=None):
    if precision not in PRECISIONS:
        raise NetspecError(f"precision: expected one of {', '.join(PRECISIONS)}, found '{precision}'", file=source)
    return PRECISIONS[precision]


def net_devices(net, default) -> list[torch.device]:
    """The devices the net's layers were placed on (its blobs and buffers), in first-seen order; a
    device map can put layers on GPUs while the solver's own device is the CPU, and the reverse."""
    found = dict.fromkeys(t.device for t in itertools.chain(net.parameters(), net.buffers()))
    return list(found) or [torch.device(default)]


@contextlib.contextmanager
def autocast(devices, dtype):
    """A forward-pass autocast context on every device type in `devices` (nothing for fp32)."""
    if dtype is None:
        yield
        return
    if isinstance(devices, (str, torch.device)):
        devices = [devices]
    with contextlib.ExitStack() as stack:
        for kind in dict.fromkeys(torch.device(d).type for d in devices):
            stack.enter_context(torch.autocast(device_type=kind, dtype=dtype))
        yield


class LossScaler:
    """Dynamic loss scaling for fp16: scale the loss before backward, unscale the diffs after.

    The scale and the count of clean steps live on the device (torch's _amp kernels, as GradScaler
    keeps them), so a training step decides "skip this update" there and the host learns of an
    overflow only when the solver reads its deferred values."""

    def __init__(self, init_scale=2.0 ** 16, growth_interval=2000, device="cpu"):
        self._scale = torch.full((), float(init_scale), dtype=torch.float32, device=device)
        self._growth = torch.zeros((), dtype=torch.int32, device=device)
        self.growth_interval = growth_interval

    @property
    def scale(self) -> float:
        return float(self._scale)

    def scaled(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self._scale.to(loss.device, non_blocking=True)

    def unscale_on_device(self, tensors, defer=None) -> torch.Tensor:
        """Divide every .grad by the scale; a 0-dim bool tensor, False when one overflowed (the scale
        is then halved; it doubles after growth_interval clean steps). `defer` gets the log line."""
        grads: dict = {}
        for t in tensors:
            if t.grad is not None:
                grads.setdefault(t.grad.device, []).append(t.grad)
        found = torch.zeros((), dtype=torch.float32, device=self._scale.device)
        inv = self._scale.double().reciprocal().float()
        for device, group in grads.items():
            found_here = torch.zeros((), dtype=torch.float32, device=device)
            torch._amp_foreach_non_finite_check_and_unscale_(group, found_here, inv.to(device, non_blocking=True))
            found = found + found_here.to(found.device, non_blocking=True)
        found = (found > 0).float()
        torch._amp_update_scale_(self._scale, self._growth, found, 2.0, 0.5, self.growth_interval)
        if defer is not None:
            defer.add(torch.stack([found, self._scale]), _overflow_report)
        return found == 0

    def unscale(self, tensors) -> bool:
        """unscale_on_device, read at once: True when the diffs were finite and are now unscaled."""
        found_scale = torch.stack([~self.unscale_on_device(tensors), self._scale]).float().cpu().numpy()
        _overflow_report(found_scale)
        return not found_scale[0]


def _overflow_report(found_and_scale) -> None:
    if found_and_scale[0]:
        log.info("fp16 gradients overflowed: update skipped, loss scale lowered to %g", found_and_scale[1])


def configure(net, sp, device: torch.device, source=None):
    """Apply channels_last and cudnn_benchmark to `net`; return (autocast dtype, LossScaler or None).
    The options follow the devices of the net's layers, not only the solver's default `device`."""
    dtype = autocast_dtype(sp.precision, source)
    devices = net_devices(net, device)
    gpus = [d for d in devices if d.type == "cuda"]
    if dtype is not None:
        log.info("Mixed precision: forward in %s autocast%s", sp.precision,
                 ", dynamic loss scaling" if dtype is torch.float16 else "")
    if sp.channels_last:
        net.to(memory_format=torch.channels_last)
        log.info("Using channels_last memory format")
    if sp.precision == "tf32" and gpus:
        use_tf32()
    if sp.cudnn_benchmark and gpus:
        torch.backends.cudnn.benchmark = True
        log.info("cuDNN autotuning (cudnn_benchmark) on")
    return dtype, LossScaler(device=gpus[0] if gpus else device) if dtype is torch.float16 else None


def compiled(fn, sp):
    """torch.compile(fn) when the solver asks for it."""
    if not sp.torch_compile:
        return fn
    log.info("Compiling the net with torch.compile")
    return torch.compile(fn)
