"""The Python layer: `type: "Python"` runs a user's class written against pycaffe's `caffe.Layer`
(Caffe's include/caffe/layers/python_layer.hpp and GetPythonLayer in src/caffe/layer_factory.cpp).

`python_param { module: "m" layer: "C" param_str: "..." }` (share_in_parallel is ignored: every
training process builds its own layers) imports module `m` from sys.path (as
Caffe does: the `caffe` tool and pycaffe find it through PYTHONPATH, or a pycaffe script's own
folder) and builds `C(layer_param)`. Before `setup` the instance gets `param_str`, `phase` and
`blobs` (add_blob(*shape) makes a learnable blob, zero-filled as Caffe's). Caffe's sequence follows:
setup then reshape at net construction, reshape then forward on every forward, backward when the
gradient reaches the layer. Bottoms and tops are pycaffe-style blobs over host numpy arrays; the
bottoms' diffs the user writes in `backward` become the gradients autograd propagates, and what it
writes into `self.blobs[i].diff` is that blob's diff itself (Caffe's memory), which the solver reads.
The numpy code cannot be traced, so torch.compile runs this layer eagerly (a graph break).
"""
from __future__ import annotations

import importlib

import numpy as np
import torch
from torch import nn

from ..errors import NetspecError
from .base import Layer, register


class PythonLayerError(NetspecError, RuntimeError):
    """What a Python layer raised, when it cannot also be an instance of the user's own type."""


_ERROR_TYPES: dict[type, type] = {}


def _error_type(exc_type: type) -> type:
    """A NetspecError that is also the user's exception class: a pycaffe script's `except ValueError`
    still catches what its layer raised (pycaffe re-raises the Python exception itself), while the
    CLI prints it as netspec's one line."""
    if exc_type not in _ERROR_TYPES:
        try:
            _ERROR_TYPES[exc_type] = type(f"PythonLayer{exc_type.__name__}", (NetspecError, exc_type),
                                          {"__str__": BaseException.__str__, "__module__": __name__})
        except TypeError:                   # a layout or metaclass conflict
            _ERROR_TYPES[exc_type] = PythonLayerError
    return _ERROR_TYPES[exc_type]


def wrap_exception(exc: Exception, message: str, layer: str) -> NetspecError:
    try:
        return _error_type(type(exc))(message, layer=layer)
    except TypeError:                       # its __init__ wants other arguments
        return PythonLayerError(message, layer=layer)


def host_dtype(dtype: torch.dtype) -> np.dtype:
    """float64 stays (gradient checks); everything else is float32, as pycaffe's blobs (numpy has no
    bfloat16, and user code expects Caffe's float)."""
    return np.dtype(np.float64 if dtype == torch.float64 else np.float32)


def _host(t: torch.Tensor, dtype: np.dtype) -> np.ndarray:
    return t.detach().to(torch.float64 if dtype == np.float64 else torch.float32).cpu().numpy()


class HostBlob:
    """A bottom or top as pycaffe's Blob: `.data` and `.diff` numpy arrays, `reshape(*shape)`."""

    def __init__(self, dtype=np.float32):
        self._dtype = np.dtype(dtype)
        self._data = np.zeros((0,), self._dtype)
        self._diff = np.zeros((0,), self._dtype)

    @property
    def data(self) -> np.ndarray:
        return self._data

    @property
    def diff(self) -> np.ndarray:
        return self._diff

    def reshape(self, *shape):
        shape = tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise ValueError(f"blob dimensions must be >= 0, got {shape}")
        if self._data.shape != shape or self._data.dtype != self._dtype:
            self._data, self._diff = np.zeros(shape, self._dtype), np.zeros(shape, self._dtype)

    def load(self, t: torch.Tensor):
        """Take a tensor's values as data (reallocating only when the shape changes)."""
        self._dtype = host_dtype(t.dtype)
        self.reshape(*t.shape)
        np.copyto(self._data, _host(t, self._dtype))

    def load_diff(self, t: torch.Tensor | None):
        if t is None:
            self._diff[...] = 0
        else:
            np.copyto(self._diff, _host(t, self._diff.dtype).reshape(self._diff.shape))

    shape = property(lambda self: self._data.shape)
    count = property(lambda self: int(self._data.size))
    num = property(lambda self: self.shape[0])
    channels = property(lambda self: self.shape[1])
    height = property(lambda self: self.shape[2])
    width = property(lambda self: self.shape[3])


class ParamView:
    """A Python layer's learnable blob as pycaffe shows it: `.data` is the Parameter, `.diff` its
    .grad. On a device they are host copies, refreshed when the device tensor has changed since (an
    update, a load) and written back after each call into the user's code."""

    def __init__(self, layer: nn.Module, name: str):
        # looked up on every use: a ParamSpec name shared with another layer replaces the Parameter
        self._layer, self._name = layer, name
        self._views = [None, None]        # [key, version, array] for data and diff

    @property
    def _param(self) -> nn.Parameter:
        return getattr(self._layer, self._name)

    def _view(self, slot: int, t: torch.Tensor) -> np.ndarray:
        key = (t.data_ptr(), tuple(t.shape), t.device)
        cached = self._views[slot]
        if cached is None or cached[0] != key:
            arr = t.detach().numpy() if t.device.type == "cpu" else t.detach().cpu().numpy()
            cached = self._views[slot] = [key, t._version, arr]
        elif t.device.type != "cpu" and cached[1] != t._version:
            np.copyto(cached[2], t.detach().cpu().numpy())
            cached[1] = t._version
        return cached[2]

    @property
    def data(self) -> np.ndarray:
        return self._view(0, self._param)

    @property
    def diff(self) -> np.ndarray:
        if self._param.grad is None:
            self._param.grad = torch.zeros_like(self._param)
        return self._view(1, self._param.grad)

    def write_back(self):
        """Copy host writes to a device Parameter and its grad (nothing to do on the CPU: views)."""
        param = self._param
        with torch.no_grad():
            for slot, t in ((0, param), (1, param.grad)):
                cached = self._views[slot]
                if t is not None and t.device.type != "cpu" and cached is not None and cached[0][0] == t.data_ptr():
                    t.copy_(torch.from_numpy(cached[2]))
                    cached[1] = t._version

    def reshape(self, *shape):
        param = self._param
        with torch.no_grad():
            param.data = torch.zeros(tuple(int(d) for d in shape), dtype=param.dtype, device=param.device)
        param.grad = None

    shape = property(lambda self: tuple(self._param.shape))
    count = property(lambda self: int(self._param.numel()))
    num = property(lambda self: self.shape[0])
    channels = property(lambda self: self.shape[1])
    height = property(lambda self: self.shape[2])
    width = property(lambda self: self.shape[3])


class BlobVec(list):
    """pycaffe's layer.blobs: a list of the layer's blobs with add_blob(*shape)."""

    def __init__(self, layer: Python):
        super().__init__()
        self._layer = layer

    def add_blob(self, *shape):
        self.append(ParamView(self._layer, self._layer.add_param(shape)))


def _load_class(lp):
    """The user's class named by python_param: one line for a missing module or class."""
    pp = lp.python_param
    if not pp.module or not pp.layer:
        raise NetspecError("python_param needs both `module` and `layer` (the Python module and its class)",
                           layer=lp.name)
    try:
        module = importlib.import_module(pp.module)
    except ModuleNotFoundError as e:
        if e.name == pp.module or pp.module.startswith(f"{e.name}."):     # not one it imports
            raise NetspecError(f"python_param: no module named '{pp.module}' on sys.path (add its folder to "
                               "PYTHONPATH, as for Caffe)", layer=lp.name) from None
        raise NetspecError(f"python_param: importing module '{pp.module}' failed: {e}", layer=lp.name) from e
    except Exception as e:
        raise NetspecError(f"python_param: importing module '{pp.module}' raised {type(e).__name__}: {e}",
                           layer=lp.name) from e
    cls = getattr(module, pp.layer, None)
    if cls is None:
        where = getattr(module, "__file__", None) or pp.module
        raise NetspecError(f"python_param: module '{pp.module}' ({where}) has no class '{pp.layer}'",
                           layer=lp.name)
    return cls


@register("Python")
class Python(Layer):
    """A layer whose setup/reshape/forward/backward are a user's Python class."""

    def setup(self, bottom_shapes):
        pp = self.lp.python_param
        self.blob_names: tuple[str, ...] = ()
        # Follows the layer's device (.to moves it): where a layer without bottoms puts its tops.
        self.register_buffer("device_marker", torch.empty(0), persistent=False)
        self.where = f"{pp.module}.{pp.layer}"
        self.bottom_blobs = [HostBlob() for _ in bottom_shapes]
        tops = list(self.lp.top)
        bottoms = list(self.lp.bottom)
        # An in-place top (its name is a bottom's) is that bottom's Blob object, as in Caffe.
        self.top_blobs = [self.bottom_blobs[bottoms.index(t)] if t in bottoms else HostBlob() for t in tops]
        for b, s in zip(self.bottom_blobs, bottom_shapes):
            b.reshape(*s)
        cls = _load_class(self.lp)
        self.user = self._call(cls, "constructor", self.lp)
        self.user.param_str, self.user.phase = pp.param_str, int(self.phase)
        self.user.blobs = BlobVec(self)
        self._call(self.user.setup, "setup", self.bottom_blobs, self.top_blobs)
        self._call(self.user.reshape, "reshape", self.bottom_blobs, self.top_blobs)
        self.is_data = not bottom_shapes     # a data layer in Python (no bottoms, e.g. pascal's loader)

    def add_param(self, shape) -> str:
        name = f"blob{len(self.blob_names)}"
        self.register_parameter(name, nn.Parameter(torch.zeros(tuple(int(d) for d in shape))))
        self.blob_names = self.blob_names + (name,)
        return name

    def _call(self, fn, what: str, *args):
        """Run the user's code; what it raises becomes one line naming layer, module and exception."""
        try:
            return fn(*args)
        except Exception as e:
            raise wrap_exception(e, f"Python layer {self.where} raised {type(e).__name__} in {what}: {e}",
                                 self.name) from e

    # ---- shapes and blobs --------------------------------------------------------------------
    def infer_top_shapes(self, bottom_shapes):
        if [b.shape for b in self.bottom_blobs] != [tuple(s) for s in bottom_shapes]:
            for b, s in zip(self.bottom_blobs, bottom_shapes):
                b.reshape(*s)
            self._call(self.user.reshape, "reshape", self.bottom_blobs, self.top_blobs)
        return [t.shape for t in self.top_blobs]

    def fill(self, generator):
        """Nothing: the user's setup initialises its blobs (Caffe fills no Python layer blob)."""

    # ---- running -------------------------------------------------------------------------------
    @torch.compiler.disable
    def forward(self, *bottoms):
        outs = _Bridge.apply(self, len(bottoms), *bottoms, *self.blobs)
        return outs[0] if len(outs) == 1 else outs

    def run_forward(self, bottoms) -> list[torch.Tensor]:
        dtype = host_dtype(bottoms[0].dtype if bottoms else torch.float32)
        device = bottoms[0].device if bottoms else self.device_marker.device
        for blob, t in zip(self.bottom_blobs, bottoms):
            blob.load(t)
        for blob in self.top_blobs:
            blob._dtype = dtype
        self._call(self.user.reshape, "reshape", self.bottom_blobs, self.top_blobs)
        self._call(self.user.forward, "forward", self.bottom_blobs, self.top_blobs)
        self._write_back()
        return [torch.from_numpy(np.array(t.data, copy=True)).to(device) for t in self.top_blobs]

    def run_backward(self, bottoms, tops, grads, need) -> list[torch.Tensor | None]:
        """The user's backward on the forward's bottoms and tops; the bottoms' diffs as gradients."""
        for blob, t in zip(self.bottom_blobs, bottoms):
            blob.load(t)
        for blob, t, g in zip(self.top_blobs, tops, grads):
            blob.load(t)
            blob.load_diff(g)
        for blob, t in zip(self.bottom_blobs, bottoms):
            if blob not in self.top_blobs:
                blob.load_diff(None)
        self._call(self.user.backward, "backward", self.top_blobs, list(need), self.bottom_blobs)
        self._write_back()
        return [torch.from_numpy(np.array(b.diff, copy=True)).to(t.device, t.dtype) if n else None
                for b, t, n in zip(self.bottom_blobs, bottoms, need)]

    def _write_back(self):
        for view in self.user.blobs:
            view.write_back()


class _Bridge(torch.autograd.Function):
    """Autograd's view of a Python layer: forward and backward are the user's methods. The layer's
    Parameters are inputs so that backward runs whenever one needs a diff; their diffs are written
    by the user's code straight into .grad (Caffe's param diff), so none is returned here."""

    @staticmethod
    def forward(ctx, layer: Python, n: int, *tensors):
        bottoms = tensors[:n]
        tops = layer.run_forward(bottoms)
        ctx.layer, ctx.n, ctx.params = layer, n, len(tensors) - n
        ctx.save_for_backward(*bottoms, *tops)
        return tuple(tops)

    @staticmethod
    def backward(ctx, *grads):
        saved = ctx.saved_tensors
        bottoms, tops = saved[:ctx.n], saved[ctx.n:]
        need = ctx.needs_input_grad[2:2 + ctx.n]
        diffs = ctx.layer.run_backward(bottoms, tops, grads, need)
        return (None, None, *diffs) + (None,) * ctx.params
