"""The inference path of a compiled TEST net: one torch.fx graph run under torch.inference_mode, with
rewrites that only an inference can afford (what OpenCV's dnn module does to Caffe models).

Every rewrite stays inside an in-place chain, the layers that overwrite one blob one after another
(`conv1` -> `bn_conv1` -> `scale_conv1` -> `conv1_relu` all writing blob `conv1`, as ResNet's and
GoogLeNet's prototxts are written). Caffe keeps only a blob's last version, so the versions inside a
chain are never visible, and every blob a user can read keeps its own value:

- Dropout at TEST is the identity: its top is its bottom, nothing runs.
- BatchNorm with global statistics, and a per-channel Scale after it, right after the Convolution that
  wrote the blob: folded into that convolution's weights and bias (worked out in float64). The folded
  weights are cached and worked out again when any of their blobs changes (its torch version counter
  or storage; a blob handed out to numpy by pycaffe is also compared with the copy the fold used).
- BatchNorm (+ Scale) elsewhere: one per-channel multiply-add instead of four passes.
- ReLU in place on a fresh result (a convolution, inner product, pooling, ...): computed in place.

Anything a rewrite does not cover runs as the layer itself. Outputs equal the eager net's within
1e-5 of each blob's largest value (tests/test_graph_inference.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..layers.pooling import Pooling
from ..proto import pb

_fast_layout = Pooling._fast_layout

# Layers whose result is a new tensor no other blob shares, so an in-place ReLU may overwrite it.
_FRESH = {"Convolution", "InnerProduct", "Pooling", "LRN", "Eltwise", "Deconvolution", "Scale", "BatchNorm"}

# Layers whose code is written with torch calls that take any memory layout (no .view of the bottom),
# so the channels-last results of oneDNN's convolutions pass through them; other layers get their
# bottoms made contiguous first. Their tops are channels-last when a bottom is.
_ANY_LAYOUT = {"ReLU", "Sigmoid", "TanH", "AbsVal", "BNLL", "ELU", "Exp", "Log", "Power", "Split", "Eltwise",
               "Concat", "LRN", "Pooling", "Softmax", "InnerProduct", "Dropout"}


class BlobsSeen:
    """What a cache was worked out from: each blob's torch version counter and storage, and copies of
    the blobs pycaffe handed to numpy (whose writes bump no counter). `current()`: still the same."""

    def __init__(self, tensors):
        self.tensors = list(tensors)
        self.key = self._key()
        self.copies = [t.detach().clone() if _exposed(t) else None for t in self.tensors]

    def _key(self) -> tuple:
        return tuple((t._version, t.data_ptr()) for t in self.tensors)

    def current(self) -> bool:
        if self._key() != self.key:
            return False
        # a blob exposed since has no copy yet
        return all(c is not None and torch.equal(t, c) for t, c in zip(self.tensors, self.copies) if _exposed(t))


def _exposed(t: torch.Tensor) -> bool:
    return getattr(t, "_netspec_exposed", False)


@dataclass
class _Chain:
    """Steps [first, last] writing one blob, run as one folded convolution or affine."""
    conv: object | None          # the Convolution layer, or None for a lone BatchNorm(+Scale)
    bn: object | None
    scale: object | None
    relu: object | None
    last: int
    sources: list = field(default_factory=list)


def _per_channel_scale(layer, blob_shape) -> bool:
    return (layer is not None and layer.type == "Scale" and len(layer.lp.bottom) == 1 and layer.start == 1
            and len(layer.scale.shape) == 1 and layer.scale.shape[0] == blob_shape[1])


def _in_place(step, blob: str, kind: str) -> bool:
    return (step.layer.type == kind and not step.is_input and step.bottoms == [blob] and step.tops == [blob]
            and not step.transfers)


def _chain_at(net, k: int, pack: bool) -> _Chain | None:
    """The in-place chain starting at step k, if a rewrite covers it (`pack`: lone convolutions too,
    to run them as packed oneDNN convolutions)."""
    steps, step = net.steps, net.steps[k]
    layer = step.layer
    if len(step.tops) != 1 or step.transfers:
        return None
    blob = step.tops[0]
    conv = layer if (layer.type == "Convolution" and len(step.bottoms) == 1 and layer.axis == 1
                     and len(layer.kernel) == 2 and layer.group_devices is None) else None
    bn = scale = relu = None
    if conv is not None:
        j = k + 1
        if j < len(steps) and _in_place(steps[j], blob, "BatchNorm") and steps[j].layer.use_global_stats:
            bn, j = steps[j].layer, j + 1
    elif layer.type == "BatchNorm" and layer.use_global_stats and len(step.bottoms) == 1:
        bn, j = layer, k + 1     # a lone BatchNorm reads its bottom and writes a new tensor
    else:
        return None
    if bn is not None and j < len(steps) and _in_place(steps[j], blob, "Scale") \
            and _per_channel_scale(steps[j].layer, net.blob_shapes[blob]):
        scale, j = steps[j].layer, j + 1
    if conv is not None and j < len(steps) and _in_place(steps[j], blob, "ReLU"):
        relu, j = steps[j].layer, j + 1
    if bn is None and not (conv is not None and pack and _packable(step)):
        return None          # a convolution alone (its in-place ReLU still runs in place, see below)
    chain = _Chain(conv, bn, scale, relu, j - 1)
    chain.sources = [t for l in (conv, bn, scale) if l is not None for t in l.blobs]
    return chain


def _packable(step) -> bool:
    """Whether a plain convolution runs on the CPU, where oneDNN's convolution with weights packed once
    beats torch's per-call F.conv2d (see _Folded)."""
    return step.device.type == "cpu" and _onednn_available()


def _onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled


class _Folded(nn.Module):
    """A convolution (with BatchNorm (+ Scale) folded in, and its in-place ReLU fused), or a lone
    per-channel affine; the weights worked out once and cached.

    On the CPU in float32 the convolution is oneDNN's, called as torch.compile's freezing calls it: the
    weights reordered once into oneDNN's blocked layout, activations channels-last, bias and ReLU done
    by the convolution itself. F.conv2d instead reorders the weights on every call and, on NCHW
    tensors, picks kernels that with two threads run up to 10x slower for 1x1 convolutions (ResNet-50
    at batch 1: 17 ms of convolutions in 8 representative layers against 11 ms; benchmarks/RESULTS.md).
    Its results are channels-last tensors: the graph hands them on to layers that do not care about
    layout and makes them contiguous for the others; pycaffe's Blob makes a blob contiguous the first
    time its array is handed out."""

    def __init__(self, chain: _Chain, pack: bool = True):
        super().__init__()
        self.chain = chain
        self._seen: BlobsSeen | None = None      # the blobs the cached weights were worked out from
        self.weight = self.bias = None
        self._packed = None               # oneDNN's reordered weight, made on the first CPU call
        self._onednn_ok = pack and _onednn_available()
        conv, relu = chain.conv, chain.relu
        if conv is not None:
            self._geometry = (list(conv.pad), list(conv.stride), list(conv.dilation), conv.group)
        self._post = ("none", []) if relu is None else ("relu", []) if not relu.slope \
            else ("leaky_relu", [float(relu.slope)])

    def _affine(self):
        """y = x·a + c per channel, from BatchNorm's global statistics and the Scale after it (float64)."""
        bn, sc = self.chain.bn, self.chain.scale
        sf = float(bn.scale_factor[0])
        inv = 0.0 if sf == 0 else 1.0 / sf
        mean, var = bn.mean.double() * inv, bn.variance.double() * inv
        a = 1.0 / torch.sqrt(var + bn.eps)
        c = -mean * a
        if sc is not None:
            g = sc.scale.double()
            a, c = a * g, c * g
            if sc.bias_term:
                c = c + sc.bias.double()
        return a, c

    def refresh(self) -> None:
        if self._seen is not None and self._seen.current():
            return
        with torch.no_grad():
            conv = self.chain.conv
            if conv is not None and self.chain.bn is None:
                self.weight = conv.weight.detach()
                self.bias = conv.bias.detach() if conv.bias_term else None
            else:
                a, c = self._affine()
                if conv is not None:
                    w = conv.weight.double() * a.reshape(-1, *([1] * (conv.weight.dim() - 1)))
                    b = (conv.bias.double() * a if conv.bias_term else 0) + c
                    self.weight, self.bias = w.to(conv.weight.dtype), b.to(conv.weight.dtype)
                else:
                    self.weight, self.bias = a.float(), c.float()
            self._packed = None
        self._seen = BlobsSeen(self.chain.sources)

    def release(self) -> None:
        """Drop the folded and packed weights (worked out again on the next call): a graph kept only
        for the rare call (graph/fused.py) need not hold a second copy of the net's weights."""
        self._seen, self.weight, self.bias, self._packed = None, None, None, None

    def forward(self, x):
        self.refresh()
        conv = self.chain.conv
        if conv is not None and self._onednn(x):
            if self._packed is None:
                pad, stride, dilation, group = self._geometry
                self._packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                    self.weight.to_mkldnn(), pad, stride, dilation, group, list(x.shape))
            attr, scalars = self._post
            return torch.ops.mkldnn._convolution_pointwise(
                x.contiguous(memory_format=torch.channels_last), self._packed, self.bias, *self._geometry,
                attr, scalars, None)
        if conv is not None:
            bias = None if self.bias is None else self.bias.to(x.device)
            y = F.conv2d(x, self.weight.to(x.device), bias, stride=conv.stride, padding=conv.pad,
                         dilation=conv.dilation, groups=conv.group)
        else:
            shape = (1, -1) + (1,) * (x.dim() - 2)
            y = torch.addcmul(self.bias.to(x.device).reshape(shape), x, self.weight.to(x.device).reshape(shape))
        relu = self.chain.relu
        return y if relu is None else _relu_(y, relu.slope)

    def _onednn(self, x) -> bool:
        # oneDNN's availability is the graph's, decided when it was made (a per-call query costs
        # more than LeNet's first convolution at batch 1)
        return (self._onednn_ok and x.is_cpu and x.dtype == torch.float32 and self.weight.dtype == torch.float32
                and x.dim() == 4 and x.numel() > 0)


def _relu_(y, slope: float):
    return F.leaky_relu_(y, slope) if slope else y.relu_()


def _node_name(text: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", text) or "v"
    base = "_" + base if base[0].isdigit() else base
    out, k = base, 1
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out


def inference_module(net, outputs: list[str] | None = None, pack: bool = True) -> fx.GraphModule:
    """A GraphModule computing `outputs` (default: every blob's last version) of TEST net `net`
    from its input blobs, with the rewrites above. Call it under torch.inference_mode().
    `pack=False`: plain F.conv2d convolutions (for graph/fused.py, whose tracer needs aten's ops)."""
    root = nn.Module()
    root.net = net
    graph = fx.Graph(owning_module=root)
    taken: set[str] = set()
    current = {b: graph.placeholder(_node_name(b, taken)) for b in net.input_names}
    fresh: set[str] = set()          # blobs whose current tensor no other blob shares
    any_layout: set[str] = set()     # blobs whose current tensor may be channels-last
    k = 0
    while k < len(net.steps):
        step = net.steps[k]
        if step.is_input:
            k += 1
            continue
        chain = _chain_at(net, k, pack) if net.phase == pb.TEST else None
        if chain is not None:
            fresh.discard(step.bottoms[0])
            name = f"fold{len(root._modules)}"
            root.add_module(name, _Folded(chain, pack))
            node = graph.call_module(name, (current[step.bottoms[0]],))
            node.name = _node_name(step.tops[0], taken)
            current[step.tops[0]] = node
            fresh.add(step.tops[0])
            laid_out = chain.conv is not None or step.bottoms[0] in any_layout
            (any_layout.add if laid_out else any_layout.discard)(step.tops[0])
            k = chain.last + 1
            continue
        k += 1
        layer = step.layer
        if layer.type == "Dropout" and net.phase == pb.TEST and not step.transfers:
            current[step.tops[0]] = current[step.bottoms[0]]
            fresh.difference_update((step.tops[0], step.bottoms[0]))
            (any_layout.add if step.bottoms[0] in any_layout else any_layout.discard)(step.tops[0])
            continue
        if step.tops and _in_place(step, step.tops[0], "ReLU") and step.tops[0] in fresh:   # HDF5Output has none
            node = graph.call_function(_relu_, (current[step.tops[0]], float(layer.slope)))
            node.name = _node_name(step.tops[0], taken)
            current[step.tops[0]] = node
            continue
        fresh.difference_update(step.bottoms)     # read since it was made: a view of it may live on
        laid_out = [b for b in step.bottoms if b in any_layout]
        if laid_out and layer.type not in _ANY_LAYOUT:
            for b in laid_out:
                current[b] = graph.call_method("contiguous", (current[b],))
                any_layout.discard(b)
            laid_out = []
        args = []
        moved = {blob: graph.call_method("to", (current[blob], step.device)) for blob, _, _ in step.transfers}
        for b, d in zip(step.bottoms, step.detach):
            args.append(moved.get(b, current[b]))
        node = _direct(graph, step, args, net.blob_shapes, pack) if not step.transfers else None
        if node is None:
            node = graph.call_module(f"net.{step.attr}", tuple(args))
        node.name = _node_name(step.layer.name, taken)
        if len(step.tops) == 1:
            current[step.tops[0]] = node
        else:
            for j, t in enumerate(step.tops):
                current[t] = graph.call_function(_getitem, (node, j))
        for t in step.tops:
            (fresh.add if layer.type in _FRESH and len(step.tops) == 1 else fresh.discard)(t)
            (any_layout.add if laid_out else any_layout.discard)(t)
    wanted = list(current) if outputs is None else list(outputs)
    graph.output({b: current[b] for b in wanted})
    gm = fx.GraphModule(root, graph, class_name="Inference")
    gm.graph.lint()
    return gm


def _getitem(seq, i):
    return seq[i]


def _param(graph, step, name: str):
    """A layer's blob as an attribute of the graph's root: the same Parameter object (so always the live
    weights), one attribute lookup per call instead of three."""
    root, key = graph.owning_module, f"{step.attr}__{name}"
    if not hasattr(root, key):
        setattr(root, key, getattr(step.layer, name))
    return graph.get_attr(key)


def _pooling_is_native(layer) -> bool:
    """Whether torch's pooling gives Caffe's windows for every input size: pad at most half the kernel,
    and in ceil mode the last window clipped alike (Caffe clips only with padding; without, the two
    agree when stride <= kernel)."""
    return all(p <= k // 2 and (not layer.ceil or p > 0 or s <= k)
               for k, s, p in zip(layer.kernel, layer.stride, layer.pad))


def _pool(x, kind: str, kernel, stride, pad, ceil: bool, relayout: bool = True):
    # (relayout=False for oneDNN Graph's trace, which pools NCHW itself: two copies a pooling otherwise)
    xl, moved = _fast_layout(x) if relayout else (x, False)
    if kind == "max":
        y = F.max_pool2d(xl, kernel, stride, pad, ceil_mode=ceil)
    else:
        y = F.avg_pool2d(xl, kernel, stride, pad, ceil_mode=ceil, count_include_pad=True)
    return y.contiguous() if moved else y


def _direct(graph, step, args, shapes, pack: bool = True) -> fx.Node | None:
    """The layer's torch call written into the graph, its blobs read as attributes (always the live
    weights), for the layers a small net is made of: plain 2-D Convolution, InnerProduct, single-top MAX/AVE
    Pooling, Softmax. At batch 1 a module call per layer costs about as much as LeNet's arithmetic."""
    layer, bias = step.layer, None
    if layer.type == "Convolution" and len(args) == 1 and layer.axis == 1 and len(layer.kernel) == 2 \
            and layer.group_devices is None:
        bias = _param(graph, step, "bias") if layer.bias_term else None
        return graph.call_function(F.conv2d, (args[0], _param(graph, step, "weight"), bias, layer.stride,
                                              layer.pad, layer.dilation, layer.group))
    if layer.type == "InnerProduct" and not layer.transpose:
        rows = args[0]
        if len(shapes[step.bottoms[0]]) != layer.axis + 1:
            rows = graph.call_function(torch.flatten, (rows, layer.axis))
        bias = _param(graph, step, "bias") if layer.bias_term else None
        return graph.call_function(F.linear, (rows, _param(graph, step, "weight"), bias))
    if layer.type == "Pooling" and layer.num_tops == 1 and not layer.global_pooling \
            and layer.method in (pb.PoolingParameter.MAX, pb.PoolingParameter.AVE) and _pooling_is_native(layer):
        kind = "max" if layer.method == pb.PoolingParameter.MAX else "ave"
        return graph.call_function(_pool, (args[0], kind, layer.kernel, layer.stride, layer.pad, layer.ceil, pack))
    if layer.type == "Softmax":
        return graph.call_function(_softmax, (args[0], layer.axis))
    return None


def _softmax(x, axis: int):
    return F.softmax(x, dim=axis, dtype=torch.float32).to(x.dtype)
