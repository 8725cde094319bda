"""Caffe's .caffemodel: a binary NetParameter whose layers carry their parameter blobs.

Reading follows Net::CopyTrainedLayersFrom (src/caffe/net.cpp): file layers are matched to the net's
layers by name; a file layer the net lacks is ignored; a net layer the file lacks keeps its initial
values; a matched layer must have the same number of blobs, each of the same shape (Blob::ShapeEquals,
which lets an old 4-D blob 1×1×M×N fill an M×N weight). netspec checks every layer before copying
anything, so a mismatch never leaves a half-loaded net. V1 (`layers`, enum types) and V0 files are
read as Caffe's UpgradeNetAsNeeded would see them.

Writing follows Net::ToProto and Layer::ToProto (include/caffe/layer.hpp): the net's name, then every
layer's LayerParameter as the net holds it (phase set, as Net::Init does) with its blobs replaced by
the current parameters. Files go to a temporary name first (atomic.py).

`read_weights` reads blobs straight from the file bytes (memory-mapped, one copy per blob) instead of
building the whole NetParameter: for a 61M-parameter AlexNet it is several times faster than
`weights_by_layer(read_caffemodel(...))`, which it must always agree with.
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from ..errors import NetspecError
from ..proto import pb
from .atomic import atomic_open
from .blobs import (
    as_float32,
    blob_to_array,
    encode_blob,
    fmt_shape,
    is_legacy,
    scan_blob,
    shape_equals,
    shaped,
)
from .protofile import (
    LEN,
    VARINT,
    WireError,
    check_not_text,
    encode_varint,
    iter_fields,
    mapped_file,
    read_message,
    signed,
)
from ..proto.v1types import v0_type, v1_type

KIND = ".caffemodel"


class LayerBlobs(NamedTuple):
    """One file layer: its name, type string, blobs (float32, the file's shape) and which blobs use
    the legacy num/channels/height/width shape."""
    name: str
    type: str
    blobs: list
    legacy: list


def read_caffemodel(path) -> pb.NetParameter:
    """The NetParameter stored in the binary file `path`, blobs included, as written (V1 stays V1)."""
    try:
        net = read_message(path, pb.NetParameter, KIND)
    except NetspecError as e:
        raise _solver_state_hint(path) or e from None
    if not net.layer and not net.layers:
        raise _solver_state_hint(path) or NetspecError(
            f"holds no layers: not a Caffe {KIND} (a net definition or another protobuf?)", file=path)
    return net


def _solver_state_hint(path) -> NetspecError | None:
    """The error for a .solverstate given as weights (an easy slip with Caffe's snapshot pairs)."""
    try:
        state = read_message(path, pb.SolverState, ".solverstate")
    except NetspecError:
        return None
    if not state.history or not state.HasField("learned_net"):
        return None
    return NetspecError(f"this is a .solverstate (a solver snapshot), not a binary {KIND}; its weights are "
                        f"in '{state.learned_net}'", file=path)


def _mixed(source) -> NetspecError:
    return NetspecError("has both 'layer' (current) and 'layers' (V1) records; Caffe would drop the "
                        "current ones", file=source)


def _layer_records(net: pb.NetParameter, source) -> list[tuple]:
    """(name, type, blob protos) of every layer of a current, V1 or V0 NetParameter."""
    if net.layer and net.layers:
        raise _mixed(source)
    if net.layer:
        return [(lp.name, lp.type, lp.blobs) for lp in net.layer]
    records = []
    for v1 in net.layers:
        if v1.HasField("layer"):  # V0: the V1 record only wraps the old layer
            records.append((v1.layer.name, v0_type(v1.layer.type), v1.layer.blobs))
        else:
            records.append((v1.name, v1_type(v1.type), v1.blobs))
    return records


def _from_net(net: pb.NetParameter, source) -> list[LayerBlobs]:
    out = []
    for name, type_name, protos in _layer_records(net, source):
        blobs = [blob_to_array(b, file=source, layer=name, index=i) for i, b in enumerate(protos)]
        out.append(LayerBlobs(name, type_name, blobs, [is_legacy(b) for b in protos]))
    return out


def weights_by_layer(net: pb.NetParameter, source=None) -> OrderedDict:
    """layer name -> (type, [float32 arrays]) for every layer of `net`, in file order. A name that
    occurs twice keeps its last blobs (as copying both, in order, would)."""
    return OrderedDict((r.name, (r.type, r.blobs)) for r in _from_net(net, source or "<NetParameter>"))


# --- reading blobs straight from the file bytes -------------------------------------------------

# NetParameter.layer (100) is a LayerParameter: name 1, type 2, blobs 7. NetParameter.layers (2) is a
# V1LayerParameter: name 4, type 5 (enum), blobs 6, and in V0 files the wrapped layer 1, a
# V0LayerParameter: name 1, type 2, blobs 50.
_CURRENT, _V1, _V0 = (1, 2, 7), (4, 5, 6), (1, 2, 50)


def _text(buf, start, stop) -> str:
    return bytes(buf[start:stop]).decode("utf-8", errors="replace")


def _scan_layer(buf, start, stop, fields, v1=False):
    """(name, type, raw blobs) of one layer record; a later name or type wins, blobs accumulate."""
    name_no, type_no, blobs_no = fields
    name, type_name, blobs, v0_parts = "", "", [], []
    for number, wire, value, end in iter_fields(buf, start, stop):
        if number == name_no and wire == LEN:
            name = _text(buf, value, end)
        elif number == type_no and wire == (VARINT if v1 else LEN):
            type_name = v1_type(signed(value, 32)) if v1 else _text(buf, value, end)
        elif number == blobs_no and wire == LEN:
            blobs.append(scan_blob(buf, value, end))
        elif v1 and number == 1 and wire == LEN:  # V0: the V1 record only wraps the old layer
            v0_parts.append(_scan_layer(buf, value, end, _V0))
    if v0_parts:  # merged as protobuf merges a message field that occurs twice
        name = next((n for n, _, _ in reversed(v0_parts) if n), "")
        type_name = next((t for _, t, _ in reversed(v0_parts) if t), "")
        return name, v0_type(type_name), [b for _, _, part in v0_parts for b in part]
    return name, type_name, blobs


def _scan_net(buf) -> list:
    current, legacy = [], []
    for number, wire, value, end in iter_fields(buf, 0, len(buf)):
        if number == 100 and wire == LEN:
            current.append(_scan_layer(buf, value, end, _CURRENT))
        elif number == 2 and wire == LEN:
            legacy.append(_scan_layer(buf, value, end, _V1, v1=True))
    return None if current and legacy else current or legacy


@contextlib.contextmanager
def _mapped_layers(path):
    """The file's layers, their blobs read-only views of the memory-mapped file: copy them inside
    the `with` (one copy from the page cache to where the values go)."""
    with mapped_file(path, KIND) as buf:
        check_not_text(buf, path, KIND)
        try:
            raw = _scan_net(buf)
        except (WireError, NetspecError):
            raw = None
        if raw:
            yield [LayerBlobs(name, type_name,
                              [shaped(flat, shape, file=path, layer=name, index=i)
                               for i, (flat, shape, _) in enumerate(blobs)],
                              [legacy for _, _, legacy in blobs]) for name, type_name, blobs in raw]
            return
    # let the protobuf reader explain: not protobuf, no layers, V1 and current layers mixed...
    _from_net(read_caffemodel(path), path)
    raise NetspecError("its layers' blobs are malformed", file=path)


def read_weights(path) -> OrderedDict:
    """layer name -> (type, [float32 arrays]) of the .caffemodel `path`; equals
    `weights_by_layer(read_caffemodel(path))`, several times faster for large files. A
    .caffemodel.h5 (hdf5.py) gives its layers with type ''."""
    from .hdf5 import is_hdf5, read_hdf5_weights

    if is_hdf5(path):
        return OrderedDict((name, ("", [blobs[i] for i in sorted(blobs)]))
                           for name, blobs in read_hdf5_weights(path).items())
    with _mapped_layers(path) as layers:
        return OrderedDict((r.name, (r.type, [np.array(b, np.float32) for b in r.blobs])) for r in layers)


# --- copying into a net ---------------------------------------------------------------------------

@dataclass
class LoadReport:
    """What `load_weights` did: layers copied, net layers left at their initial values (absent from
    the file) and file layers with blobs that the net does not have (ignored)."""
    source: str
    copied: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    ignored: list = field(default_factory=list)

    def summary(self) -> str:
        text = f"copied {len(self.copied)} layers from {self.source}"
        if self.missing:
            text += f"; kept initial values of {len(self.missing)} absent from it: {', '.join(self.missing)}"
        if self.ignored:
            text += f"; ignored {len(self.ignored)} the net lacks: {', '.join(self.ignored)}"
        return text


def _plan(params: Mapping, records: list[LayerBlobs], source) -> tuple[list, LoadReport]:
    """Check every matched layer against the net; return the (target, array) copies to make."""
    report, copies = LoadReport(str(source)), []
    for rec in records:
        targets = params.get(rec.name)
        if targets is None:
            if rec.blobs:
                report.ignored.append(rec.name)
            continue
        if len(targets) != len(rec.blobs):
            raise NetspecError(f"the file has {len(rec.blobs)} blobs for this layer, the net has "
                               f"{len(targets)}", file=source, layer=rec.name)
        for i, (target, array, legacy) in enumerate(zip(targets, rec.blobs, rec.legacy)):
            if not shape_equals(tuple(target.shape), array.shape, legacy):
                raise NetspecError(f"blob {i} has shape {fmt_shape(array.shape)} in the file but "
                                   f"{fmt_shape(tuple(target.shape))} in the net (rename the layer to "
                                   "learn it from scratch)", file=source, layer=rec.name)
            copies.append((target, array))
        if rec.name not in report.copied:
            report.copied.append(rec.name)
    report.missing = [name for name, targets in params.items() if len(targets) and name not in report.copied]
    return copies, report


def _copy_into(target, array: np.ndarray) -> None:
    """Copy `array` (possibly a read-only view of a mapped file) into a tensor or numpy blob."""
    if not isinstance(target, torch.Tensor):  # a numpy blob, as pycaffe's net.params[name][i].data
        np.copyto(target, array.reshape(target.shape))
    elif target.device.type == "cpu" and target.dtype == torch.float32:
        np.copyto(target.detach().numpy(), array.reshape(target.shape))
    else:  # other devices and dtypes: through an owned float32 tensor
        target.copy_(torch.from_numpy(np.array(array, np.float32)).reshape(target.shape))


def load_weights(params: Mapping[str, Sequence], weights, source=None) -> LoadReport:
    """Copy trained blobs into `params` (layer name -> the layer's blobs as tensors, e.g.
    `net.params()`) from a .caffemodel path or a NetParameter, keeping each tensor's device and dtype.
    `source` names the weights in messages (default: the path). Raises NetspecError, before copying
    anything, when a matched layer's blob count or a blob's shape differs. An HDF5 file (Caffe's
    .caffemodel.h5, see hdf5.py) is read as Net::CopyTrainedLayersFrom dispatches to it."""
    from .hdf5 import is_hdf5, load_hdf5_weights

    if isinstance(weights, pb.NetParameter):
        source = source or "<NetParameter>"
        return _load(params, _from_net(weights, source), source)
    if is_hdf5(weights):
        return load_hdf5_weights(params, weights, source)
    with _mapped_layers(weights) as records:
        return _load(params, records, source or str(weights))


def _load(params: Mapping, records: list[LayerBlobs], source) -> LoadReport:
    copies, report = _plan(params, records, source)
    with torch.no_grad():
        for target, array in copies:
            _copy_into(target, array)
    return report


# --- writing --------------------------------------------------------------------------------------

def _split_at_blobs(layer: pb.LayerParameter) -> tuple[bytes, bytes]:
    """The layer's serialized fields numbered below `blobs` (7) and above it. Protobuf writes fields
    in number order, so low + blobs + high is the layer as Caffe's serializer writes it."""
    low, high = pb.LayerParameter(), pb.LayerParameter()
    low.CopyFrom(layer)
    high.CopyFrom(layer)
    low.DiscardUnknownFields()  # unknown fields go last: keep them in `high` only
    for desc, _ in layer.ListFields():
        (low if desc.number > 7 else high).ClearField(desc.name)
    return low.SerializeToString(), high.SerializeToString()


def _write_layer(f, layer: pb.LayerParameter, blobs, diffs, phase: int) -> None:
    layer_copy = pb.LayerParameter()
    layer_copy.CopyFrom(layer)
    layer_copy.ClearField("blobs")
    if not layer_copy.HasField("phase"):
        layer_copy.phase = phase
    low, high = _split_at_blobs(layer_copy)
    chunks = []
    for i, blob in enumerate(blobs):
        parts = encode_blob(as_float32(blob), None if diffs is None else as_float32(diffs[i]))
        chunks += [encode_varint(7 << 3 | LEN) + encode_varint(sum(len(p) for p in parts)), *parts]
    size = len(low) + sum(len(c) for c in chunks) + len(high)
    f.write(encode_varint(100 << 3 | LEN) + encode_varint(size) + low)
    for chunk in chunks:
        f.write(chunk)
    f.write(high)


def _net_layers(net) -> tuple[list, str, int]:
    if isinstance(net, pb.NetParameter):
        if net.layers and not net.layer:
            raise NetspecError("cannot write a V1 net ('layers'); upgrade it to 'layer' records first")
        return list(net.layer), net.name, net.state.phase
    return list(net), "", pb.TRAIN


def write_caffemodel(path, net, params: Mapping[str, Sequence], *, diffs: Mapping | None = None,
                     name: str | None = None, phase: int | None = None) -> None:
    """Write a .caffemodel: `net` (a NetParameter or its LayerParameters) with each layer's blobs
    replaced by `params[layer name]` (tensors or arrays; layers absent from `params` get none) and
    their gradients from `diffs` when given (Caffe's snapshot_diff). Layers without a phase get
    `phase` (default: the NetParameter's state phase, else TRAIN, as in Caffe's Net::Init)."""
    layers, net_name, net_phase = _net_layers(net)
    unknown = set(params) - {lp.name for lp in layers}
    if unknown:
        raise NetspecError("cannot write blobs of layers the net does not have: "
                           + ", ".join(sorted(unknown)), file=path)
    header = pb.NetParameter()
    header.name = net_name if name is None else name  # Caffe always sets the name, even empty
    phase = net_phase if phase is None else phase
    with atomic_open(path, "wb") as f:
        f.write(header.SerializeToString())
        for layer in layers:
            _write_layer(f, layer, params.get(layer.name, ()),
                         None if diffs is None else diffs.get(layer.name), phase)
