"""The Python layer (type "Python", netspec/layers/python_layer.py) with user layers written against
pycaffe's caffe.Layer (tests/data/python_layers/netspec_test_pylayers.py, found through sys.path as
Caffe finds them through PYTHONPATH): float64 gradient checks, training from the pycaffe API and from
`netspec train` equal to the same nets built from netspec's own layers, learnable blobs updated,
snapshotted and restored, param_str and phase, torch.compile, and the one-line errors."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import netspec
from netspec.cli import main
from netspec.errors import NetspecError
from netspec.formats.caffemodel import read_weights
from netspec.layers import layer_class
from netspec.proto import pb

MODULES = Path(__file__).parent / "data" / "python_layers"
MOD = "netspec_test_pylayers"


@pytest.fixture(autouse=True)
def layer_path(monkeypatch):
    monkeypatch.syspath_prepend(str(MODULES))


def py(layer: str, param_str: str = "") -> str:
    return f'python_param {{ module: "{MOD}" layer: "{layer}" param_str: "{param_str}" }}'


def make(text: str, shapes, phase=pb.TRAIN):
    lp = text_format.Parse(text, pb.LayerParameter())
    lp.name = lp.name or "py"
    lp.bottom.extend(f"b{i}" for i in range(len(shapes)))
    lp.top.extend(["t0"] if not len(lp.top) else [])
    return layer_class("Python", lp.name)(lp, shapes, phase)


# ---- forward and backward ------------------------------------------------------------------------
def test_scale_forward_and_param_str():
    layer = make(f'type: "Python" {py("Scale", "2.5")}', [(2, 3)])
    x = torch.arange(6.0).reshape(2, 3)
    assert layer.top_shapes == [(2, 3)]
    np.testing.assert_array_equal(layer(x).numpy(), 2.5 * x.numpy())


def test_gradients_match_central_differences_in_float64():
    """torch.autograd.gradcheck: the user's backward against central differences of its forward."""
    layer = make(f'type: "Python" {py("Mul")}', [(3, 4), (3, 4)])
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    assert layer(a, b).dtype == torch.float64
    assert torch.autograd.gradcheck(layer, (a, b), eps=1e-6, atol=1e-8)


def test_propagate_down_follows_requires_grad():
    layer = make(f'type: "Python" {py("Mul")}', [(2, 2), (2, 2)])
    a = torch.full((2, 2), 3.0, requires_grad=True)
    b = torch.full((2, 2), 5.0)                      # a label-like bottom: no gradient wanted
    layer(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), np.full((2, 2), 30.0))


def test_learnable_blob_diff_equals_numerical_derivative():
    layer = make(f'type: "Python" {py("Bias", "0.25")}', [(5, 3)])
    (blob,) = layer.blobs
    np.testing.assert_array_equal(blob.detach().numpy(), [0.25] * 3)
    gen = torch.Generator().manual_seed(1)
    x, w = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    (layer(x.requires_grad_()) * w).sum().backward()
    # d/db sum(w * (x + b)) = column sums of w
    np.testing.assert_allclose(blob.grad.numpy(), w.sum(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(x.grad.numpy(), w.numpy(), rtol=1e-6)


def test_phase_is_given_to_the_layer():
    for phase in (pb.TRAIN, pb.TEST):
        layer = make(f'type: "Python" {py("Phase")}', [], phase)
        assert layer().item() == phase and layer.top_shapes == [()]


# ---- training ------------------------------------------------------------------------------------
NET = """name: "pynet"
layer {{ name: "data" type: "Python" top: "data" top: "target" {data} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param {{ num_output: 1 weight_filler {{ type: "gaussian" std: 0.3 }} }} }}
layer {{ name: "bias" bottom: "ip" top: "out" param {{ lr_mult: 2 }} {bias} }}
layer {{ name: "loss" bottom: "out" bottom: "target" top: "loss" {loss} }}
"""
PY_NET = NET.format(data=py("Counter"), bias=f'type: "Python" {py("Bias", "0.5")}',
                    loss=f'type: "Python" {py("EuclideanLoss")} loss_weight: 1')
OWN_NET = NET.format(data=py("Counter"), bias='type: "Bias" bias_param { filler { type: "constant" value: 0.5 } }',
                     loss='type: "EuclideanLoss"')
SOLVER = ('net: "{net}" base_lr: 0.1 momentum: 0.9 weight_decay: 0.01 lr_policy: "fixed" display: 0 '
          'max_iter: {iters} snapshot: {snapshot} snapshot_prefix: "snap/{name}" random_seed: 3 solver_mode: CPU')


def write_run(folder: Path, net: str, name: str, iters: int, snapshot: int = 0) -> str:
    (folder / "snap").mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.prototxt").write_text(net)
    (folder / f"{name}_solver.prototxt").write_text(
        SOLVER.format(net=f"{name}.prototxt", iters=iters, snapshot=snapshot, name=name))
    return f"{name}_solver.prototxt"


def test_python_net_trains_from_the_pycaffe_api_as_its_builtin_twin(tmp_path, monkeypatch):
    """Python data + bias + loss layers give the weights netspec's Bias and EuclideanLoss give."""
    monkeypatch.chdir(tmp_path)
    weights = {}
    for name, net in (("py", PY_NET), ("own", OWN_NET)):
        solver = netspec.SGDSolver(write_run(tmp_path, net, name, 8))
        first = solver.net.forward()["loss"].item()
        solver.step(8)
        weights[name] = {k: [b.data.copy() for b in v] for k, v in solver.net.params.items()}
        weights[name]["loss"] = (first, solver.net.forward()["loss"].item())
    py_w, own_w = weights["py"], weights["own"]
    assert py_w["loss"][1] < py_w["loss"][0]
    np.testing.assert_allclose(py_w["loss"], own_w["loss"], rtol=1e-5)
    for layer in ("ip", "bias"):
        for a, b in zip(py_w[layer], own_w[layer]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=layer)
    assert py_w["bias"][0][0] != 0.5                       # the Python layer's blob was updated


def test_netspec_train_snapshots_python_blobs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    own = write_run(tmp_path, OWN_NET, "own", 6)
    assert main(["train", "-solver", own]) == 0
    solver = write_run(tmp_path, PY_NET, "py", 6, snapshot=3)
    assert main(["train", "-solver", solver]) == 0
    straight = read_weights(tmp_path / "snap" / "py_iter_6.caffemodel")
    assert straight["bias"][0] == "Python" and straight["bias"][1][0].shape == (1,)
    np.testing.assert_allclose(straight["bias"][1][0], read_weights(tmp_path / "snap" / "own_iter_6.caffemodel")
                               ["bias"][1][0], rtol=1e-5)
    # the caffemodel restores the Python layer's blob into a Net
    at3 = read_weights(tmp_path / "snap" / "py_iter_3.caffemodel")
    net = netspec.Net(str(tmp_path / "py.prototxt"), str(tmp_path / "snap" / "py_iter_3.caffemodel"), netspec.TRAIN)
    np.testing.assert_array_equal(net.layers[net._layer_names.index("bias")].blobs[0].data, at3["bias"][1][0])
    assert at3["bias"][1][0] != straight["bias"][1][0]


def test_resume_restores_python_blobs_and_their_history(tmp_path, monkeypatch):
    """3 + 3 iterations through a solverstate equal 6 straight (a data layer repeating one batch)."""
    monkeypatch.chdir(tmp_path)
    solver = write_run(tmp_path, PY_NET.replace(py("Counter"), py("Counter", "fixed")), "py", 6, snapshot=3)
    assert main(["train", "-solver", solver]) == 0
    straight = read_weights(tmp_path / "snap" / "py_iter_6.caffemodel")
    (tmp_path / "snap" / "py_iter_6.caffemodel").unlink()
    assert main(["train", "-solver", solver, "-snapshot", "snap/py_iter_3.solverstate"]) == 0
    resumed = read_weights(tmp_path / "snap" / "py_iter_6.caffemodel")
    for layer in ("ip", "bias"):
        for a, b in zip(straight[layer][1], resumed[layer][1]):
            np.testing.assert_array_equal(a, b, err_msg=layer)


@pytest.mark.slow
def test_netspec_train_finds_the_module_through_pythonpath(tmp_path):
    """A real `netspec train` process: the module is found through PYTHONPATH, as Caffe's tool."""
    solver = write_run(tmp_path, PY_NET, "py", 2, snapshot=2)
    env = dict(os.environ, PYTHONPATH=str(MODULES) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run([sys.executable, "-m", "netspec.cli", "train", "-solver", solver], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert read_weights(tmp_path / "snap" / "py_iter_2.caffemodel")["bias"][0] == "Python"


def test_torch_compile_runs_python_layers_eagerly():
    """torch.compile cannot trace numpy: the Python layers run eagerly between compiled pieces, with
    the values and gradients of the uncompiled graph."""
    path = _write('name: "c"\ninput: "x" input_shape { dim: 2 dim: 3 }\ninput: "y" input_shape { dim: 2 dim: 3 }\n'
                  f'layer {{ name: "s" type: "Python" bottom: "x" top: "s" {py("Scale", "3")} }}\n'
                  'layer { name: "r" type: "ReLU" bottom: "s" top: "r" }\n'
                  f'layer {{ name: "l" type: "Python" bottom: "r" bottom: "y" top: "l" {py("EuclideanLoss")} }}\n')
    gm = netspec.Net(path, netspec.TEST).compiled.graph_module(outputs=["l"])
    x = torch.tensor([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]])
    y = torch.ones(2, 3)
    results = []
    for fn in (gm, torch.compile(gm, backend="eager")):
        xg = x.clone().requires_grad_()
        loss = fn(xg, y)["l"]
        loss.sum().backward()
        results.append((loss.item(), xg.grad.numpy()))
    r = np.maximum(3 * x.numpy(), 0) - 1
    assert results[0][0] == pytest.approx((r ** 2).sum() / 2 / 2, rel=1e-6)
    assert results[1][0] == pytest.approx(results[0][0], rel=1e-6)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-6)
    np.testing.assert_allclose(results[0][1], 3 * (x.numpy() > 0) * r / 2, rtol=1e-6)


def _write(text: str, name="net.prototxt") -> str:
    import tempfile

    folder = Path(tempfile.mkdtemp())
    (folder / name).write_text(text)
    return str(folder / name)


# ---- errors --------------------------------------------------------------------------------------
def _net_error(layer_text: str) -> NetspecError:
    path = _write('name: "e"\ninput: "x" input_shape { dim: 2 dim: 3 }\n'
                  f'layer {{ name: "bad" type: "Python" bottom: "x" top: "y"\n  {layer_text} }}\n')
    with pytest.raises(NetspecError) as e:
        netspec.Net(path, netspec.TEST)
    assert "\n" not in str(e.value)
    assert str(e.value).startswith(f"{path}:3: layer 'bad': ")
    return e.value


def test_missing_module_is_one_line_at_the_layer():
    msg = str(_net_error('python_param { module: "no_such_module_xyz" layer: "L" }'))
    assert "no module named 'no_such_module_xyz' on sys.path" in msg and "PYTHONPATH" in msg


def test_missing_class_names_module_and_class():
    msg = str(_net_error(f'python_param {{ module: "{MOD}" layer: "Nope" }}'))
    assert f"module '{MOD}' (" in msg and "has no class 'Nope'" in msg


def test_exception_in_setup_keeps_its_type_and_place():
    err = _net_error(py("RaiseInSetup"))
    assert isinstance(err, KeyError)                    # pycaffe re-raises the layer's own exception
    assert f"Python layer {MOD}.RaiseInSetup raised KeyError in setup: 'no such option'" in str(err)


def test_exception_in_forward_is_one_line_with_layer_module_and_exception():
    path = _write('name: "e"\ninput: "x" input_shape { dim: 2 dim: 3 }\n'
                  f'layer {{ name: "bad" type: "Python" bottom: "x" top: "y" {py("Raise")} }}\n')
    net = netspec.Net(path, netspec.TEST)
    with pytest.raises(ValueError) as e:
        net.forward()
    assert isinstance(e.value, NetspecError)
    assert str(e.value) == f"layer 'bad': Python layer {MOD}.Raise raised ValueError in forward: boom in forward"
    assert isinstance(e.value.__cause__, ValueError)    # --debug shows the user's traceback


def test_cli_prints_a_python_layer_exception_as_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    net = PY_NET.replace('layer: "Bias" param_str: "0.5"', 'layer: "Raise" param_str: ""')
    assert main(["train", "-solver", write_run(tmp_path, net, "bad", 2)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"netspec train: error: layer 'bias': Python layer {MOD}.Raise raised ValueError in "
                       "forward: boom in forward")
    assert not any("Traceback" in line for line in err)


def test_multilabel_data_layer_shaped_once_in_setup_feeds_training(tmp_path, monkeypatch):
    """The pascal-multilabel notebook's data layer pattern: its batches reach the net unchanged on every
    forward, and a SigmoidCrossEntropyLoss net trained on it through the pycaffe API has the loss numpy
    computes from the net's own blobs."""
    monkeypatch.chdir(tmp_path)
    data = f'python_param {{ module: "{MOD}" layer: "MultilabelData" ' \
           'param_str: "{\'batch_size\': 2, \'im_shape\': [4, 5]}" }'
    net = f'''name: "multilabel"
layer {{ name: "data" type: "Python" top: "data" top: "label" {data} }}
layer {{ name: "score" type: "InnerProduct" bottom: "data" top: "score"
  inner_product_param {{ num_output: 20 weight_filler {{ type: "gaussian" std: 0.01 }} }} }}
layer {{ name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "score" bottom: "label" top: "loss" }}
'''
    solver = netspec.SGDSolver(write_run(tmp_path, net, "ml", 3))
    for batch in range(3):
        solver.step(1)
        blobs = solver.net.blobs
        assert blobs["data"].data.shape == (2, 3, 4, 5)
        np.testing.assert_array_equal(blobs["data"].data[:, 0, 0, 0], np.float32([batch / 10, (batch + 1) / 10]))
        np.testing.assert_array_equal(blobs["label"].data[1], (np.arange(20) + 1) % 2)
    solver.net.forward()
    x, y = solver.net.blobs["score"].data.astype(np.float64), solver.net.blobs["label"].data
    expected = np.sum(np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))) / 2
    assert solver.net.blobs["loss"].data == pytest.approx(expected, rel=1e-5)
    assert solver.net.blobs["data"].data[0, 0, 0, 0] == np.float32(0.3)   # the 4th forward


def test_onnx_export_refuses_python_layers_in_one_line(tmp_path):
    pytest.importorskip("onnx")
    from netspec.export_onnx import export_onnx

    path = _write('name: "o"\ninput: "x" input_shape { dim: 1 dim: 3 }\n'
                  f'layer {{ name: "s" type: "Python" bottom: "x" top: "s" {py("Scale", "2")} }}\n')
    with pytest.raises(NetspecError, match=r"out.onnx: Python layer\(s\) s cannot be exported to ONNX$"):
        export_onnx(netspec.Net(path, netspec.TEST).compiled, str(tmp_path / "out.onnx"))


def test_module_whose_own_import_fails_is_told_apart(tmp_path, monkeypatch):
    (tmp_path / "netspec_test_broken_layer.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    msg = str(_net_error('python_param { module: "netspec_test_broken_layer" layer: "L" }'))
    assert "importing module 'netspec_test_broken_layer' failed: No module named 'no_such_dependency_xyz'" in msg


def test_shared_param_name_ties_python_layer_blobs():
    """Two Python Bias layers sharing their blob by ParamSpec name: one Parameter, seen by both users."""
    path = _write('name: "tie" force_backward: true\ninput: "x" input_shape { dim: 2 dim: 3 }\n'
                  f'layer {{ name: "b1" type: "Python" bottom: "x" top: "y" param {{ name: "shared" }} {py("Bias", "1")} }}\n'
                  f'layer {{ name: "b2" type: "Python" bottom: "y" top: "z" param {{ name: "shared" }} {py("Bias", "5")} }}\n')
    net = netspec.Net(path, netspec.TRAIN)
    one, two = (net.layers[net._layer_names.index(n)] for n in ("b1", "b2"))
    np.testing.assert_array_equal(two.blobs[0].data, one.blobs[0].data)    # the owner's values: 1
    net.blobs["x"].data[...] = 0
    np.testing.assert_array_equal(net.forward()["z"], np.full((2, 3), 2.0))
    net.blobs["z"].diff[...] = 1
    net.backward()
    np.testing.assert_array_equal(one.blobs[0].diff, [4.0, 4.0, 4.0])       # both layers' sums, one diff


def test_half_precision_bottoms_reach_the_user_as_float32():
    """Under mixed precision a Python layer still sees float32 arrays (numpy has no bfloat16); its
    bottoms' gradients come back in their own dtype."""
    layer = make(f'type: "Python" {py("Mul")}', [(2, 3), (2, 3)])
    a = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]], dtype=torch.bfloat16, requires_grad=True)
    b = torch.full((2, 3), 2.0, dtype=torch.bfloat16)
    y = layer(a, b)
    assert y.dtype == torch.float32
    np.testing.assert_array_equal(y.detach().numpy(), a.float().detach().numpy() ** 2 * 2)
    y.sum().backward()
    assert a.grad.dtype == torch.bfloat16
    np.testing.assert_array_equal(a.grad.float().numpy(), 4 * a.float().detach().numpy())


def test_debug_shows_the_python_layers_own_traceback(tmp_path, monkeypatch):
    import traceback

    monkeypatch.chdir(tmp_path)
    net = PY_NET.replace('layer: "Bias" param_str: "0.5"', 'layer: "Raise" param_str: ""')
    with pytest.raises(ValueError) as e:
        main(["train", "--debug", "-solver", write_run(tmp_path, net, "bad", 2)])
    text = "".join(traceback.format_exception(e.value))
    assert 'netspec_test_pylayers.py", line' in text and 'raise ValueError("boom in forward")' in text
