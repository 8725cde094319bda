"""pycaffe's Blob: a blob's `.data` and `.diff` as numpy arrays that are the net's own CPU memory
(python/caffe/_caffe.cpp's Blob). On a GPU they are host copies, pushed back to the device before the
net next runs, as Caffe's SyncedMemory does. Parameter blobs view the Parameter and its `.grad`.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def _host(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return t.numpy() if t.device.type == "cpu" else t.cpu().numpy()


class Blob:
    """A named blob: `.data` and `.diff` as numpy arrays over the net's CPU tensors. Each is one array
    object for as long as the blob keeps its shape (as pycaffe's, whose arrays are the blob's memory):
    once handed out, a forward copies its results into the array's tensor instead of replacing it
    (blobs nobody looked at cost no copy)."""

    def __init__(self, data: torch.Tensor, diff: torch.Tensor | None = None):
        self._deferred = None                  # (settle, shape): computed when first read (Net's fused forward)
        self._data, self._diff = data, diff
        self._hdata = self._hdiff = None      # host copies of device tensors (GPU mode), handed out
        self._arrays = [None, None]            # (key, array) for data and diff, reused while valid

    @staticmethod
    def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
        return a.shape == b.shape and a.dtype == b.dtype and a.device == b.device

    @property
    def _data(self) -> torch.Tensor:
        if self._deferred is not None:
            self._deferred[0]()
        return self._tensor

    @_data.setter
    def _data(self, t: torch.Tensor):
        self._tensor = t

    def _defer(self, settle, shape: tuple):
        """This blob's value of the last forward is not computed yet: `settle()` binds it (and the
        other blobs that forward skipped) when anything reads it."""
        self._deferred = (settle, tuple(shape))

    def _bind(self, data: torch.Tensor, alias: bool = False):
        """Hold new data. Once `.data` has been handed out, values of the same shape are copied into
        the blob's tensor so that the array stays valid; otherwise the tensor is taken as it is (no
        copy), and the diff goes if the shape changed (Caffe's Reshape). `alias`: always take the
        tensor itself (DummyData's constant tops, whose writes must reach the layer)."""
        self._deferred = None
        data = data.detach()
        if not alias and self._arrays[0] is not None and self._same(data, self._data):
            if data.data_ptr() != self._data.data_ptr():
                with torch.no_grad():
                    self._data.copy_(data)
            self._hdata = None
            return
        if self._diff is not None and tuple(self._diff.shape) != tuple(data.shape):
            self._diff = None
        self._data, self._hdata = data, None

    def _set_diff(self, diff: torch.Tensor):
        diff = diff.detach()
        if self._arrays[1] is not None and self._diff is not None and self._same(diff, self._diff):
            if diff.data_ptr() != self._diff.data_ptr():
                with torch.no_grad():
                    self._diff.copy_(diff)
        else:
            self._diff = diff
        self._hdiff = None

    def _diff_tensor(self) -> torch.Tensor:
        if self._diff is None:
            self._diff = torch.zeros(self.shape, dtype=torch.float32, device=self._tensor.device)
        return self._diff

    def _array(self, slot: int, t: torch.Tensor) -> np.ndarray:
        """The numpy view of CPU tensor `t`, the same object while `t`'s memory and shape are."""
        key = (t.data_ptr(), tuple(t.shape), t.dtype)
        cached = self._arrays[slot]
        if cached is None or cached[0] != key:
            cached = self._arrays[slot] = (key, t.detach().numpy())
        return cached[1]

    def _host_array(self, slot: int, t: torch.Tensor) -> np.ndarray:
        """A device tensor's host copy: refreshed in place, a new array only when the shape changes."""
        cached = self._arrays[slot]
        values = _host(t)
        if cached is None or cached[1].shape != values.shape or cached[1].dtype != values.dtype:
            cached = self._arrays[slot] = (None, values)
        else:
            np.copyto(cached[1], values)
        return cached[1]

    @property
    def data(self) -> np.ndarray:
        if self._data.device.type == "cpu":
            if not self._data.is_contiguous():     # the inference graph's channels-last results
                self._data = self._data.contiguous()
            return self._array(0, self._data)
        if self._hdata is None:
            self._hdata = self._host_array(0, self._data)
        return self._hdata

    @property
    def diff(self) -> np.ndarray:
        d = self._diff_tensor()
        if d.device.type == "cpu":
            return self._array(1, d)
        if self._hdiff is None:
            self._hdiff = self._host_array(1, d)
        return self._hdiff

    def _push(self):
        """Copy host writes back to the device tensors (before the net reads them)."""
        if self._hdata is None and self._hdiff is None:
            return
        with torch.no_grad():
            if self._hdata is not None:
                self._data.detach().copy_(torch.from_numpy(self._hdata))
            if self._hdiff is not None:
                self._diff.copy_(torch.from_numpy(self._hdiff))
        self._hdata = self._hdiff = None

    @property
    def shape(self) -> tuple:
        return self._deferred[1] if self._deferred is not None else tuple(self._tensor.shape)

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def num(self):
        return self.shape[0]

    @property
    def channels(self):
        return self.shape[1]

    @property
    def height(self):
        return self.shape[2]

    @property
    def width(self):
        return self.shape[3]

    def reshape(self, *dims):
        self._bind(torch.zeros(tuple(int(d) for d in dims), dtype=torch.float32, device=self._tensor.device))


class _ParamBlob(Blob):
    """A parameter blob: data is the Parameter itself, diff its .grad (created on first access).
    On a GPU the host copy is dropped once the device tensor changes (an update, a load)."""

    def __init__(self, param: torch.nn.Parameter):
        super().__init__(param)
        self._keys = [None, None]            # (data_ptr, version) each host copy was taken at

    @staticmethod
    def _key(t):
        return t.data_ptr(), t._version

    def _mirror(self, t, slot: int, cached):
        if t.device.type == "cpu":
            return self._array(slot, t)
        if cached is None or self._keys[slot] != self._key(t):
            cached, self._keys[slot] = _host(t), self._key(t)
        return cached

    @property
    def data(self) -> np.ndarray:
        if self._data.device.type == "cpu":
            # numpy writes into the Parameter's memory bump no torch version counter: folded
            # inference weights compare such blobs with their copies (graph/inference.py)
            self._data._netspec_exposed = True
        self._hdata = self._mirror(self._data, 0, self._hdata)
        return self._hdata

    @property
    def diff(self) -> np.ndarray:
        p = self._data
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        self._hdiff = self._mirror(p.grad, 1, self._hdiff)
        return self._hdiff

    def _push(self):
        if self._hdata is None and self._hdiff is None:
            return
        with torch.no_grad():
            for slot, (t, host) in enumerate(((self._data, self._hdata), (self._data.grad, self._hdiff))):
                if t is not None and host is not None and t.device.type != "cpu" and self._keys[slot] == self._key(t):
                    t.copy_(torch.from_numpy(host))
        self._hdata = self._hdiff = None

    def reshape(self, *dims):
        with torch.no_grad():
            self._data.data = torch.zeros(tuple(int(d) for d in dims), dtype=self._data.dtype,
                                          device=self._data.device)


class LayerView:
    """pycaffe's net.layers[i]: `.type` and `.blobs`."""

    def __init__(self, layer, blobs):
        self.type, self.name, self.blobs, self.module = layer.type, layer.name, blobs, layer

    def __repr__(self):
        return f"<{self.type} layer '{self.name}'>"
