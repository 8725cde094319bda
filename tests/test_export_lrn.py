"""LRN across channels exports as ONNX's LRN operator (netspec::lrn_across, netspec/layers/norm.py), from
both of torch's exporters, and the exported net computes netspec's numbers; WITHIN_CHANNEL, which ONNX
has no operator for, still exports as the layer's own arithmetic."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from netspec.export_onnx import export_onnx
from netspec.frontend import load_net
from netspec.graph import compile_net
from netspec.layers.norm import lrn_across

NET = """
layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 7 dim: 5 dim: 5 }} }} }}
layer {{ name: "n" type: "LRN" bottom: "x" top: "n"
  lrn_param {{ local_size: {size} alpha: 0.0001 beta: 0.75 k: 2 norm_region: {region} }} }}
layer {{ name: "p" type: "Power" bottom: "n" top: "p" power_param {{ scale: 2 }} }}
"""


def compiled(tmp_path, size=5, region="ACROSS_CHANNELS"):
    path = tmp_path / "lrn.prototxt"
    path.write_text(NET.format(size=size, region=region))
    return compile_net(load_net(str(path)), source=str(path))


def test_the_exporters_operator_computes_the_layers_numbers(tmp_path):
    net = compiled(tmp_path, size=3)
    x = torch.randn(2, 7, 5, 5) * 40
    with torch.no_grad():
        want = net.layers["n"](x)
    got = lrn_across(x, 3, 0.0001, 0.75, 2.0)
    assert torch.allclose(got, want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("size", [3, 5])
def test_across_channels_exports_as_one_lrn_node(tmp_path, size):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from onnx_reference import evaluator

    net = compiled(tmp_path, size)
    path = tmp_path / "lrn.onnx"
    assert export_onnx(net, str(path), outputs=["p"]) == "dynamo exporter, dynamic batch"
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("LRN") == 1 and not {"ScatterND", "Slice", "Transpose"} & set(ops), ops
    lrn = next(n for n in model.graph.node if n.op_type == "LRN")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in lrn.attribute}
    assert attrs["size"] == size and attrs["bias"] == pytest.approx(2.0) and attrs["beta"] == pytest.approx(0.75)
    x = (np.random.default_rng(0).normal(size=(3, 7, 5, 5)) * 40).astype(np.float32)   # another batch size
    with torch.no_grad():
        want = net.graph_module(outputs=["p"])(torch.from_numpy(x))["p"].numpy()
    got = evaluator(model).run(None, {"x": x})[0]
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_torchscript_exporter_writes_the_same_node(tmp_path):
    onnx = pytest.importorskip("onnx")
    net = compiled(tmp_path)

    class Out(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.g = net.graph_module(outputs=["p"])

        def forward(self, x):
            return self.g(x)["p"]

    path = tmp_path / "lrn_ts.onnx"
    with warnings.catch_warnings():      # the TorchScript exporter's deprecation notice
        warnings.simplefilter("ignore")
        torch.onnx.export(Out(), (torch.randn(2, 7, 5, 5),), str(path), dynamo=False, input_names=["x"])
    assert [n.op_type for n in onnx.load(str(path)).graph.node].count("LRN") == 1


def test_within_channel_keeps_the_layers_arithmetic(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    net = compiled(tmp_path, region="WITHIN_CHANNEL")
    path = tmp_path / "within.onnx"
    export_onnx(net, str(path), outputs=["p"])
    assert "LRN" not in {n.op_type for n in onnx.load(str(path)).graph.node}


def test_a_compiled_training_step_keeps_lrns_own_arithmetic(tmp_path, monkeypatch):
    """torch 2.11's dynamo answers torch.compiler.is_exporting() with True inside torch.compile; the
    layer must not take that for an export: the exporters' operator has no backward."""
    net = compiled(tmp_path)
    monkeypatch.setattr(torch.compiler, "is_exporting", lambda: True)
    x = (torch.randn(2, 7, 5, 5) * 40).requires_grad_()
    net.layers["n"](x).square().sum().backward()
    want = x.grad.clone()
    x.grad = None
    step = torch.compile(lambda t: net.layers["n"](t).square().sum(), backend="eager")
    step(x).backward()
    assert torch.allclose(x.grad, want, rtol=1e-5, atol=0)
