"""pycaffe's Blob: a blob's `.data` and `.diff` as numpy arrays that are the net's own CPU memory
(python/caffe/_caffe.cpp's Blob). On a GPU they are host copies, pushed back to the device before the
net next runs, as Caffe's SyncedMemory does. Parameter blobs view the Parameter and its `.grad`.
"""
from __future__ import annotations

import numpy as np
import torch


def _host(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return t.numpy() if t.device.type == "cpu" else t.cpu().numpy()


class Blob:
    """A named blob: `.data` and `.diff` as numpy arrays (views of the net's CPU tensors)."""

    def __init__(self, data: torch.Tensor, diff: torch.Tensor | None = None):
        self._data, self._diff = data, diff
        self._hdata = self._hdiff = None      # host copies of device tensors (GPU mode)

    def _bind(self, data: torch.Tensor):
        """Hold a new data tensor; the diff stays unless the shape changed (Caffe's Reshape)."""
        if self._diff is not None and tuple(self._diff.shape) != tuple(data.shape):
            self._diff = None
        self._data, self._hdata = data, None

    def _set_diff(self, diff: torch.Tensor):
        self._diff, self._hdiff = diff, None

    def _diff_tensor(self) -> torch.Tensor:
        if self._diff is None:
            self._diff = torch.zeros(self._data.shape, dtype=torch.float32, device=self._data.device)
        return self._diff

    @property
    def data(self) -> np.ndarray:
        if self._data.device.type == "cpu":
            return self._data.detach().numpy()
        if self._hdata is None:
            self._hdata = _host(self._data)
        return self._hdata

    @property
    def diff(self) -> np.ndarray:
        d = self._diff_tensor()
        if d.device.type == "cpu":
            return d.detach().numpy()
        if self._hdiff is None:
            self._hdiff = _host(d)
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
        return tuple(self._data.shape)

    @property
    def count(self) -> int:
        return int(self._data.numel())

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
        self._bind(torch.zeros(tuple(int(d) for d in dims), dtype=torch.float32))


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
            return t.detach().numpy()
        if cached is None or self._keys[slot] != self._key(t):
            cached, self._keys[slot] = _host(t), self._key(t)
        return cached

    @property
    def data(self) -> np.ndarray:
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
