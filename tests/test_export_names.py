"""`netspec export` gives the same state_dict keys with and without -model (netspec/formats/export.py
BLOB_NAMES, netspec/cli/cmd_export.py), and a train_val net's ONNX really has the dynamic batch it
announces (netspec/export_onnx.py)."""
from pathlib import Path

import pytest
import torch

from netspec.cli import main
from netspec.formats.export import blob_keys

DATA = Path(__file__).parent / "data" / "caffe"


def test_keys_equal_with_and_without_the_net(tmp_path):
    bare, named = tmp_path / "bare.pt", tmp_path / "named.pt"
    weights = str(DATA / "layers_net.caffemodel")
    assert main(["export", weights, str(bare)]) == 0
    assert main(["export", "-model", str(DATA / "layers_net.prototxt"), "-weights", weights,
                 "-o", str(named)]) == 0
    a, b = torch.load(bare, weights_only=True), torch.load(named, weights_only=True)
    assert list(a) == list(b) and "conv1.weight" in a, (list(a), list(b))
    for key in a:
        assert torch.equal(a[key].reshape(b[key].shape), b[key]), key


def test_blob_keys_by_type():
    assert blob_keys("Convolution", 2) == ["weight", "bias"]
    assert blob_keys("InnerProduct", 1) == ["weight"]
    assert blob_keys("BatchNorm", 3) == ["mean", "variance", "scale_factor"]
    assert blob_keys("", 2) == ["0", "1"]              # no type recorded (.caffemodel.h5)
    assert blob_keys("Python", 1) == ["0"]


TRAIN_VAL = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 50 dim: 3 dim: 4 dim: 4 } shape { dim: 50 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }
"""


def test_train_val_onnx_has_a_dynamic_batch(tmp_path):
    # A train_val net (data layer, loss, accuracy) as `netspec export --onnx` writes it: the batch of
    # every input must stay symbolic (SoftmaxWithLoss's normalizer once fixed it at 50).
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from netspec.export_onnx import as_deployed, export_onnx
    from netspec.frontend import parse_net_text
    from netspec.graph import compile_net

    param = parse_net_text(TRAIN_VAL)
    net = compile_net(param, device_map="cpu", seed=0)
    deployed = compile_net(as_deployed(param, net), device_map="cpu", seed=0)
    how = export_onnx(deployed, tmp_path / "tiny.onnx")
    graph = onnx.load(str(tmp_path / "tiny.onnx")).graph
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input}
    assert how == "dynamo exporter, dynamic batch"
    assert dims == {"data": ["batch", 3, 4, 4], "label": ["batch"]}, dims
