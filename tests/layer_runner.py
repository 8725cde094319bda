"""Test helper: run a NetParameter layer by layer with netspec's layer classes, without the compiler.

It reads real Caffe's fixtures (prototxt, caffemodel, npz) directly with protobuf and numpy, builds
each layer from its LayerParameter and its bottoms' shapes, and executes the layers in net order
over a dict of blobs, so in-place layers (`top == bottom`) see the previous version of their blob.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from google.protobuf import text_format

from netspec.layers import layer_class
from netspec.proto import pb

FIXTURES = Path(__file__).parent / "data" / "caffe"


def load_prototxt(path) -> pb.NetParameter:
    net = pb.NetParameter()
    text_format.Parse(Path(path).read_text(), net)
    return net


def blob_array(bp: pb.BlobProto) -> np.ndarray:
    """A BlobProto's values with its shape (`shape.dim`, or the legacy num/channels/height/width)."""
    shape = tuple(bp.shape.dim) if bp.HasField("shape") else (bp.num, bp.channels, bp.height, bp.width)
    data = np.asarray(bp.double_data if len(bp.double_data) else bp.data, dtype=np.float32)
    return data.reshape(shape)


def load_caffemodel(path) -> dict[str, list[np.ndarray]]:
    """Layer name -> its parameter blobs, in Caffe's order."""
    net = pb.NetParameter()
    net.ParseFromString(Path(path).read_bytes())
    layers = list(net.layer) or list(net.layers)  # V1 caffemodels use `layers`
    return {lp.name: [blob_array(b) for b in lp.blobs] for lp in layers if len(lp.blobs)}


def load_npz(path) -> dict[str, np.ndarray]:
    with np.load(path) as d:
        return {k: d[k] for k in d.files}


def make_layer(text: str, bottom_shapes, phase: int = pb.TEST, tops: int = 1):
    """A layer from a LayerParameter text such as `type: "ReLU" relu_param { negative_slope: 0.1 }`;
    name, bottoms (b0, b1, ...) and tops (t0, t1, ...) are filled in when the text gives none."""
    lp = text_format.Parse(text, pb.LayerParameter())
    lp.name = lp.name or "test"
    if not len(lp.bottom):
        lp.bottom.extend(f"b{i}" for i in range(len(bottom_shapes)))
    if not len(lp.top):
        lp.top.extend(f"t{i}" for i in range(tops))
    return layer_class(lp.type, lp.name)(lp, [tuple(s) for s in bottom_shapes], phase)


def included(lp: pb.LayerParameter, phase: int) -> bool:
    """Phase-only NetStateRule filtering (the fixtures use nothing more)."""
    if len(lp.include):
        return any(not r.HasField("phase") or r.phase == phase for r in lp.include)
    return not any(r.HasField("phase") and r.phase == phase for r in lp.exclude)


@dataclass
class NetRun:
    layers: OrderedDict[str, object] = field(default_factory=OrderedDict)
    blobs: dict = field(default_factory=dict)  # blob name -> its last version
    versions: dict = field(default_factory=dict)  # blob name -> every version, in order
    shapes: dict = field(default_factory=dict)  # blob name -> inferred shape (last version)
    bottoms: dict = field(default_factory=dict)  # layer name -> the bottom tensors it read


def build(net: pb.NetParameter, phase: int, weights: dict | None = None) -> NetRun:
    """Construct every included layer, inferring shapes in net order, and load `weights`."""
    run = NetRun()
    for lp in net.layer:
        if not included(lp, phase):
            continue
        layer = layer_class(lp.type, lp.name)(lp, [run.shapes[b] for b in lp.bottom], phase)
        for top, shape in zip(lp.top, layer.top_shapes):
            run.shapes[top] = shape
        for blob, value in zip(layer.blob_names, (weights or {}).get(lp.name, [])):
            with torch.no_grad():
                getattr(layer, blob).copy_(torch.as_tensor(value).reshape(getattr(layer, blob).shape))
        run.layers[lp.name] = layer
    return run


def forward(run: NetRun, inputs: dict[str, torch.Tensor]) -> NetRun:
    """Execute the layers in order; Input tops come from `inputs`."""
    run.blobs, run.versions, run.bottoms = {}, {}, {}
    for name, layer in run.layers.items():
        lp = layer.lp
        if lp.type == "Input":
            tops = [inputs[t] for t in lp.top]
        else:
            run.bottoms[name] = [run.blobs[b] for b in lp.bottom]
            out = layer(*run.bottoms[name])
            tops = list(out) if isinstance(out, (tuple, list)) else [out]
        for top, value in zip(lp.top, tops):
            run.blobs[top] = value
            run.versions.setdefault(top, []).append(value)
    return run


def writers(run: NetRun, blob: str) -> list[str]:
    """Names of the layers writing `blob`, in net order (more than one: in-place layers)."""
    return [name for name, layer in run.layers.items() if blob in layer.lp.top]


def rel_error(got, want) -> float:
    """Worst element-wise error relative to |want|, with a floor of 1% of the blob's largest
    magnitude so that values near zero are judged on the blob's own scale."""
    got = np.asarray(got.detach().cpu() if isinstance(got, torch.Tensor) else got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"shape {got.shape} != {want.shape}"
    floor = max(0.01 * np.abs(want).max(initial=0.0), 1e-30)
    return float((np.abs(got - want) / (np.abs(want) + floor)).max(initial=0.0))
