"""NetParameter (one phase) -> CompiledNet: an nn.Module of Caffe layers and a torch.fx graph.

Compiling walks the layers in file order as Caffe's Net::Init does: build each layer from its
bottoms' shapes (so every blob's shape is known before data flows), fill its blobs, tie shared
parameters (ParamSpec names), note loss weights, and bind it to a device. The result is a plan of
named steps; `graph_module()` turns the plan into a torch.fx GraphModule whose nodes carry Caffe's
layer and blob names, so torch.compile, ONNX export, per-layer timing and drawing walk one structure.
A blob read on another logical device than the one it lives on gets an explicit transfer node.
"""
from __future__ import annotations

import keyword
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import fx, nn

from .. import layers as _layers  # noqa: F401  (registers every layer type)
from ..errors import NetspecError
from ..frontend.validate import check_allocation
from ..layers.base import SOURCE_DIR, Layer, layer_class
from ..proto import pb
from .devices import DeviceMap, float32_on_cuda

log = logging.getLogger("netspec")


@dataclass
class ParamInfo:
    """One learnable blob as Caffe's Net::learnable_params_ sees it."""
    layer: str
    index: int
    tensor: nn.Parameter
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    name: str = ""


@dataclass
class Step:
    """One layer in execution order: which blobs it reads and writes, and where it runs."""
    layer: Layer
    attr: str
    bottoms: list[str]
    tops: list[str]
    logical_device: str
    device: torch.device
    detach: list[bool] = field(default_factory=list)     # propagate_down: false
    transfers: list[tuple[str, str, str]] = field(default_factory=list)  # (blob, from, to) logical
    is_input: bool = False    # an Input layer: its tops are the net's inputs, fed from outside


def _attr_name(name: str, taken: set[str]) -> str:
    """A Python identifier for a layer name (Caffe allows '/', '.', '-' ...); unique, not a keyword."""
    base = re.sub(r"\W", "_", name) or "layer"
    if base[0].isdigit() or keyword.iskeyword(base):
        base = "_" + base
    out, k = base, 1
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out


class CompiledNet(nn.Module):
    """A Caffe net as a torch module. Call it with input blobs by name; get every blob by name."""

    def __init__(self, net: pb.NetParameter, phase: int, device_map: DeviceMap, seed: int | None,
                 source=None, input_shapes: dict | None = None):
        super().__init__()
        self.name, self.phase, self.source = net.name, phase, source
        self.device_map = device_map
        self.layers: OrderedDict[str, Layer] = OrderedDict()
        self.layer_params: list[pb.LayerParameter] = []
        self.steps: list[Step] = []
        self.input_names: list[str] = []
        self.blob_shapes: OrderedDict[str, tuple] = OrderedDict()
        self.loss_weights: dict[str, float] = {}
        self._learnable: list[ParamInfo] = []
        self._graph_cache: dict = {}
        self._build(net, seed, input_shapes or {})

    # ---- building ------------------------------------------------------------------------------
    def _build(self, net: pb.NetParameter, seed, input_shapes):
        from ..frontend import LazyLines

        lines = LazyLines(net, self.source)
        gen = _generator(seed)
        taken = set(dir(self)) | {"layers", "steps"}
        blob_device: dict[str, str] = {}
        shared: dict[str, ParamInfo] = {}
        for b, shape in zip(net.input, _legacy_input_shapes(net)):
            self._add_input(b, input_shapes.get(b, shape))
            blob_device[b] = ""
        token = SOURCE_DIR.set(Path(self.source).parent if self.source else None)
        try:
            for i, lp in enumerate(net.layer):
                lp = _with_phase(lp, self.phase)
                try:
                    self._build_layer(lp, gen, taken, blob_device, shared, input_shapes)
                    self.steps[-1].layer.origin = _Origin(self.source, lines, i)
                except NetspecError as e:
                    if e.file is None and self.source is not None:
                        # the cause kept: --debug shows a Python layer's own traceback
                        raise e.located(self.source, lines[i]) from e.__cause__
                    raise
        finally:
            SOURCE_DIR.reset(token)
        self.output_names = _net_outputs(self.input_names, self.steps)

    def _add_input(self, blob: str, shape):
        if shape is None:
            raise NetspecError(f"input blob '{blob}' has no shape (give input_param shape, or input_shapes=)")
        self.input_names.append(blob)
        self.blob_shapes[blob] = tuple(int(d) for d in shape)

    def _build_layer(self, lp, gen, taken, blob_device, shared, input_shapes) -> None:
        cls = layer_class(lp.type, lp.name)
        lp = _with_automatic_tops(lp, cls, self.blob_shapes)
        if lp.type == "Input":
            layer = cls(lp, [], self.phase)
            for t, shape in zip(lp.top, layer.top_shapes):
                self._add_input(t, input_shapes.get(t, shape))
        else:
            layer = cls(lp, [self.blob_shapes[b] for b in lp.bottom], self.phase)
            for t, shape in zip(lp.top, layer.top_shapes):
                self.blob_shapes[t] = shape
        for t, shape in zip(lp.top, layer.top_shapes):
            check_allocation(shape, f"top '{t}'", lp.name)
        layer.fill(gen)
        if lp.blobs:
            _set_blobs_from_proto(layer, lp)
        attr = _attr_name(lp.name, taken)
        self.add_module(attr, layer)
        self.layers[lp.name] = layer   # a name used twice: its last layer here, as Caffe's layer_names_index_
        self.layer_params.append(lp)
        self._tie_params(layer, lp, shared)
        self._note_losses(layer, lp)
        logical = lp.device[0] if len(lp.device) else ""
        device = self.device_map.resolve(logical, lp.name)
        if len(lp.device) > 1:
            layer.group_devices = [self.device_map.resolve(d, lp.name) for d in lp.device]
        step = Step(layer, attr, list(lp.bottom), list(lp.top), logical, device,
                    detach=[not p for p in lp.propagate_down] if lp.propagate_down else [False] * len(lp.bottom),
                    is_input=lp.type == "Input")
        for b in lp.bottom:
            if blob_device.get(b, "") != logical:     # an input blob too: it arrives on its Input's device
                step.transfers.append((b, blob_device.get(b, ""), logical))
        for t in lp.top:
            blob_device[t] = logical
        self.steps.append(step)

    def _tie_params(self, layer: Layer, lp: pb.LayerParameter, shared: dict[str, ParamInfo]):
        """ParamSpec names share one blob across layers; lr_mult 0 freezes (Caffe's AppendParam)."""
        for i, blob_name in enumerate(layer.blob_names):
            spec = lp.param[i] if i < len(lp.param) else pb.ParamSpec()
            tensor = getattr(layer, blob_name)
            if not tensor.requires_grad:            # BatchNorm statistics: Caffe forces lr_mult 0
                spec = pb.ParamSpec(name=spec.name, lr_mult=0.0, decay_mult=spec.decay_mult)
            owner = shared.get(spec.name) if spec.name else None
            if owner is None:
                info = ParamInfo(lp.name, i, tensor, spec.lr_mult, spec.decay_mult, spec.name)
                tensor.requires_grad_(spec.lr_mult != 0)
                self._learnable.append(info)
                if spec.name:
                    shared[spec.name] = info
                continue
            # Caffe's PERMISSIVE mode would also accept another shape of the same count; netspec shares
            # one tensor, so it needs the same shape in both modes.
            if tuple(owner.tensor.shape) != tuple(tensor.shape):
                raise NetspecError(f"shared parameter '{spec.name}' (blob {i}) has shape {tuple(tensor.shape)}, "
                                   f"but its owner '{owner.layer}' has {tuple(owner.tensor.shape)}", layer=lp.name)
            if i < len(lp.param) and lp.param[i].HasField("lr_mult") and lp.param[i].lr_mult != owner.lr_mult:
                raise NetspecError(f"shared parameter '{spec.name}' has lr_mult {lp.param[i].lr_mult}, its owner "
                                   f"'{owner.layer}' {owner.lr_mult}", layer=lp.name)
            setattr(layer, blob_name, owner.tensor)

    def _note_losses(self, layer: Layer, lp: pb.LayerParameter):
        weights = list(lp.loss_weight) or ([layer.default_loss_weight] if layer.default_loss_weight else [])
        if len(lp.loss_weight) > len(lp.top):
            raise NetspecError(f"{len(lp.loss_weight)} loss_weight values for {len(lp.top)} top(s)", layer=lp.name)
        for t, w in zip(lp.top, weights):
            if w:
                self.loss_weights[t] = self.loss_weights.get(t, 0.0) + float(w)

    # ---- running ---------------------------------------------------------------------------------
    def forward(self, *args, **inputs) -> dict[str, torch.Tensor]:
        """Every blob by name (last version of in-place blobs); inputs by blob name or position."""
        inputs.update(zip(self.input_names, args))
        missing = [b for b in self.input_names if b not in inputs]
        if missing:
            raise NetspecError(f"net '{self.name}': no value given for input blob(s) {', '.join(missing)}")
        return self.graph_module()(*[inputs[b] for b in self.input_names])

    def run_steps(self, blobs: dict[str, torch.Tensor], start: int = 0, end: int | None = None,
                  hook=None) -> dict[str, torch.Tensor]:
        """Run layers start..end (inclusive) eagerly over `blobs` in place (pycaffe's forward(start, end))."""
        end = len(self.steps) - 1 if end is None else end
        for k in range(start, end + 1):
            step = self.steps[k]
            if step.is_input:
                continue
            args = []
            for b, d in zip(step.bottoms, step.detach):
                x = blobs[b]
                if x.device != step.device and not getattr(step.layer, "group_devices", None):
                    x = x.to(step.device)
                args.append(x.detach() if d else x)
            try:
                out = step.layer(*args)
            except NetspecError:
                raise
            except Exception as e:
                raise RuntimeError(f"while executing layer '{step.layer.name}' ({step.layer.type}): {e}") from e
            out = out if isinstance(out, (tuple, list)) else (out,)
            blobs.update(zip(step.tops, out))
            if hook is not None:
                hook(k, step, blobs)
        return blobs

    def total_loss(self, blobs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Caffe's objective: the sum over loss tops of loss_weight * sum(top)."""
        terms = [w * blobs[b].sum() for b, w in self.loss_weights.items()]
        if not terms:
            raise NetspecError(f"net '{self.name}' has no loss (no top with a loss weight)")
        return terms[0] if len(terms) == 1 else torch.stack([t.to(terms[0].device) for t in terms]).sum()

    # ---- views -------------------------------------------------------------------------------------
    def learnable_params(self) -> list[ParamInfo]:
        return list(self._learnable)

    def params(self) -> OrderedDict:
        """Layer name -> its parameter blobs (layers without blobs left out). A name used twice maps to
        the first such layer, the one Caffe's CopyTrainedLayersFrom fills from a caffemodel."""
        out = OrderedDict()
        for step in self.steps:
            if step.layer.blob_names:
                out.setdefault(step.layer.name, step.layer.blobs)
        return out

    def fill(self, seed: int | None = None) -> None:
        gen = _generator(seed)
        for step in self.steps:
            step.layer.fill(gen)

    def close(self) -> None:
        """Release every layer's outside resources (Data layers' readers); the net is not used after."""
        for step in self.steps:
            step.layer.close()

    def place(self) -> "CompiledNet":
        """Move each layer to its bound device (after compiling on the CPU)."""
        for step in self.steps:
            step.layer.to(step.device)
        if any(step.device.type == "cuda" for step in self.steps):
            float32_on_cuda()
        return self

    def graph_module(self, outputs: list[str] | None = None) -> fx.GraphModule:
        """The net as a torch.fx GraphModule returning a dict of `outputs` (default: every blob)."""
        key = tuple(outputs) if outputs is not None else None
        if key not in self._graph_cache:
            self._graph_cache[key] = _to_fx(self, outputs)
        return self._graph_cache[key]

    def extra_repr(self) -> str:
        return f"name={self.name!r}, phase={'TRAIN' if self.phase == pb.TRAIN else 'TEST'}"


def _to_fx(net: CompiledNet, outputs) -> fx.GraphModule:
    graph = fx.Graph()
    current: dict[str, fx.Node] = {}
    taken: set[str] = set()
    for b in net.input_names:
        current[b] = graph.placeholder(_attr_name(b, taken))
    for step in net.steps:
        if step.is_input:
            continue
        moved = {}
        for blob, src, dst in step.transfers:
            node = graph.call_method("to", (current[blob], step.device))
            node.name = _attr_name(f"{blob}_{src or 'default'}_to_{dst or 'default'}", taken)
            node.meta.update(netspec_transfer=(blob, src, dst), netspec_consumer=step.layer.name)
            moved[blob] = node
        args = []
        for b, d in zip(step.bottoms, step.detach):
            a = moved.get(b, current[b])
            args.append(graph.call_method("detach", (a,)) if d else a)
        node = graph.call_module(step.attr, tuple(args))
        node.meta.update(netspec_layer=step.layer.name, netspec_type=step.layer.type,
                         netspec_device=step.logical_device)
        if len(step.tops) == 1:
            current[step.tops[0]] = node
        else:
            for j, t in enumerate(step.tops):
                current[t] = graph.call_function(_getitem, (node, j))
    wanted = list(current) if outputs is None else outputs
    unknown = [b for b in wanted if b not in current]
    if unknown:
        raise NetspecError(f"net '{net.name}' has no blob(s) {', '.join(unknown)}")
    graph.output({b: current[b] for b in wanted})
    gm = fx.GraphModule(net, graph, class_name=re.sub(r"\W", "_", net.name or "Net"))
    gm.graph.lint()
    return gm


def _net_outputs(inputs: list[str], steps: list[Step]) -> list[str]:
    """Caffe's net outputs: blobs whose last version no later layer reads, sorted by name (Caffe
    keeps them in a std::set); a blob rewritten in place by the last reader counts."""
    available = set(inputs)
    for step in steps:
        if step.is_input:
            available.update(step.tops)
            continue
        available.difference_update(step.bottoms)
        available.update(step.tops)
    return sorted(available)


@dataclass
class _Origin:
    """Where a layer is in its prototxt, worked out when asked (errors found while running)."""
    source: object
    lines: object
    index: int

    def __call__(self) -> tuple:
        return (self.source, self.lines[self.index]) if self.source is not None else (None, None)


def _generator(seed: int | None) -> torch.Generator:
    """The fillers' generator: seeded when seed >= 0 (the solver's random_seed), else from the clock."""
    return torch.Generator().manual_seed(int(seed) if seed is not None and seed >= 0 else torch.seed() % (2**63))


def _with_automatic_tops(lp: pb.LayerParameter, cls, blobs) -> pb.LayerParameter:
    """Caffe's Layer::AutoTopBlobs: a loss layer written without its top (BVLC's pascal_finetune net)
    gets one, so its loss still counts. Caffe names it "(automatic)"; netspec keys blobs by name, so a
    second one is "(automatic)_1"."""
    needed = max(cls.min_tops or 0, cls.exact_tops or 0)
    if not cls.default_loss_weight or len(lp.top) >= needed:
        return lp
    out = pb.LayerParameter()
    out.CopyFrom(lp)
    while len(out.top) < needed:
        name, k = "(automatic)", 0
        while name in blobs or name in out.top:
            k += 1
            name = f"(automatic)_{k}"
        out.top.append(name)
    return out


def _getitem(seq, i):
    return seq[i]


def _with_phase(lp: pb.LayerParameter, phase: int) -> pb.LayerParameter:
    if lp.HasField("phase"):
        return lp
    out = pb.LayerParameter()
    out.CopyFrom(lp)
    out.phase = phase
    return out


def _legacy_input_shapes(net: pb.NetParameter):
    """Shapes of a legacy `input:` list (the front end normally upgrades these to an Input layer)."""
    if net.input_shape:
        return [tuple(s.dim) for s in net.input_shape]
    dims = list(net.input_dim)
    return [tuple(dims[4 * i:4 * i + 4]) for i in range(len(net.input))] if dims else [None] * len(net.input)


def _set_blobs_from_proto(layer: Layer, lp: pb.LayerParameter):
    from ..formats.blobs import blob_to_array

    if len(lp.blobs) != len(layer.blob_names):
        raise NetspecError(f"{len(lp.blobs)} blobs in the net file, the layer has {len(layer.blob_names)}",
                           layer=lp.name)
    with torch.no_grad():
        for name, bp in zip(layer.blob_names, lp.blobs):
            arr = blob_to_array(bp)
            t = getattr(layer, name)
            if arr.size != t.numel():
                raise NetspecError(f"blob {name} has {arr.size} values in the net file, expected shape "
                                   f"{tuple(t.shape)}", layer=lp.name)
            t.copy_(torch.from_numpy(arr.reshape(tuple(t.shape))))


def compile_net(net: pb.NetParameter, phase: int | None = None, device_map=None, device="cpu",
                seed: int | None = None, source=None, input_shapes: dict | None = None) -> CompiledNet:
    """Compile a front-end-prepared NetParameter for one phase (default: its state's phase)."""
    phase = net.state.phase if phase is None else phase
    dmap = device_map if isinstance(device_map, DeviceMap) else DeviceMap(device_map, default=device)
    return CompiledNet(net, phase, dmap, seed, source, input_shapes).place()
