"""pycaffe's API (caffe.Net, Blob, the mode functions) as a thin layer over CompiledNet.

`import netspec as caffe` runs pycaffe scripts: `net.blobs['data'].data[...] = x` writes the very
tensor the net reads (on the CPU; on a GPU, a host copy synchronised before each forward, as pycaffe),
`net.forward()` returns the output blobs, `net.backward()` fills every `.diff`. As in Caffe, the diff
of a blob rewritten in place is the gradient of its first version (what Caffe's in-place backward
leaves there), and a blob's data is its last version.
"""
from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import torch

from .errors import NetspecError
from .frontend import load_net
from .graph import compile_net
from .proto import pb

_MODE = {"device": torch.device("cpu"), "gpu_id": 0, "seed": None}


def set_mode_cpu():
    _MODE["device"] = torch.device("cpu")


def set_mode_gpu():
    if not torch.cuda.is_available():
        raise NetspecError("set_mode_gpu: no CUDA device is available")
    _MODE["device"] = torch.device("cuda", _MODE["gpu_id"])


def set_device(device_id: int):
    _MODE["gpu_id"] = int(device_id)
    if _MODE["device"].type == "cuda":
        _MODE["device"] = torch.device("cuda", int(device_id))


def set_random_seed(seed: int):
    _MODE["seed"] = int(seed)
    torch.manual_seed(int(seed))


def current_device() -> torch.device:
    return _MODE["device"]


def layer_type_list() -> list[str]:
    from .layers import REGISTRY

    return sorted(REGISTRY)


def _host(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return t.numpy() if t.device.type == "cpu" else t.cpu().numpy()


class Blob:
    """A named blob: `.data` and `.diff` are numpy arrays sharing the net's CPU memory."""

    def __init__(self, data: torch.Tensor, diff: torch.Tensor | None = None):
        self._data = data
        self._diff = diff
        self._host_data = self._host_diff = None

    def _bind(self, data: torch.Tensor, diff: torch.Tensor | None = None):
        self._data, self._diff = data, diff
        self._host_data = self._host_diff = None

    @property
    def data(self) -> np.ndarray:
        if self._data.device.type == "cpu":
            return self._data.detach().numpy()
        if self._host_data is None:
            self._host_data = _host(self._data)
        return self._host_data

    @property
    def diff(self) -> np.ndarray:
        if self._diff is None:
            self._diff = torch.zeros(self._data.shape, dtype=torch.float32)
        if self._diff.device.type == "cpu":
            return self._diff.detach().numpy()
        if self._host_diff is None:
            self._host_diff = _host(self._diff)
        return self._host_diff

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

    def _sync_to(self, device: torch.device) -> torch.Tensor:
        """The tensor a forward reads: host writes pushed to the device first."""
        if self._host_data is not None and self._data.device.type != "cpu":
            self._data.copy_(torch.from_numpy(self._host_data))
        return self._data if self._data.device == device else self._data.to(device)


class _ParamBlob(Blob):
    """A parameter blob: data is the Parameter itself, diff its .grad (created on first access)."""

    def __init__(self, param: torch.nn.Parameter):
        super().__init__(param)

    @property
    def data(self) -> np.ndarray:
        return _host(self._data) if self._data.device.type != "cpu" else self._data.detach().numpy()

    @property
    def diff(self) -> np.ndarray:
        p = self._data
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        return _host(p.grad) if p.device.type != "cpu" else p.grad.numpy()

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


class Net:
    """caffe.Net(model_file, phase), Net(model_file, weights_file, phase), keywords weights=, phase=,
    level=, stages=."""

    def __init__(self, model_file, *args, phase=None, weights=None, level=0, stages=(), device_map=None):
        args = list(args)
        if args and isinstance(args[0], (str, os.PathLike)):
            weights = args.pop(0)
        if args:
            phase = args.pop(0)
        if phase is None:
            raise NetspecError("Net(model_file, [weights,] phase): the phase (netspec.TRAIN or TEST) is required")
        net_param = load_net(model_file, phase, level=level, stages=stages)
        self.force_backward = net_param.force_backward
        self._net = compile_net(net_param, phase, device_map=device_map, device=_MODE["device"],
                                seed=_MODE["seed"], source=model_file if not isinstance(model_file, pb.NetParameter)
                                and os.path.exists(str(model_file)) else None)
        self._first: dict[str, torch.Tensor] = {}
        self.blobs: OrderedDict[str, Blob] = OrderedDict(
            (b, Blob(torch.zeros(s, dtype=torch.float32))) for b, s in self._net.blob_shapes.items())
        self.params = OrderedDict((n, [_ParamBlob(p) for p in ps]) for n, ps in self._net.params().items())
        self.layers = [LayerView(l, self.params.get(n, [])) for n, l in self._net.layers.items()]
        self._layer_names = list(self._net.layers)
        self.layer_dict = OrderedDict(zip(self._layer_names, self.layers))
        self.top_names = OrderedDict((s.layer.name, list(s.tops)) for s in self._net.steps)
        self.bottom_names = OrderedDict((s.layer.name, list(s.bottoms)) for s in self._net.steps)
        self.blob_loss_weights = OrderedDict((b, self._net.loss_weights.get(b, 0.0)) for b in self.blobs)
        if weights:
            for w in str(weights).split(","):
                self.copy_from(w)

    # ---- pycaffe attributes ------------------------------------------------------------------
    @property
    def compiled(self):
        """The CompiledNet behind this Net (an nn.Module)."""
        return self._net

    @property
    def inputs(self) -> list[str]:
        return list(self._net.input_names)

    @property
    def outputs(self) -> list[str]:
        return list(self._net.output_names)

    @property
    def phase(self):
        return self._net.phase

    def _index(self, name, default):
        if name is None:
            return default
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise NetspecError(f"no layer named '{name}' in net '{self._net.name}'") from None

    # ---- running -----------------------------------------------------------------------------
    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """Run layers start..end; inputs as keyword arrays; returns {output (or `blobs`): array}."""
        for name, value in kwargs.items():
            if name not in self.blobs:
                raise NetspecError(f"forward: no input blob named '{name}'")
            self.blobs[name].data[...] = value
        lo, hi = self._index(start, 0), self._index(end, len(self._layer_names) - 1)
        dev = _MODE["device"]
        track = self._net.phase == pb.TRAIN or self.force_backward
        with torch.set_grad_enabled(track):
            state = {b: self.blobs[b]._sync_to(dev) for b in self._net.input_names}
            if lo > 0:
                state.update({b: blob._data for b, blob in self.blobs.items() if b not in state})
            if track and self.force_backward:
                for b in self._net.input_names:
                    state[b] = state[b].detach().requires_grad_(True)
            if lo == 0:
                self._first = {b: state[b] for b in self._net.input_names}
            first = self._first

            def keep_first(k, step, blobs):
                for t in step.tops:
                    if t not in step.bottoms:
                        first[t] = blobs[t]
                        if blobs[t].requires_grad and blobs[t].grad_fn is not None:
                            blobs[t].retain_grad()

            self._net.run_steps(state, lo, hi, hook=keep_first)
        for b, t in state.items():
            self.blobs[b]._bind(t if t.device.type == "cpu" else t, None)
        self._state = state
        names = self.outputs if end is None else self.top_names[self._layer_names[hi]]
        return {b: self.blobs[b].data for b in (blobs or names)}

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """Back-propagate the loss (or the given top diffs); fills every blob's and param's .diff."""
        state = getattr(self, "_state", None)
        if state is None:
            raise NetspecError("backward() before forward()")
        if kwargs:
            tops = [state[b] for b in kwargs]
            grads = [torch.as_tensor(np.asarray(v, dtype=np.float32)).to(t.device) for v, t in
                     zip(kwargs.values(), tops)]
            torch.autograd.backward(tops, grads)
        elif self._net.loss_weights:
            self._net.total_loss(state).backward()
        for b, blob in self.blobs.items():
            t = self._first.get(b)
            g = t.grad if t is not None and t.grad is not None else None
            blob._diff = g.detach() if g is not None else torch.zeros(blob.shape, dtype=torch.float32)
            blob._host_diff = None
        for b, w in self._net.loss_weights.items():      # Caffe seeds a loss top's diff with its weight
            self.blobs[b]._diff = torch.full(self.blobs[b].shape, float(w))
        return {b: self.blobs[b].diff for b in (diffs or self.inputs)}

    def reshape(self):
        """Propagate input blob shapes through the net (Caffe's Net::Reshape)."""
        shapes = {b: self.blobs[b].shape for b in self._net.input_names}
        for step in self._net.steps:
            if step.is_input:
                continue
            tops = step.layer.infer_top_shapes([shapes[b] for b in step.bottoms])
            shapes.update(zip(step.tops, (tuple(t) for t in tops)))
        for b, s in shapes.items():
            if self.blobs[b].shape != s:
                self.blobs[b].reshape(*s)

    def clear_param_diffs(self):
        for blobs in self.params.values():
            for b in blobs:
                if b._data.grad is not None:
                    b._data.grad.zero_()

    # ---- weights -------------------------------------------------------------------------------
    def copy_from(self, path):
        from .io.caffemodel import load_weights

        return load_weights(self._net.params(), path)

    def save(self, path):
        from .io.caffemodel import write_caffemodel

        write_caffemodel(path, self._net.layer_params, self._net.params(), name=self._net.name)
