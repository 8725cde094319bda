"""Caffe's MemoryData layer (src/caffe/layers/memory_data_layer.cpp): batches served from arrays the
program hands over with pycaffe's `Net.set_input_arrays(data, labels)` (python/caffe/_caffe.cpp).

Tops: data N x channels x height x width and labels N x 1 x 1 x 1 (Caffe's Forward reshapes the label
top to 4-D). Each forward serves the next `batch_size` rows, wrapping to the first after the last;
the tops share memory with the arrays given, as Caffe's set_cpu_data does. Arrays are not transformed
(Caffe warns when a transform_param is given). A forward before any arrays were given is an error.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from .base import Layer, register

log = logging.getLogger("netspec.layers.memory_data")


@register("MemoryData")
class MemoryData(Layer):
    exact_bottoms, exact_tops = 0, 2
    is_data = True

    def __init__(self, lp, bottom_shapes=(), phase=0, source_dir=None):
        super().__init__(lp, list(bottom_shapes), phase, source_dir=source_dir)
        self._data = self._labels = None
        self._pos = 0

    def setup(self, bottom_shapes):
        p = self.param
        self.batch_size, self.channels, self.height, self.width = (
            int(p.batch_size), int(p.channels), int(p.height), int(p.width))
        if min(self.batch_size, self.channels, self.height, self.width) <= 0:
            raise self.error("batch_size, channels, height and width must all be given and positive in "
                             f"memory_data_param (found {self.batch_size}, {self.channels}, {self.height}, "
                             f"{self.width})")

    def infer_top_shapes(self, bottom_shapes):
        return [(self.batch_size, self.channels, self.height, self.width), (self.batch_size, 1, 1, 1)]

    def reset(self, data: np.ndarray, labels: np.ndarray) -> None:
        """Serve `data` (N x C x H x W) and `labels` (N x 1 x 1 x 1) from the first row (Caffe's Reset,
        after _caffe.cpp's CheckContiguousArray checks)."""
        self._check(data, "data array", (self.channels, self.height, self.width))
        self._check(labels, "labels array", (1, 1, 1))
        if data.shape[0] != labels.shape[0]:
            raise self.error(f"data and labels must have the same first dimension (found {data.shape[0]} "
                             f"and {labels.shape[0]})")
        if data.shape[0] % self.batch_size:
            raise self.error(f"the first dimension of the input arrays ({data.shape[0]}) must be a multiple "
                             f"of batch_size {self.batch_size}")
        if self.lp.HasField("transform_param"):
            log.warning("layer '%s': MemoryData does not transform array data", self.name)
        self._data, self._labels, self._pos = data, labels, 0

    def _check(self, arr, name: str, chw: tuple) -> None:
        if not isinstance(arr, np.ndarray):
            raise self.error(f"{name} must be a numpy array, found {type(arr).__name__}")
        if not arr.flags.c_contiguous:
            raise self.error(f"{name} must be C contiguous")
        if arr.ndim != 4:
            raise self.error(f"{name} must be 4-d, found shape {arr.shape}")
        if arr.dtype != np.float32:
            raise self.error(f"{name} must be float32, found {arr.dtype}")
        for axis, what, want in zip((1, 2, 3), ("channels", "height", "width"), chw):
            if arr.shape[axis] != want:
                raise self.error(f"{name} has {arr.shape[axis]} {what}, the layer {want} (shape {arr.shape})")

    def forward(self):
        if self._data is None:
            raise self.run_error("MemoryData has no data: call Net.set_input_arrays(data, labels) first")
        lo, hi = self._pos, self._pos + self.batch_size
        self._pos = hi % len(self._data)
        device = self._anchor.device
        data = torch.from_numpy(self._data[lo:hi]).to(device)
        return data, torch.from_numpy(self._labels[lo:hi]).to(device)
