"""`netspec export` gives the same state_dict keys with and without -model (netspec/formats/export.py
BLOB_NAMES, netspec/cli/cmd_export.py), and a train_val net's ONNX really has the dynamic batch it
announces (netspec/export_onnx.py)."""
from pathlib import Path

import pytest
import torch

from netspec.cli import main
from netspec.formats.export import blob_keys

DATA = Path(__file__).parent / "data" / "caffe"
ROOT = Path(__file__).resolve().parents[1]


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


def test_train_val_onnx_has_a_dynamic_batch(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from netspec.export_onnx import as_deployed, export_onnx
    from netspec.frontend import load_net
    from netspec.graph import compile_net
    from netspec.graph.inspect import substitute_missing_data
    from netspec.proto import pb

    path = str(ROOT / "models" / "caffenet" / "toy_train_val.prototxt")
    param = load_net(path, phase=pb.TEST)
    usable, _ = substitute_missing_data(param, pb.TEST, path, {})
    net = compile_net(usable, phase=pb.TEST, device_map="cpu", seed=0, source=path)
    deployed = compile_net(as_deployed(param, net), phase=pb.TEST, device_map="cpu", seed=0, source=path)
    how = export_onnx(deployed, tmp_path / "toy.onnx")
    graph = onnx.load(str(tmp_path / "toy.onnx")).graph
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input}
    assert how == "dynamo exporter, dynamic batch"
    assert dims == {"data": ["batch", 3, 57, 57], "label": ["batch"]}, dims
