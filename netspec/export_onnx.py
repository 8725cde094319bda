"""A compiled net as an ONNX model (torch.onnx.export of the net's torch.fx graph).

Data layers read LMDBs, which ONNX cannot: `as_deployed` turns every data layer into an Input layer
with the same tops and shapes, as a deploy prototxt declares them, so the exported graph takes the
data (and label, if the net still scores one) as inputs. Graph inputs are named after the net's
input blobs, outputs after its output blobs (net order). The exporter tried first is torch's dynamo
exporter with a dynamic batch axis (checked in the file written: an export whose batch came out
fixed counts as failed); if that fails, dynamo with the compiled shapes; then the TorchScript
exporter (dynamo=False). ONNX export needs the `onnx` and `onnxscript` packages (`pip install
netspec[onnx]`). The model is written in one file, atomically.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import warnings

import torch
from torch import nn

from .errors import NetspecError
from .formats.atomic import atomic_write
from .layers import layer_class
from .layers.norm import lrn_as_one_operator, onnx_translations
from .proto import pb

log = logging.getLogger("netspec.onnx")


def as_deployed(net_param: pb.NetParameter, compiled) -> pb.NetParameter:
    """`net_param` with each data layer (Data, DummyData, ...) replaced by an Input of its top shapes."""
    out = pb.NetParameter()
    out.CopyFrom(net_param)
    for i, lp in enumerate(net_param.layer):
        if not layer_class(lp.type, lp.name).is_data or lp.type == "Input":
            continue
        repl = pb.LayerParameter(name=lp.name, type="Input", top=list(lp.top))
        repl.device.extend(lp.device)
        for shape in compiled.layers[lp.name].top_shapes:
            repl.input_param.shape.add().dim.extend(shape)
        out.layer[i].CopyFrom(repl)
    return out


class _Outputs(nn.Module):
    """The fx graph with its dict of blobs turned into a tuple in output-name order (ONNX outputs)."""

    def __init__(self, graph_module, outputs: list[str]):
        super().__init__()
        self.graph_module, self.outputs = graph_module, list(outputs)

    def forward(self, *inputs):
        blobs = self.graph_module(*inputs)
        return tuple(blobs[b] for b in self.outputs)


def _attempts(inputs: list[str], outputs: list[str]):
    batch = torch.export.Dim("batch")
    per_input = tuple({0: batch} for _ in inputs)
    yield "dynamo exporter, dynamic batch", dict(dynamo=True, dynamic_shapes=(per_input,))
    yield "dynamo exporter", dict(dynamo=True)
    axes = {b: {0: "batch"} for b in inputs + outputs}
    yield "TorchScript exporter, dynamic batch", dict(dynamo=False, dynamic_axes=axes)


def _export_bytes(module, example, names, outputs, how: dict) -> bytes:
    if how["dynamo"]:
        with lrn_as_one_operator():
            program = torch.onnx.export(module, example, input_names=names, output_names=outputs, verbose=False,
                                        custom_translation_table=onnx_translations(), **how)
        return program.model_proto.SerializeToString()
    buf = io.BytesIO()
    torch.onnx.export(module, example, buf, input_names=names, output_names=outputs, verbose=False, **how)
    return buf.getvalue()


@contextlib.contextmanager
def _quiet():
    """The exporters' progress chatter and deprecation warnings off (netspec logs at INFO by default)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels):
                lg.setLevel(level)


def _batch_is_dynamic(data: bytes) -> bool:
    """Whether every graph input of the serialized ONNX model has a symbolic first dimension."""
    import onnx

    graph = onnx.load_from_string(data).graph
    return all(v.type.tensor_type.shape.dim[0].dim_param for v in graph.input
               if v.type.tensor_type.shape.dim)


def export_onnx(net, path, outputs: list[str] | None = None) -> str:
    """Write `net` (a CompiledNet without data layers) to `path`; returns the exporter that worked."""
    missing = [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]
    if missing:
        raise NetspecError(f"ONNX export needs {' and '.join(missing)}: pip install 'netspec[onnx]'")
    if any(layer.is_data and layer.type != "Input" for layer in net.layers.values()):
        raise NetspecError("the net still has data layers; export as_deployed(...) of it")
    python = [name for name, layer in net.layers.items() if layer.type == "Python"]
    if python:   # numpy code in a user's module: no ONNX operator can stand for it
        raise NetspecError(f"Python layer(s) {', '.join(python)} cannot be exported to ONNX", file=path)
    frozen = [f"{name} ({layer.type})" for name, layer in net.layers.items() if getattr(layer, "no_onnx", False)]
    if frozen:   # host code or indices read from the data: a trace would freeze one input's answer
        raise NetspecError(f"layer(s) {', '.join(frozen)} cannot be exported to ONNX (their output depends "
                           "on the data through host code)", file=path)
    outputs = list(outputs or net.output_names)
    if not outputs:
        raise NetspecError(f"net '{net.name}' has no output blobs to export")
    names = list(net.input_names)
    device = next((p.device for p in net.parameters()), torch.device("cpu"))
    example = tuple(torch.zeros(net.blob_shapes[b], device=device) for b in names)
    module = _Outputs(net.graph_module(outputs=outputs), outputs).eval()
    failures = []
    with _quiet():
        for label, how in _attempts(names, outputs):
            try:
                data = _export_bytes(module, example, names, outputs, how)
            except Exception as e:  # each exporter has its own exception types; try the next
                failures.append(f"{label}: {(str(e).strip().splitlines() or [type(e).__name__])[0]}")
                log.info("ONNX %s failed: %s", label, failures[-1])
                continue
            if "dynamic batch" in label and not _batch_is_dynamic(data):
                # torch.export can fix the batch when the net's code reads it as a number; the file
                # would then say "dynamic" and take only the compiled batch.
                failures.append(f"{label}: the batch came out fixed")
                continue
            atomic_write(path, data)
            return label
    raise NetspecError("ONNX export failed; " + "; ".join(failures), file=path)
