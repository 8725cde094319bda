"""`netspec time` (netspec/cli/cmd_time.py) and the layer-by-layer passes under it (netspec/timing.py):
Caffe's lines in Caffe's order, totals that add up, the same gradients as one autograd backward
(shared blobs, in-place layers, concat, propagate_down, frozen and shared parameters, nets without a
loss), data layers without their LMDB, one-line errors, and CUDA when there is one."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
import torch
from google.protobuf import text_format

from netspec import timing
from netspec.cli import main
from netspec.frontend import prepare_net
from netspec.graph import compile_net
from netspec.proto import pb

ROOT = Path(__file__).resolve().parent.parent
CAFFENET_TRAIN_VAL = ROOT / "models" / "caffenet" / "train_val.prototxt"

# Two columns reading one blob, in-place ReLUs, a concat, a blob read twice by one Eltwise, a layer
# that does not propagate down, a frozen layer, a parameter shared by two layers.
NET = """name: "branchy"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 4 dim: 3 dim: 12 dim: 12 } shape { dim: 4 } } }
layer { name: "conv_a" type: "Convolution" bottom: "data" top: "a"
  param { name: "shared_w" }
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "conv_b" type: "Convolution" bottom: "data" top: "b"
  param { name: "shared_w" }
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "relu_a" type: "ReLU" bottom: "a" top: "a" }
layer { name: "relu_b" type: "ReLU" bottom: "b" top: "b" }
layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "ab" }
layer { name: "twice" type: "Eltwise" bottom: "ab" bottom: "ab" top: "ab2" }
layer { name: "frozen" type: "Convolution" bottom: "ab2" top: "c" param { lr_mult: 0 } param { lr_mult: 0 }
  convolution_param { num_output: 6 kernel_size: 3 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "pool" type: "Pooling" bottom: "c" top: "p"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "p" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "side" type: "InnerProduct" bottom: "ab" top: "side" propagate_down: false
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "sum" type: "Eltwise" bottom: "ip" bottom: "side" top: "scores" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "scores" bottom: "label" top: "loss" loss_weight: 0.5 }
"""

DEPLOY = """name: "deploy"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 9 dim: 9 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.2 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


def compiled(text: str, device="cpu"):
    net = pb.NetParameter()
    text_format.Merge(text, net)
    net.state.phase = pb.TRAIN
    return compile_net(prepare_net(net, net.state, None), pb.TRAIN, device=device, seed=4)


def grads(net) -> dict[str, torch.Tensor]:
    out = {}
    for info in net.learnable_params():
        if info.tensor.grad is not None:
            out[f"{info.layer}/{info.index}"] = info.tensor.grad.clone()
            info.tensor.grad = None
    return out


def assert_same_grads(got: dict, want: dict) -> None:
    assert got.keys() == want.keys(), f"blobs with diffs: {sorted(got)} vs autograd's {sorted(want)}"
    for k in want:
        err = float((got[k] - want[k]).abs().max())
        assert err <= 1e-5 * max(1.0, float(want[k].abs().max())), f"param {k}: worst error {err:.3g}"


@pytest.mark.parametrize("text, seed_ones", [(NET, False), (DEPLOY, True)])
def test_layer_by_layer_backward_gives_autograds_gradients(text, seed_ones):
    net = compiled(text)
    inputs = timing.synthetic_inputs(net, "cpu")
    if "label" in inputs:
        inputs["label"] = torch.tensor([0.0, 3.0, 1.0, 4.0])
    blobs = net(**inputs)
    total = sum(blobs[b].sum() for b in net.output_names) if seed_ones else net.total_loss(blobs)
    total.backward()
    want = grads(net)
    loss = timing.warm_up(net, inputs)
    got = grads(net)
    assert_same_grads(got, want)
    want_loss = 0.0 if seed_ones else float(net.total_loss(net(**inputs)).detach())
    assert loss == pytest.approx(want_loss, rel=1e-6)
    assert "frozen/0" not in got and ("conv_a/0" in got or seed_ones)


def time_cli(capsys, *argv):
    rc = main(["time", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


NUM = r"([0-9.e+-]+)"


def parse(out: str, layers: list[str]):
    """Per-layer (forward, backward) means and the four summary figures, checking Caffe's order."""
    lines = out.splitlines()
    start = lines.index("Average time per layer: ")
    per_layer = {}
    for i, name in enumerate(layers):
        f, b = lines[start + 1 + 2 * i], lines[start + 2 + 2 * i]
        assert f.startswith(f"{name:>10}\tforward: ") and f.endswith(" ms."), f
        assert b.startswith(f"{name:>10}\tbackward: ") and b.endswith(" ms."), b
        per_layer[name] = (float(f.split()[-2]), float(b.split()[-2]))
    tail = lines[start + 1 + 2 * len(layers):]
    keys = ["Average Forward pass", "Average Backward pass", "Average Forward-Backward", "Total Time"]
    summary = {}
    for key, line in zip(keys, tail):
        m = re.fullmatch(rf"{key}: {NUM} ms\.", line)
        assert m, f"expected '{key}: X ms.', found {line!r}"
        summary[key] = float(m.group(1))
    assert tail[len(keys)] == "*** Benchmark ends ***"
    return per_layer, summary


def test_caffe_lines_in_caffes_order_and_totals_add_up(tmp_path, capsys):
    (tmp_path / "net.prototxt").write_text(NET)
    rc, out, _ = time_cli(capsys, "-model", tmp_path / "net.prototxt", "-iterations", 3)
    assert rc == 0
    head = out.splitlines()[:6]
    assert head[:2] == ["Use CPU.", "Performing Forward"] and head[3:] == [
        "Performing Backward", "*** Benchmark begins ***", "Testing for 3 iterations."]
    assert re.fullmatch(rf"Initial loss: {NUM}", head[2]) and float(head[2].split()[-1]) > 0
    iters = re.findall(rf"^Iteration: (\d+) forward-backward time: {NUM} ms\.$", out, re.M)
    assert [int(j) for j, _ in iters] == [1, 2, 3]
    layers = [lp.name for lp in compiled(NET).layer_params]
    per_layer, s = parse(out, layers)
    # Nested intervals: the layers' times lie inside their pass, the passes inside the iteration.
    assert sum(f for f, _ in per_layer.values()) <= s["Average Forward pass"] * 1.0001
    assert sum(b for _, b in per_layer.values()) <= s["Average Backward pass"] * 1.0001
    assert s["Average Forward pass"] + s["Average Backward pass"] <= s["Average Forward-Backward"] * 1.0001
    assert s["Total Time"] == pytest.approx(3 * s["Average Forward-Backward"], rel=1e-4)
    mean_iteration = sum(float(ms) for _, ms in iters) / 3
    assert mean_iteration <= s["Average Forward-Backward"] * 1.0001


def test_data_layer_without_its_lmdb_is_fed_random_data(capsys, caplog):
    caplog.set_level(logging.WARNING, logger="netspec")
    rc, out, err = time_cli(capsys, "-model", CAFFENET_TRAIN_VAL, "-iterations", 1,
                            "--input-shape", "data=2,3,227,227")
    assert rc == 0, err
    assert "replaced by an input of random values" in caplog.text and "data 2" in caplog.text
    names = ["data", "conv1", "relu1", "norm1", "pool1", "conv2", "fc6", "drop6", "fc8", "loss"]
    layer_lines = [line.split("\t")[0].strip() for line in out.splitlines() if "\tforward:" in line]
    assert [n for n in layer_lines if n in names] == names and "accuracy" not in layer_lines  # TRAIN
    loss = float(re.search(rf"Initial loss: {NUM}", out).group(1))
    assert 0 < loss < 50, f"initial loss {loss}: labels must be valid classes"


def test_test_phase_and_deploy_net(tmp_path, capsys):
    (tmp_path / "deploy.prototxt").write_text(DEPLOY)
    rc, out, _ = time_cli(capsys, "-model", tmp_path / "deploy.prototxt", "-phase", "TEST", "-iterations", 1)
    assert rc == 0
    assert "Initial loss: 0" in out
    parse(out, ["data", "conv", "relu", "ip", "prob"])


@pytest.mark.parametrize("argv, message", [
    ([], "-model is required"),
    (["-model", "{net}", "-iterations", "0"], "-iterations must be positive, got 0"),
    (["-model", "{dir}/absent.prototxt"], "absent.prototxt"),
])
def test_errors_are_one_line(tmp_path, capsys, argv, message):
    (tmp_path / "net.prototxt").write_text(DEPLOY)
    argv = [a.format(net=tmp_path / "net.prototxt", dir=tmp_path) for a in argv]
    rc, _, err = time_cli(capsys, *argv)
    assert rc == 1 and message in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_without_cuda_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "net.prototxt").write_text(DEPLOY)
    rc, _, err = time_cli(capsys, "-model", tmp_path / "net.prototxt", "-gpu", "0")
    assert rc == 1 and "CUDA device" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.cuda
def test_on_cuda(tmp_path, capsys):
    net = compiled(NET, device="cuda:0")
    inputs = timing.synthetic_inputs(net, "cuda:0")
    net.total_loss(net(**inputs)).backward()
    want = {k: v.cpu() for k, v in grads(net).items()}
    timing.warm_up(net, inputs)
    assert_same_grads({k: v.cpu() for k, v in grads(net).items()}, want)
    (tmp_path / "net.prototxt").write_text(NET)
    rc, out, _ = time_cli(capsys, "-model", tmp_path / "net.prototxt", "-gpu", "0", "-iterations", 2)
    assert rc == 0 and out.startswith("Use GPU with device ID 0")
    parse(out, [lp.name for lp in net.layer_params])
