"""Logical devices (a layer's `device` field) bound to torch devices by a device map.

A map is written `gpu0=cuda:0,gpu1=cuda:1`; a single device (`cpu`, `cuda:0`) takes every name.
Layers that name no device run on the net's default device.
"""
from __future__ import annotations

import logging
import os

import torch

from ..errors import NetspecError


log = logging.getLogger(__name__)
TF32_ENV = "NETSPEC_TF32"
_tf32_asked = False        # a solver's precision: "tf32" asked for it in this process


def float32_on_cuda() -> None:
    """Caffe's float32 arithmetic on a GPU. torch lets cuDNN compute float32 convolutions in TF32
    (10-bit significands) on Ampere and later GPUs unless told not to, which moves a convolution's
    result by about 1e-3 relative; a net placed on a GPU turns that off, and cuBLAS's TF32 with it,
    unless NETSPEC_TF32=1 or a solver's `precision: "tf32"` (use_tf32) asks for the speed instead.
    The switches are torch's, for the whole process."""
    tf32 = _tf32_asked or os.environ.get(TF32_ENV, "") == "1"
    if torch.backends.cudnn.allow_tf32 != tf32 or torch.backends.cuda.matmul.allow_tf32 != tf32:
        log.info("TF32 %s for float32 convolutions and matrix products on the GPU%s", "on" if tf32 else "off",
                 "" if tf32 else f" (Caffe's float32; {TF32_ENV}=1 or precision: \"tf32\" for TF32)")
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32


def use_tf32() -> None:
    """TF32 for this process's GPU nets, those placed already and those to come."""
    global _tf32_asked
    _tf32_asked = True
    float32_on_cuda()


class DeviceMap:
    def __init__(self, spec: str | dict | None = None, default: str | torch.device = "cpu"):
        self.default = torch.device(default)
        self.bindings: dict[str, torch.device] = {}
        self.catch_all: torch.device | None = None
        if isinstance(spec, dict):
            self.bindings = {k: torch.device(v) for k, v in spec.items()}
        elif spec:
            for part in str(spec).split(","):
                part = part.strip()
                if "=" in part:
                    name, dev = (s.strip() for s in part.split("=", 1))
                    self.bindings[name] = _device(dev, spec)
                elif part:
                    self.catch_all = _device(part, spec)
        if self.catch_all is not None and not self.bindings:
            self.default = self.catch_all

    def resolve(self, logical: str | None, layer: str | None = None) -> torch.device:
        """The torch device a layer's logical device is bound to (checked to exist on this machine)."""
        return check_device(self._resolve(logical, layer), layer=layer)

    def _resolve(self, logical: str | None, layer: str | None = None) -> torch.device:
        if not logical:
            return self.default
        if logical in self.bindings:
            return self.bindings[logical]
        if self.catch_all is not None:
            return self.catch_all
        if not self.bindings:
            return self.default
        raise NetspecError(f"logical device '{logical}' is not in the device map "
                           f"({', '.join(f'{k}={v}' for k, v in self.bindings.items())})", layer=layer)

    def __repr__(self):
        parts = [f"{k}={v}" for k, v in self.bindings.items()]
        if self.catch_all is not None:
            parts.append(str(self.catch_all))
        return f"DeviceMap({','.join(parts) or self.default})"


def check_device(device, what: str = "device", layer: str | None = None) -> torch.device:
    """`device` when this machine has it; a CUDA device it lacks is a one-line error instead of
    CUDA's 'invalid device ordinal' at the first tensor placed there."""
    device = torch.device(device)
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if (device.index or 0) >= count:
        have = f"{count} CUDA device(s)" if count else "no CUDA device"
        raise NetspecError(f"{what} {device}: this machine has {have}"
                           + (f" (cuda:0..cuda:{count - 1})" if count else ""), layer=layer)
    return device


def _device(text: str, spec) -> torch.device:
    try:
        return torch.device(text)
    except RuntimeError:
        raise NetspecError(f"device map '{spec}': '{text}' is not a torch device "
                           "(expected cpu, cuda, cuda:N, mps)") from None
