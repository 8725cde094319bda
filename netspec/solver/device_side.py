"""Keeping the training loop off the host: reductions over blobs that live on several devices, and
values produced on the device every iteration but read by the host only at display time.

A model-parallel net (AlexNet's two columns on cuda:0 and cuda:1) has learnable blobs on different
devices, so any reduction over all of them (clip_gradients' global norm, debug_info's L1/L2 norms,
the losses of several iterations) first gathers them to one device: `gather` and `stack`.

Reading a device value on the host (`.item()`, `float()`, `.cpu()`) waits for the GPU to finish
everything queued, so the next iteration cannot be queued behind the current one. `DeferredReads`
holds such values with what to do with them, and `flush()` reads all of them in one transfer: the
solver flushes at display time, before testing and snapshotting, and at the end of `step()`. The
loss of every iteration, clip_gradients' log line and the fp16 loss scaler's overflow line go
through it; so can any other device-side check (a label out of range) that is acted on at display.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch


def gather(tensors, device=None) -> list[torch.Tensor]:
    """`tensors` on one device (`device`, default the first tensor's); copies are asynchronous."""
    tensors = list(tensors)
    if not tensors:
        return []
    target = torch.device(device) if device is not None else tensors[0].device
    # A copy to the host must complete before the host reads it: asynchronous only between devices.
    async_ok = target.type != "cpu"
    return [t if t.device == target else t.to(target, non_blocking=async_ok) for t in tensors]


def stack(tensors, device=None) -> torch.Tensor:
    """torch.stack of tensors that may live on different devices (on `device` or the first's)."""
    return torch.stack(gather(tensors, device))


def cat(tensors, device=None) -> torch.Tensor:
    """torch.cat of tensors that may live on different devices (on `device` or the first's)."""
    return torch.cat(gather(tensors, device))


def sequential_sum(values: torch.Tensor) -> torch.Tensor:
    """The float32 sum of a 1-D tensor taken left to right, one rounding per term, as Caffe's loops
    over blobs add floats (torch.sum may pair terms or accumulate in double)."""
    total = values[0]
    for k in range(1, values.numel()):
        total = total + values[k]
    return total


class DeferredReads:
    """Device values and their handlers, read on the host together by `flush()`."""

    def __init__(self):
        self._items: list[tuple[torch.Tensor, Callable[[np.ndarray], None]]] = []

    def __len__(self) -> int:
        return len(self._items)

    def add(self, value: torch.Tensor, handler: Callable[[np.ndarray], None]) -> None:
        """Call handler(value as a float32 numpy array) at the next flush, in the order added.
        Bool and integer flags arrive as 0/1 and exact small integers."""
        self._items.append((value.detach(), handler))

    def flush(self) -> None:
        """One host read for every pending value, then each handler in order. A handler that raises
        (a non-finite loss) leaves the values after it unread and dropped."""
        items, self._items = self._items, []
        if not items:
            return
        flat = [v.reshape(-1).to(torch.float32) for v, _ in items]
        host = cat(flat).cpu().numpy() if len(flat) > 1 else flat[0].cpu().numpy()
        offset = 0
        for (value, handler), f in zip(items, flat):
            handler(host[offset:offset + f.numel()].reshape(value.shape))
            offset += f.numel()
