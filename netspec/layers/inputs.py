"""Source layers without a database: Input and DummyData (Caffe's input_layer.cpp,
dummy_data_layer.cpp).

Input only declares shapes: the compiled net is fed those blobs from outside (`net(data=...)`).
DummyData produces its tops itself, each from its filler (none: constant 0). As in Caffe, a top with
a constant filler is filled once, when the layer is built, and every forward returns that same
tensor, so values a user writes into it (pycaffe's `net.blobs['label'].data[...] = y`) stay; a top
with any other filler is drawn anew on every forward.
"""

from __future__ import annotations

import torch

from ..fillers import make
from .base import Layer, register


class _Source(Layer):
    exact_bottoms, min_tops = 0, 1

    def __init__(self, lp, bottom_shapes, phase):
        super().__init__(lp, bottom_shapes, phase)
        # A zero-size buffer that follows the module's .to(device), so forward knows where to put tops.
        self.register_buffer("_device_probe", torch.empty(0), persistent=False)

    def infer_top_shapes(self, bottom_shapes):
        return self.input_shapes()

    def _pick(self, values: list, what: str) -> list:
        """One value for every top, or one per top (Caffe's 1-or-N rule)."""
        tops = len(self.lp.top)
        if len(values) == 1:
            return values * tops
        if len(values) != tops:
            raise self.error(f"{len(values)} {what} for {tops} tops; give 1 or {tops}")
        return values


@register("Input")
class Input(_Source):
    """Declares the shapes of blobs fed from outside the net."""

    def input_shapes(self) -> list[tuple[int, ...]]:
        shapes = [tuple(int(d) for d in s.dim) for s in self.param.shape]
        if not shapes:
            raise self.error("input_param needs a shape")
        return self._pick(shapes, "shapes")

    def forward(self):
        """Zero blobs of the declared shapes (what Caffe holds before anything is fed)."""
        tops = tuple(torch.zeros(s, device=self._device_probe.device) for s in self.top_shapes)
        return tops[0] if len(tops) == 1 else tops


@register("DummyData")
class DummyData(_Source):
    """Constant-filled tops made once and kept; the others drawn from their fillers every forward."""

    is_data = True

    def setup(self, bottom_shapes):
        # Read once: forward runs every iteration and the message does not change.
        self.top_fillers = self.fillers()
        # Non-persistent buffers: they follow .to(device) but stay out of the state_dict and weights.
        for i, (shape, filler) in enumerate(zip(self.input_shapes(), self.top_fillers)):
            if _is_constant(filler):
                self.register_buffer(f"_top{i}", make(shape, filler), persistent=False)

    def input_shapes(self) -> list[tuple[int, ...]]:
        p = self.param
        legacy = [list(p.num), list(p.channels), list(p.height), list(p.width)]
        if any(legacy):
            if len(p.shape):
                raise self.error("give either shape or num/channels/height/width, not both")
            cols = [self._pick(v, name) for v, name in zip(legacy, ("num", "channels", "height", "width"))]
            return [tuple(int(c[i]) for c in cols) for i in range(len(self.lp.top))]
        if not len(p.shape):
            raise self.error("dummy_data_param needs a shape (or num/channels/height/width)")
        return self._pick([tuple(int(d) for d in s.dim) for s in p.shape], "shapes")

    def fillers(self) -> list:
        given = list(self.param.data_filler)
        return self._pick(given, "data_filler") if given else [None] * len(self.lp.top)

    def constant_tops(self) -> dict[int, torch.Tensor]:
        """Top index -> the kept tensor of each constant-filled top (pycaffe binds its blobs to them)."""
        return {i: getattr(self, f"_top{i}") for i in range(len(self.lp.top)) if hasattr(self, f"_top{i}")}

    def forward(self):
        device = self._device_probe.device
        tops = tuple(getattr(self, f"_top{i}") if _is_constant(f) else _to(make(s, f), device)
                     for i, (s, f) in enumerate(zip(self.top_shapes, self.top_fillers)))
        return tops[0] if len(tops) == 1 else tops


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A filled top on the layer's device. Fillers draw on the host (the CPU's generator, so a run
    fills alike on any device); to a GPU through pinned memory, so that the copy does not make the
    host wait for the GPU every iteration (torch's pinned allocator keeps the buffer until copied)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _is_constant(filler) -> bool:
    """Caffe refills a DummyData top on every forward unless its filler type is "constant"."""
    return filler is None or filler.type == "constant"
