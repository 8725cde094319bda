"""pycaffe's API (caffe.Net, Blob, the mode functions) as a thin layer over CompiledNet
(python/caffe/pycaffe.py and _caffe.cpp; Net::ForwardFromTo / BackwardFromTo in src/caffe/net.cpp).

`import netspec as caffe` runs pycaffe scripts. `net.blobs['data'].data[...] = x` writes the tensor
the net reads (on a GPU: a host copy that goes back to the device before the net next runs, as
Caffe's SyncedMemory). `forward(start, end)` runs layers start..end on what the blobs hold;
`backward(start, end)` runs layers start down to end, each top's gradient being its blob's current
`.diff` (a loss top's diff is its loss weight, set once as in Caffe), and overwrites the diffs of
the bottoms it reaches; parameter diffs accumulate. A full backward right after a full forward uses
that forward's autograd graph; any other backward re-runs its layers on the bottoms they saw in the
last forward (same random draws, running statistics left alone) and differentiates that segment.
As in Caffe, the diff of a blob rewritten in place is the gradient of its first version, its data
the last version. Caffe's automatic Split blobs are not kept: a blob read by several layers gets
the sum of their gradients.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections import OrderedDict
from itertools import zip_longest

import numpy as np
import torch

from .blob import Blob, LayerView, _ParamBlob
from ..errors import NetspecError
from ..frontend import load_net
from ..graph import compile_net
from ..graph.fused import FusedInference
from ..graph.inference import inference_module
from ..proto import pb

log = logging.getLogger("netspec")

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
    from ..layers import REGISTRY

    return sorted(REGISTRY)


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
        net_param = load_net(model_file, phase, level=level, stages=stages or ())
        self.force_backward = net_param.force_backward
        self._net = compile_net(net_param, phase, device_map=device_map, device=_MODE["device"],
                                seed=_MODE["seed"], source=model_file if not isinstance(model_file, pb.NetParameter)
                                and os.path.exists(str(model_file)) else None)
        steps = self._net.steps
        self._blob_names = list(self._net.blob_shapes)
        self.blobs: OrderedDict[str, Blob] = OrderedDict(
            (b, Blob(torch.zeros(s, dtype=torch.float32))) for b, s in self._net.blob_shapes.items())
        own = [[_ParamBlob(p) for p in s.layer.blobs] for s in steps]
        # A layer name used twice (Caffe allows it): pycaffe's dicts keep the last such layer.
        self.params = OrderedDict((s.layer.name, b) for s, b in zip(steps, own) if b)
        self._layer_names = [s.layer.name for s in steps]
        # a Python layer is the user's own object, as in pycaffe (its attributes reachable from here)
        self.layers = [s.layer.user if s.layer.type == "Python" else LayerView(s.layer, b)
                       for s, b in zip(steps, own)]
        self.layer_dict = OrderedDict(zip(self._layer_names, self.layers))
        self.top_names = OrderedDict((s.layer.name, list(s.tops)) for s in steps)
        self.bottom_names = OrderedDict((s.layer.name, list(s.bottoms)) for s in steps)
        self._blob_loss_weights = [self._net.loss_weights.get(b, 0.0) for b in self._blob_names]
        self._need = _need_backward(self._net, self.force_backward)
        self._output_names = list(self._net.output_names)
        self._seen: dict[int, tuple] = {}     # step -> (bottoms it read, RNG state before it) in the last forward
        self._live = False                    # the last forward was full and tracked, its graph unused
        self._state: dict = {}
        self._first: dict = {}
        self._hooks: dict[str, list] = {"before_forward": [], "after_forward": [], "before_backward": [],
                                        "after_backward": []}
        self._inference = None                # the TEST-phase fast path's graph, made on first use
        self._fusion = None                   # and its fused alternative (graph/fused.py)
        self._asked: set[str] = set()         # blobs the running forward() call returns
        self._shape_cache: dict = {}          # input shapes -> every blob's shape
        self._grads: dict = {}                # blob -> gradient of its first version, kept by _keep_grad
        for step in steps:                    # DummyData's constant tops are the blobs themselves
            kept = getattr(step.layer, "constant_tops", None)
            for i, t in (kept() if kept else {}).items():
                self.blobs[step.tops[i]]._bind(t, alias=True)
        for b, w in self._net.loss_weights.items():   # Caffe seeds a loss top's diff with its weight, once
            self.blobs[b]._set_diff(torch.full(self.blobs[b].shape, float(w)))
        if weights:
            # a path holding a comma (02-fine-tuning saves 'weights.pretrained, end-to-end.caffemodel')
            # is one file, as pycaffe reads it; otherwise a list as `caffe train -weights a,b`
            one = os.path.exists(str(weights))
            for w in [str(weights)] if one else str(weights).split(","):
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
        """Blobs no later layer reads, by name (Caffe's order), a blob rewritten in place included."""
        return list(self._output_names)

    @property
    def _blobs(self) -> list[Blob]:
        """The blobs in Caffe's order (the index space of _top_ids, _bottom_ids, _inputs, _outputs)."""
        return [self.blobs[b] for b in self._blob_names]

    @property
    def _inputs(self) -> list[int]:
        return [self._blob_names.index(b) for b in self.inputs]

    @property
    def _outputs(self) -> list[int]:
        return [self._blob_names.index(b) for b in self._output_names]

    @property
    def blob_loss_weights(self) -> OrderedDict:
        return OrderedDict(zip(self._blob_names, self._blob_loss_weights))

    @property
    def phase(self):
        return self._net.phase

    def _top_ids(self, i: int) -> list[int]:
        return [self._blob_names.index(b) for b in self._net.steps[i].tops]

    def _bottom_ids(self, i: int) -> list[int]:
        return [self._blob_names.index(b) for b in self._net.steps[i].bottoms]

    def _index(self, name, default):
        if name is None:
            return default
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise NetspecError(f"no layer named '{name}' in net '{self._net.name}'") from None

    # ---- forward -----------------------------------------------------------------------------
    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """Run layers start..end, inputs given as keyword arrays; {end's tops (or the outputs) and
        `blobs`: their data}."""
        if kwargs:
            self._feed(kwargs, self.inputs, "data", "Input blob arguments do not match net inputs")
        self._asked = set(blobs or [])
        try:
            self._forward(self._index(start, 0), self._index(end, len(self.layers) - 1))
        finally:
            self._asked = set()
        names = (self.top_names[end] if end is not None else self.outputs) + list(blobs or [])
        return {b: self.blobs[b].data for b in dict.fromkeys(names)}

    def _feed(self, arrays: dict, names: list[str], field: str, mismatch: str):
        if set(arrays) != set(names):
            raise NetspecError(f"{mismatch}: given {sorted(arrays)}, the net has {sorted(names)}")
        for name, value in arrays.items():
            value = np.asarray(value)
            blob = self.blobs[name]
            if value.shape[:1] != blob.shape[:1]:
                raise NetspecError(f"blob '{name}' holds a batch of {blob.shape[0]}, the {field} given "
                                   f"has {value.shape[0] if value.ndim else 'no batch axis'}")
            getattr(blob, field)[...] = value

    def _forward(self, lo: int, hi: int):
        """Caffe's ForwardFromTo(lo, hi): layer indices, both included."""
        self._sync_host_writes()
        steps = self._net.steps
        record = (self._net.phase == pb.TRAIN or self.force_backward) and torch.is_grad_enabled()
        graph = record and lo == 0 and hi == len(steps) - 1     # a full backward may reuse it
        if (self._net.phase == pb.TEST and not record and lo == 0 and hi == len(steps) - 1
                and not any(self._hooks.values())):
            return self._forward_inference()
        # copies when recording: the blobs' tensors take this forward's results in place afterwards
        state = {b: self._leaf(self.blobs[b]._data.clone() if record else self.blobs[b]._data, b, graph)
                 for b in (self.inputs if lo == 0 else self.blobs)}
        if lo == 0:
            self._seen.clear()
        first = dict(state)
        with torch.set_grad_enabled(graph):
            for k in range(lo, hi + 1):
                for fn in self._hooks["before_forward"]:
                    fn(k)
                if not steps[k].is_input:
                    self._forward_step(k, state, first, record, graph)
                if self._hooks["after_forward"]:      # the hooks see this layer's tops in net.blobs
                    for t in steps[k].tops:
                        self.blobs[t]._bind(state[t])
                    for fn in self._hooks["after_forward"]:
                        fn(k)
        for b, t in state.items():
            self.blobs[b]._bind(t)
        self._live = graph
        self._state, self._first = (state, first) if graph else ({}, {})

    def _forward_inference(self):
        """A whole TEST forward with nothing to record: one fx graph with the inference rewrites
        (netspec/graph/inference.py), or a oneDNN-fused one where that measured faster
        (netspec/graph/fused.py). Every blob still gets its own value: a fused forward computes the
        outputs, the blobs asked for and those whose arrays are out; any other blob is worked out
        from this forward's inputs by the per-layer graph when something first reads it."""
        if self._inference is None:
            self._inference = inference_module(self._net)
            self._fusion = FusedInference(self._net)
        inputs = [self.blobs[b]._data for b in self.inputs]
        wanted = [b for b in self.blobs if b not in self.inputs and (
            b in self._output_names or b in self._asked or self.blobs[b]._arrays[0] is not None)]
        with torch.no_grad():
            out, every = self._fusion.run(self._inference, inputs, wanted)
        self._seen.clear()
        for b, t in out.items():
            self.blobs[b]._bind(t)
        if not every:
            self._defer_rest(inputs, set(out))
        self._live, self._state, self._first = False, {}, {}

    def _defer_rest(self, inputs: list[torch.Tensor], done: set[str]):
        inputs = [t.clone() for t in inputs]      # the user may overwrite the input arrays before reading
        rest = [b for b in self.blobs if b not in done and b not in self.inputs]

        def settle():
            if not self._fusion.weights_unchanged():
                log.warning("net '%s': blobs of the last forward not yet read are worked out with the weights "
                            "as changed since that forward (read them before changing weights)", self._net.name)
            with torch.no_grad():
                out = self._inference(*inputs)
            for b in rest:
                deferred = self.blobs[b]._deferred
                if deferred is not None and deferred[0] is settle:      # not bound again since
                    self.blobs[b]._bind(out[b])

        shapes = self._shapes(tuple(tuple(t.shape) for t in inputs))
        for b in rest:
            self.blobs[b]._defer(settle, shapes[b])

    def _forward_step(self, k: int, state: dict, first: dict, record: bool, graph: bool):
        step = self._net.steps[k]
        self._seen.pop(k, None)
        if record:
            self._seen[k] = ([state[b] for b in step.bottoms], _rng_state(step.device))
        self._net.run_steps(state, k, k)
        for t in step.tops:
            if not step.bottoms and state[t].grad_fn is None:   # a source: its tops are data
                state[t] = self._leaf(state[t], t, graph)
            elif t not in step.bottoms and state[t].grad_fn is not None:
                _keep_grad(state[t], t, self._grads)   # its gradient becomes the blob's diff
            elif t not in step.bottoms and graph and self._need.get(t) and not state[t].requires_grad:
                # Caffe gives every top of a layer with a differentiable bottom a diff (Filter's
                # top of a non-learning bottom): a leaf collects what its consumers send.
                state[t] = self._leaf(state[t], t, True)
            if t not in step.bottoms:
                first[t] = state[t]

    # ---- pycaffe's forward callbacks (Net::add_before_forward / add_after_forward) ----------------
    def before_forward(self, fn):
        """Call `fn(i)` before layer i runs in every forward (i: the layer's index in net.layers)."""
        self._hooks["before_forward"].append(fn)

    def after_forward(self, fn):
        """Call `fn(i)` after layer i runs in every forward; net.blobs already holds its tops."""
        self._hooks["after_forward"].append(fn)

    def before_backward(self, fn):
        """Call `fn(i)` before layer i back-propagates (from the last layer down), as Caffe's
        Net::add_before_backward; a backward with such callbacks runs layer by layer."""
        self._hooks["before_backward"].append(fn)

    def after_backward(self, fn):
        """Call `fn(i)` once layer i has back-propagated: its blobs' diffs hold its contribution."""
        self._hooks["after_backward"].append(fn)

    def _by_layer(self) -> bool:
        return bool(self._hooks["before_backward"] or self._hooks["after_backward"])

    def _leaf(self, t: torch.Tensor, blob: str, track: bool) -> torch.Tensor:
        """A graph-free view of `t`, differentiable when a backward computes this blob's diff."""
        t = t.detach()
        return t.requires_grad_(True) if track and self._need.get(blob) else t

    # ---- backward ----------------------------------------------------------------------------
    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """Back-propagate from layer `start` down to `end`, top diffs as keyword arrays (or the
        blobs' current diffs); {end's bottoms (or the inputs) and `diffs`: their diff}."""
        if kwargs:
            self._feed(kwargs, self.outputs, "diff", "Top diff arguments do not match net outputs")
        self._backward(self._index(start, len(self.layers) - 1), self._index(end, 0))
        names = (self.bottom_names[end] if end is not None else self.inputs) + list(diffs or [])
        return {b: self.blobs[b].diff for b in dict.fromkeys(names)}

    def _backward(self, hi: int, lo: int):
        """Caffe's BackwardFromTo(hi, lo): layer indices, hi >= lo."""
        self._sync_host_writes()
        if self._by_layer():
            self._live, self._state, self._first = False, {}, {}
            diffs = self._backward_by_layer(lo, hi)
            for b in self._written(lo, hi):
                g = diffs.get(b)
                self.blobs[b]._set_diff(g.detach() if g is not None else torch.zeros(self.blobs[b].shape))
            return
        if self._live and lo == 0 and hi == len(self._net.steps) - 1:
            first, final = self._first, self._state
        else:
            first, final = self._rerun(lo, hi)
        self._live, self._state, self._first = False, {}, {}
        seeds, grads = [], []
        for b in _unread(self._net, lo, hi):
            # a zero diff is back-propagated too: Caffe runs every layer's Backward (a Python layer's
            # backward may set its blobs' diffs whatever the top diff)
            t, d = final.get(b), self.blobs[b]._diff_tensor()
            if t is not None and t.grad_fn is not None:
                seeds.append(t)
                grads.append(d.to(t.device, t.dtype).reshape(t.shape))
        if seeds:
            torch.autograd.backward(seeds, grads)
        for b in self._written(lo, hi):
            leaf = first.get(b)      # a leaf collects its .grad; other versions' gradients were kept
            g = self._grads.get(b, leaf.grad if leaf is not None and leaf.grad_fn is None else None)
            self.blobs[b]._set_diff(g.detach() if g is not None else torch.zeros(self.blobs[b].shape))
        self._grads = {}

    def _backward_by_layer(self, lo: int, hi: int) -> dict:
        """Caffe's BackwardFromTo with callbacks: layers lo..hi re-run, each on leaf copies of what it
        read in the last forward, then differentiated one at a time from hi down to lo; a blob read
        by several layers gets the sum of their diffs (Caffe's Split). {blob: diff of the version the
        segment started from}."""
        io, first, seeds = self._rerun_cut(lo, hi)
        acc, done = dict(seeds), {}                        # (blob, version) -> diff
        for k in range(hi, lo - 1, -1):
            for fn in self._hooks["before_backward"]:
                fn(k)
            if k in io:
                self._layer_backward(k, *io[k], acc, done)
            for fn in self._hooks["after_backward"]:
                fn(k)
        merged = {**done, **acc}
        return {b: merged.get(key) for b, key in first.items()}

    def _layer_backward(self, k, ins, in_keys, outs, out_keys, acc, done):
        """Layer k's Backward: its tops' diffs to its bottoms' (added to acc) and its blobs' .grad."""
        pairs = [(t, key) for t, key in zip(outs, out_keys) if key in acc and t.grad_fn is not None]
        for _, key in pairs:
            done[key] = acc.pop(key)
        leaves = {id(x): (x, key) for x, key in zip(ins, in_keys) if x.requires_grad}
        params = [p for p in self._net.steps[k].layer.parameters() if p.requires_grad]
        if not pairs or not (leaves or params):
            return
        xs = [x for x, _ in leaves.values()]
        got = torch.autograd.grad([t for t, _ in pairs], xs + params,
                                  [done[key].to(t.device, t.dtype).reshape(t.shape) for t, key in pairs],
                                  allow_unused=True)
        for (_, key), g in zip(leaves.values(), got):
            if g is not None:
                acc[key] = g if key not in acc else acc[key] + g
        for p, g in zip(params, got[len(xs):]):
            if g is not None:
                p.grad = g if p.grad is None else p.grad.add_(g)

    def _rerun_cut(self, lo: int, hi: int):
        """Layers lo..hi again, each from its own leaves (the graph cut between layers), blobs' versions
        counted: ({step: (bottom leaves, their keys, tops, their keys)}, {blob: first key}, seeds)."""
        value, ver, first, io = {}, {}, {}, {}
        with self._replaying(lo, hi) as replay:
            for k, step, read in replay:
                for b in step.bottoms:
                    if b not in value:
                        value[b], ver[b] = read(b).detach(), 0
                        first.setdefault(b, (b, 0))
                local = {b: self._leaf(value[b], b, True) for b in step.bottoms}
                ins, in_keys = [local[b] for b in step.bottoms], [(b, ver[b]) for b in step.bottoms]
                self._net.run_steps(local, k, k)
                for t in step.tops:
                    ver[t] = ver.get(t, -1) + 1
                    value[t] = local[t].detach()
                    first.setdefault(t, (t, ver[t]))
                io[k] = (ins, in_keys, [local[t] for t in step.tops], [(t, ver[t]) for t in step.tops])
        seeds = {(b, ver[b]): self.blobs[b]._diff_tensor() for b in _unread(self._net, lo, hi) if b in ver}
        return io, first, seeds

    def _written(self, lo: int, hi: int) -> list[str]:
        """Blobs whose diff a backward over layers lo..hi computes: bottoms it propagates down to."""
        out = {}
        for step in self._net.steps[lo:hi + 1]:
            if step.bottoms and not step.is_input:
                out.update((b, None) for b, d in zip(step.bottoms, step.detach) if not d and self._need.get(b))
        return list(out)

    def _rerun(self, lo: int, hi: int) -> tuple[dict, dict]:
        """Layers lo..hi again, from leaf copies of what they read in the last forward (the blobs'
        data for layers that have not run): {blob: first version}, {blob: last version}."""
        current, first = {}, {}
        with self._replaying(lo, hi) as replay:
            for k, step, read in replay:
                for b in step.bottoms:
                    if b not in current:
                        current[b] = first[b] = self._leaf(read(b), b, True)
                self._net.run_steps(current, k, k)
                for t in step.tops:
                    if t not in first and current[t].grad_fn is not None:
                        _keep_grad(current[t], t, self._grads)
                        first[t] = current[t]
        return first, current

    @contextlib.contextmanager
    def _replaying(self, lo: int, hi: int):
        """The layers lo..hi that compute (not sources) to run again as in the last forward: an iterator
        of (index, step, read) where read(blob) is what that layer read then (the blob's data for a
        layer that has not run), each given with the RNG as it stood before that layer ran. Gradients
        on; the RNG and the running statistics a forward updates (BatchNorm's) restored afterwards."""
        steps = self._net.steps
        frozen = _frozen_state([s.layer for s in steps[lo:hi + 1] if s.bottoms])
        cuda = sorted({s.device.index or 0 for s in steps[lo:hi + 1] if s.device.type == "cuda"})
        try:
            with torch.random.fork_rng(devices=cuda), torch.enable_grad():
                yield self._replayed_steps(lo, hi)
        finally:
            _restore(frozen)

    def _replayed_steps(self, lo: int, hi: int):
        for k in range(lo, hi + 1):
            step = self._net.steps[k]
            if step.is_input or not step.bottoms:      # sources hold data, nothing to redo
                continue
            seen, rng = self._seen.get(k, (None, None))
            read = dict(zip(step.bottoms, seen)) if seen is not None else {}
            if rng is not None:
                _set_rng_state(rng, step.device)
            yield k, step, lambda b, read=read: read[b] if b in read else self.blobs[b]._data

    # ---- whole batches ---------------------------------------------------------------------------
    def forward_all(self, blobs=None, **kwargs):
        """forward() over arrays longer than a batch, batch by batch; the outputs concatenated."""
        outs: dict[str, list] = {}
        for batch, pad in self._batches(kwargs):
            _collect(outs, self.forward(blobs=blobs, **batch), pad)
        return {b: np.asarray(v) for b, v in outs.items()}

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """forward_all with backward over the same batches (input arrays and top diffs as keywords):
        (outputs, diffs)."""
        ins = {k: v for k, v in kwargs.items() if k in self.inputs}
        tops = {k: v for k, v in kwargs.items() if k not in ins}
        outs: dict[str, list] = {}
        grads: dict[str, list] = {}
        for (fb, fpad), (bb, bpad) in zip_longest(self._batches(ins), self._batches(tops), fillvalue=({}, 0)):
            pad = fpad if ins else bpad
            _collect(outs, self.forward(blobs=blobs, **fb), pad)
            _collect(grads, self.backward(diffs=diffs, **bb), pad)
        return {b: np.asarray(v) for b, v in outs.items()}, {b: np.asarray(v) for b, v in grads.items()}

    def _batches(self, arrays: dict):
        """Batch-sized slices of `arrays` (the last one zero-padded) and how much padding each has."""
        if not arrays:
            yield {}, 0
            return
        arrays = {k: np.asarray(v) for k, v in arrays.items()}
        n = len(next(iter(arrays.values())))
        size = next(iter(self.blobs.values())).shape[0]
        for i in range(0, n, size):
            pad = max(0, i + size - n)
            yield {k: np.concatenate([v[i:i + size], np.zeros((pad,) + v.shape[1:], v.dtype)])
                   for k, v in arrays.items()}, pad

    # ---- shapes and parameters -------------------------------------------------------------------
    def _shapes(self, inputs: tuple) -> dict:
        """Every blob's shape for these input shapes (the net's own order), as Net::Reshape works them out."""
        cached = self._shape_cache.get(inputs)
        if cached is None:
            shapes = dict(zip(self._net.input_names, inputs))
            for step in self._net.steps:
                if step.is_input:
                    continue
                tops = step.layer.infer_top_shapes([shapes[b] for b in step.bottoms])
                shapes.update(zip(step.tops, (tuple(t) for t in tops)))
            cached = self._shape_cache[inputs] = shapes
        return cached

    def reshape(self):
        """Propagate input blob shapes through the net (Caffe's Net::Reshape)."""
        shapes = self._shapes(tuple(self.blobs[b].shape for b in self._net.input_names))
        for b, s in shapes.items():
            if self.blobs[b].shape != s:
                self.blobs[b].reshape(*s)
        self._seen.clear()
        self._live = False

    def clear_param_diffs(self):
        for blobs in self.params.values():
            for b in blobs:
                if b._data.grad is not None:
                    b._data.grad.zero_()

    def _sync_host_writes(self):
        for blob in self.blobs.values():
            blob._push()
        for blobs in self.params.values():
            for b in blobs:
                b._push()

    def share_with(self, other: Net):
        """Caffe's ShareTrainedLayersWith: same-named layers take `other`'s parameter memory."""
        self._sync_host_writes()
        other._sync_host_writes()
        for name, blobs in self.params.items():
            theirs = other.params.get(name)
            if theirs is None:
                continue
            if len(theirs) != len(blobs):
                raise NetspecError(f"cannot share: {len(blobs)} blobs here, {len(theirs)} in the other net",
                                   layer=name)
            for j, (mine, src) in enumerate(zip(blobs, theirs)):
                if mine.shape != src.shape:
                    raise NetspecError(f"cannot share blob {j}: shape {mine.shape} here, {src.shape} in the "
                                       "other net", layer=name)
                mine._data.data = src._data.data

    def copy_from(self, path):
        from ..formats.caffemodel import load_weights

        self._sync_host_writes()
        return load_weights(self._net.params(), path)

    def save(self, path):
        from ..formats.caffemodel import write_caffemodel

        self._sync_host_writes()
        write_caffemodel(path, self._net.layer_params, self._net.params(), name=self._net.name)

    def save_hdf5(self, path):
        """Caffe's Net::ToHDF5: the weights as a .caffemodel.h5 (data/<layer>/<i>)."""
        from ..formats.hdf5 import write_hdf5_weights

        self._sync_host_writes()
        write_hdf5_weights(path, [lp.name for lp in self._net.layer_params], self._net.params())

    def load_hdf5(self, path):
        """Caffe's Net::CopyTrainedLayersFromHDF5."""
        from ..formats.hdf5 import load_hdf5_weights

        self._sync_host_writes()
        return load_hdf5_weights(self._net.params(), path)

    def set_input_arrays(self, data, labels):
        """Feed the first layer, a MemoryData, with `data` (N x C x H x W float32, C-contiguous) and
        `labels` (N, or N x 1 x 1 x 1); N a multiple of its batch_size (pycaffe's checks)."""
        first = next(iter(self._net.layers.values()), None)
        if first is None or first.type != "MemoryData":
            raise NetspecError("set_input_arrays may only be called if the first layer is a MemoryData layer"
                               + (f" (it is '{first.name}', {first.type})" if first is not None else ""))
        if isinstance(labels, np.ndarray) and labels.ndim == 1:
            labels = np.ascontiguousarray(labels[:, np.newaxis, np.newaxis, np.newaxis])
        first.reset(data, labels)


def _collect(into: dict, arrays: dict, pad: int):
    """Append each batch's rows (padding dropped; a scalar such as a loss as one value)."""
    for b, v in arrays.items():
        v = np.array(v, copy=True)
        into.setdefault(b, []).extend(v[:len(v) - pad] if v.ndim else [v])


def _unread(net, lo: int, hi: int) -> list[str]:
    """Blobs layers lo..hi write (inputs too, for the whole net) that no later layer of lo..hi reads:
    where a backward over those layers starts (Caffe's net outputs, for the whole net)."""
    free = dict.fromkeys(net.input_names) if lo == 0 else {}
    for step in net.steps[lo:hi + 1]:
        for b in step.bottoms:
            free.pop(b, None)
        free.update(dict.fromkeys(step.tops))
    return list(free)


def _need_backward(net, force: bool) -> dict[str, bool]:
    """Caffe's blob_need_backward_: a blob gets a diff when a parameter or a differentiable bottom
    lies upstream of it, or everywhere under force_backward (inputs and data only then)."""
    need = dict.fromkeys(net.input_names, force)
    for step in net.steps:
        learns = any(p.requires_grad for p in step.layer.parameters())
        if step.is_input or not step.bottoms and not learns:   # a Parameter layer's top learns
            need.update(dict.fromkeys(step.tops, force))
            continue
        grads = force or learns or any(
            need.get(b) and not d for b, d in zip(step.bottoms, step.detach))
        for t in step.tops:
            need[t] = need.get(t, False) or grads
    return need


def _keep_grad(t: torch.Tensor, blob: str, kept: dict) -> None:
    """Keep the gradient the backward computes for non-leaf `t` in kept[blob] (its diff). A hook
    rather than retain_grad(): retain_grad copies every gradient (it may become an accumulating .grad),
    about 1.3M floats per LeNet iteration; the reference a hook keeps also stops autograd from adding
    later gradients into that tensor in place."""
    t.register_hook(lambda g: kept.__setitem__(blob, g))


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device):
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _frozen_state(layers) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Copies of the tensors a forward may change but a backward must not (BatchNorm's running sums)."""
    out = []
    for layer in layers:
        out += [(t, t.detach().clone()) for t in layer.parameters() if not t.requires_grad]
        out += [(t, t.clone()) for t in layer.buffers() if t.numel()]
    return out


def _restore(saved):
    with torch.no_grad():
        for t, copy in saved:
            t.copy_(copy)
