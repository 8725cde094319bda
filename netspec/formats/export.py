"""Trained blobs <-> a PyTorch state_dict file (.pt), for people leaving Caffe's formats behind.

The file is a flat dict of tensors keyed `<layer>.<index>` (Caffe's layer name and blob index:
`conv1.0` is conv1's weight, `conv1.1` its bias), written with torch.save to a temporary name and
renamed, and loadable with `torch.load(path, weights_only=True)`. Nothing but tensors is stored, so
loading runs no pickled code. `import_state_dict` turns such a file back into the layer -> blobs
mapping that `write_caffemodel` and `load_weights` take; it also accepts keys that use netspec's blob
names (`conv1.weight`, `bn1.variance`), which it maps to Caffe's blob order.
"""
from __future__ import annotations

import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..errors import NetspecError
from .atomic import atomic_open
from .blobs import as_float32

# netspec's parameter names -> Caffe blob index (weight/bias of Convolution, InnerProduct, Scale,
# PReLU...; BatchNorm's running statistics and their scale factor).
# Blob names netspec's layers use, in the order Caffe stores them. Without the net, a layer's named
# blobs are numbered by this order: [weight, bias], [scale, bias], [bias] alone (a Scale layer whose
# scale is its second bottom), [mean, variance, scale_factor], [slope].
BLOB_ORDER = ("weight", "scale", "slope", "value", "mean", "variance", "scale_factor", "bias")

# Each blob-holding layer type's blob names in Caffe's order, as netspec's layers name them, so that a
# .caffemodel exported without its net gets the keys `netspec export -model` writes (`conv1.weight`).
# A one-blob Scale is taken as scale without bias (the two-bottom form, bias alone, needs the net).
BLOB_NAMES = {
    **dict.fromkeys(["Convolution", "Deconvolution", "InnerProduct", "Embed"], ("weight", "bias")),
    "BatchNorm": ("mean", "variance", "scale_factor"), "Scale": ("scale", "bias"), "Bias": ("bias",),
    "PReLU": ("slope",), "Parameter": ("value",),
}


def blob_keys(layer_type: str, count: int) -> list[str]:
    """The names of a layer's `count` blobs; their indices for a type without a table entry."""
    names = BLOB_NAMES.get(layer_type, ())
    return list(names[:count]) if count <= len(names) else [str(i) for i in range(count)]


_KEY = re.compile(r"^(?P<layer>.+)\.(?P<blob>\d+|[A-Za-z_]\w*)$")


def export_state_dict(params: Mapping[str, Sequence], path, types: Mapping[str, str] | None = None) -> None:
    """Write `params` (layer name -> blobs, tensors or arrays) as a .pt state_dict, atomically; keys
    `<layer>.<blob name>` for the layers whose type `types` gives (see BLOB_NAMES), else
    `<layer>.<index>`."""
    state = OrderedDict()
    for layer, blobs in params.items():
        for key, blob in zip(blob_keys((types or {}).get(layer, ""), len(blobs)), blobs):
            state[f"{layer}.{key}"] = torch.from_numpy(as_float32(blob).copy())
    write_state_dict(state, path)


def write_state_dict(state: Mapping, path) -> None:
    """torch.save a dict of tensors to `path`, atomically."""
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def read_state_dict(path) -> Mapping:
    """A tensors-only .pt (torch.load with weights_only); one-line errors."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise NetspecError("no such file (expected a .pt state_dict)", file=path) from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise NetspecError(f"not a tensors-only .pt state_dict: {first_line}", file=path) from None
    if not isinstance(state, Mapping):
        raise NetspecError(f"holds a {type(state).__name__}, expected a dict of tensors", file=path)
    return state


def import_state_dict(path) -> OrderedDict:
    """layer name -> [float32 arrays in Caffe's blob order] from a .pt state_dict."""
    layers: OrderedDict = OrderedDict()
    for key, value in read_state_dict(path).items():
        match = _KEY.match(str(key))
        blob = match and match["blob"]
        if not blob or not (blob.isdigit() or blob in BLOB_ORDER):
            raise NetspecError(f"key '{key}' is not '<layer>.<blob index>' nor '<layer>.<"
                               f"{'|'.join(BLOB_ORDER)}>'", file=path)
        if not isinstance(value, torch.Tensor):
            raise NetspecError(f"key '{key}' holds a {type(value).__name__}, expected a tensor", file=path)
        blobs = layers.setdefault(match["layer"], {})
        if blob in blobs:
            raise NetspecError(f"key '{key}': layer '{match['layer']}' has blob {blob} twice", file=path)
        blobs[blob] = value.detach().to(torch.float32).numpy()
    return OrderedDict((layer, _in_order(layer, blobs, path)) for layer, blobs in layers.items())


def _in_order(layer: str, blobs: dict, path) -> list[np.ndarray]:
    numbered = [k for k in blobs if k.isdigit()]
    if numbered and len(numbered) != len(blobs):
        raise NetspecError(f"blob keys mix indices and names ({', '.join(sorted(blobs))})", file=path, layer=layer)
    if not numbered:
        return [blobs[k] for k in sorted(blobs, key=BLOB_ORDER.index)]
    indices = sorted(int(k) for k in blobs)
    if indices != list(range(len(blobs))):
        raise NetspecError(f"blobs {indices} are not numbered 0..{len(blobs) - 1}", file=path, layer=layer)
    return [blobs[str(i)] for i in indices]
