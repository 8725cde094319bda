"""Structural checks of a filtered net before anything is built (Caffe's Net::Init and InsertSplits).

Each problem is one line naming the file, line, layer and blob: a bottom nothing produced, a bottom
produced only by a later layer (a cycle, or layers out of order), a top produced twice other than in
place, and an in-place layer on a blob another layer already read (Caffe inserts a Split there and
then fails with "produced by multiple sources"). Layer names need not be unique, as in Caffe's
Net::Init (HED's deploy names five layers "crop"); messages tell such layers apart by their line.
"""
from __future__ import annotations

import math
import os

from ..errors import NetspecError
from ..proto import pb


def _producers(net: pb.NetParameter) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, layer in enumerate(net.layer):
        for t in layer.top:
            out.setdefault(t, []).append(i)
    return out


def _reaches(net: pb.NetParameter, start: int, target: int) -> bool:
    """Does data flow from layer `start`'s tops to layer `target` (in file order)?"""
    tainted = set(net.layer[start].top)
    for layer in net.layer[start + 1:target + 1]:
        if tainted.intersection(layer.bottom):
            tainted.update(layer.top)
    return bool(tainted.intersection(net.layer[target].bottom))


def validate_net(net: pb.NetParameter, source=None, lines: list | None = None) -> None:
    """Raise NetspecError for the first structural problem in `net` (already phase-filtered)."""
    def fail(i, msg):
        raise NetspecError(msg, file=source, line=lines[i] if lines else None, layer=net.layer[i].name)

    available: dict[str, int] = {name: -1 for name in net.input}   # blob -> producing layer index
    readers: dict[str, int] = {}                                     # readers of the current version
    producers = _producers(net)
    for i, layer in enumerate(net.layer):
        if not layer.name:
            fail(i, f"layer #{i} ({layer.type}) has no name")
        if not layer.type:
            fail(i, "layer has no type")
        if layer.propagate_down and len(layer.propagate_down) != len(layer.bottom):
            fail(i, f"propagate_down has {len(layer.propagate_down)} entries, expected one per bottom "
                    f"({len(layer.bottom)})")
        for j, b in enumerate(layer.bottom):
            if b in available:
                continue
            later = [k for k in producers.get(b, []) if k > i]
            if not later:
                fail(i, f"bottom '{b}' is not produced by any layer or input")
            k = later[0]
            kind = "a cycle" if _reaches(net, i, k) else "layers out of order: Caffe runs layers in file order"
            fail(i, f"bottom '{b}' is produced only by the later layer '{net.layer[k].name}' ({kind})")
        for j, t in enumerate(layer.top):
            in_place = j < len(layer.bottom) and layer.bottom[j] == t
            if in_place:
                others = readers.get(t, 0)
                if others > 0:
                    fail(i, f"in-place top '{t}' rewrites a blob that {others} other layer(s) already read; "
                            f"give the top its own name")
            elif t in available:
                by = available[t]
                src = "the net's inputs" if by < 0 else f"layer '{net.layer[by].name}'"
                fail(i, f"top '{t}' is already produced by {src} (only an in-place layer, with top == bottom "
                        f"at the same index, may reuse a blob name)")
        for b in layer.bottom:
            readers[b] = readers.get(b, 0) + 1
        for t in layer.top:   # a new version of each top, read by nobody yet
            available[t] = i
            readers[t] = 0
        problem = _param_problem(layer)
        if problem:
            fail(i, problem)
    _check_input_dims(net, source)


# Caffe's CHECK_GT(..., 0) on window geometry (base_conv_layer.cpp, pooling_layer.cpp): a zero stride
# divides by zero when the output size is computed, a zero kernel or dilation gives no window.
_WINDOW_FIELDS = {
    "convolution_param": ("kernel_size", "stride", "dilation", "kernel_h", "kernel_w", "stride_h", "stride_w"),
    "pooling_param": ("kernel_size", "stride", "kernel_h", "kernel_w", "stride_h", "stride_w"),
}
_WINDOW_TYPES = {"Convolution": "convolution_param", "Deconvolution": "convolution_param",
                 "Im2col": "convolution_param", "Pooling": "pooling_param",
                 "ConvolutionDepthwise": "convolution_param"}  # a fork's type (README "Fork layers")


def _window_problem(layer: pb.LayerParameter) -> str | None:
    field = _WINDOW_TYPES.get(layer.type)
    if field is None or not layer.HasField(field):
        return None
    p = getattr(layer, field)
    for name in _WINDOW_FIELDS[field]:
        value = getattr(p, name)
        values = [value] if isinstance(value, int) and p.HasField(name) else (
            [] if isinstance(value, int) else list(value))
        if any(v <= 0 for v in values):
            return f"{field}.{name} is {', '.join(map(str, values))}; it must be positive"
    return None


def _dims_problem(shapes, what: str) -> str | None:
    for k, shape in enumerate(shapes):
        if any(d < 0 for d in shape.dim):
            return f"{what} shape #{k} has a negative dimension ({' x '.join(map(str, shape.dim))})"
    return None


def _param_problem(layer: pb.LayerParameter) -> str | None:
    """A parameter Caffe's layer setup would refuse, found before anything is built."""
    if layer.type == "Input":
        return _dims_problem(layer.input_param.shape, "input_param")
    if layer.type == "DummyData":
        return _dims_problem(layer.dummy_data_param.shape, "dummy_data_param")
    return _window_problem(layer)


def _check_input_dims(net: pb.NetParameter, source) -> None:
    """The legacy net-level inputs (input_shape / input_dim) must not be negative either."""
    problem = _dims_problem(net.input_shape, "input_shape")
    if problem is None and any(d < 0 for d in net.input_dim):
        problem = f"input_dim has a negative dimension ({', '.join(map(str, net.input_dim))})"
    if problem:
        raise NetspecError(problem, file=source)


def memory_limit() -> int | None:
    """Bytes one blob may take: NETSPEC_MAX_BLOB_BYTES, else this machine's physical memory."""
    value = os.environ.get("NETSPEC_MAX_BLOB_BYTES")
    if value:
        return int(value)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "bytes" else f"{int(n)} bytes"
        n /= 1000
    return ""


def check_allocation(shape, what: str, layer: str | None = None, itemsize: int = 4) -> None:
    """Refuse a blob whose float32 allocation would exceed memory, by arithmetic, before allocating:
    the allocator's own failure is a traceback (or the OOM killer)."""
    limit = memory_limit()
    need = math.prod(int(d) for d in shape) * itemsize
    if limit is not None and need > limit:
        dims = " x ".join(str(int(d)) for d in shape)
        raise NetspecError(f"{what} of shape {dims} needs {need} bytes ({_size(need)}), more than the "
                           f"{_size(limit)} of memory this machine has", layer=layer)
