"""Nets built the way BVLC's examples use ContrastiveLoss, SigmoidCrossEntropyLoss and LSTM, trained from
the CLI (`netspec train`), snapshotted and resumed: the resumed run ends with the very weights of the
straight run.

- siamese: examples/siamese/mnist_siamese_train_test.prototxt in small: a pair blob sliced in two,
  two towers sharing their weights by ParamSpec name, ContrastiveLoss on the two features.
- autoencoder: examples/mnist/mnist_autoencoder.prototxt in small: two layers both named "loss"
  (SigmoidCrossEntropyLoss on the logits, EuclideanLoss with loss_weight 0 on the sigmoid), test nets
  chosen by stage as its solver does.
- lstm: an LSTM over a T×N sequence, cont = 0 at t = 0 then 1, scored per step by SoftmaxWithLoss.
BVLC's own two prototxts (tests/data/bvlc/) load too: shapes, the two "loss" layers, the shared towers.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest

from netspec.cli import main
from netspec.formats.caffemodel import read_weights
from netspec.graph.inspect import compile_for_inspection

SIAMESE = """name: "siamese"
layer { name: "pair_data" type: "DummyData" top: "pair_data" top: "sim"
  dummy_data_param { shape { dim: 8 dim: 2 dim: 4 dim: 4 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: 0 max: 1.99 } } }
layer { name: "slice_pair" type: "Slice" bottom: "pair_data" top: "data" top: "data_p"
  slice_param { slice_dim: 1 slice_point: 1 } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  param { name: "ip1_w" lr_mult: 1 } param { name: "ip1_b" lr_mult: 2 }
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "feat" type: "InnerProduct" bottom: "ip1" top: "feat"
  param { name: "feat_w" lr_mult: 1 } param { name: "feat_b" lr_mult: 2 }
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "ip1_p" type: "InnerProduct" bottom: "data_p" top: "ip1_p"
  param { name: "ip1_w" lr_mult: 1 } param { name: "ip1_b" lr_mult: 2 }
  inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "relu1_p" type: "ReLU" bottom: "ip1_p" top: "ip1_p" }
layer { name: "feat_p" type: "InnerProduct" bottom: "ip1_p" top: "feat_p"
  param { name: "feat_w" lr_mult: 1 } param { name: "feat_b" lr_mult: 2 }
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "ContrastiveLoss" bottom: "feat" bottom: "feat_p" bottom: "sim" top: "loss"
  contrastive_loss_param { margin: 1 } }
"""

AUTOENCODER = """name: "autoencoder"
layer { name: "data" type: "DummyData" top: "data" include { phase: TRAIN }
  dummy_data_param { shape { dim: 6 dim: 1 dim: 4 dim: 4 } data_filler { type: "uniform" min: 0 max: 1 } } }
layer { name: "data" type: "DummyData" top: "data" include { phase: TEST stage: "test-on-train" }
  dummy_data_param { shape { dim: 6 dim: 1 dim: 4 dim: 4 } data_filler { type: "uniform" min: 0 max: 1 } } }
layer { name: "data" type: "DummyData" top: "data" include { phase: TEST stage: "test-on-test" }
  dummy_data_param { shape { dim: 6 dim: 1 dim: 4 dim: 4 } data_filler { type: "uniform" min: 0 max: 1 } } }
layer { name: "flatdata" type: "Flatten" bottom: "data" top: "flatdata" }
layer { name: "encode1" type: "InnerProduct" bottom: "data" top: "encode1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 1 decay_mult: 0 }
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 1 sparse: 3 } } }
layer { name: "encode1neuron" type: "Sigmoid" bottom: "encode1" top: "encode1neuron" }
layer { name: "decode1" type: "InnerProduct" bottom: "encode1neuron" top: "decode1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 1 decay_mult: 0 }
  inner_product_param { num_output: 16 weight_filler { type: "gaussian" std: 1 sparse: 3 } } }
layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "decode1" bottom: "flatdata"
  top: "cross_entropy_loss" loss_weight: 1 }
layer { name: "decode1neuron" type: "Sigmoid" bottom: "decode1" top: "decode1neuron" }
layer { name: "loss" type: "EuclideanLoss" bottom: "decode1neuron" bottom: "flatdata" top: "l2_error"
  loss_weight: 0 }
"""

LSTM = """name: "lstm_sequence"
layer { name: "x" type: "DummyData" top: "x" top: "label"
  dummy_data_param { shape { dim: 5 dim: 3 dim: 4 } shape { dim: 5 dim: 3 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: 0 max: 2.99 } } }
layer { name: "starts" type: "DummyData" top: "starts"
  dummy_data_param { shape { dim: 1 dim: 3 } data_filler { type: "constant" value: 0 } } }
layer { name: "continues" type: "DummyData" top: "continues"
  dummy_data_param { shape { dim: 4 dim: 3 } data_filler { type: "constant" value: 1 } } }
layer { name: "cont" type: "Concat" bottom: "starts" bottom: "continues" top: "cont" concat_param { axis: 0 } }
layer { name: "lstm1" type: "LSTM" bottom: "x" bottom: "cont" top: "lstm1"
  recurrent_param { num_output: 8 weight_filler { type: "uniform" min: -0.08 max: 0.08 }
                    bias_filler { type: "constant" value: 0 } } }
layer { name: "predict" type: "InnerProduct" bottom: "lstm1" top: "predict"
  inner_product_param { num_output: 3 axis: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "predict" bottom: "label" top: "loss"
  softmax_param { axis: 2 } }
"""

SOLVER = ('net: "net.prototxt" base_lr: 0.05 momentum: 0.9 lr_policy: "fixed" display: 1 max_iter: 6 '
          'snapshot: 3 snapshot_prefix: "snap/net" random_seed: 11 solver_mode: CPU\n')
AUTOENCODER_TESTS = ('test_state: { stage: "test-on-train" } test_iter: 2 '
                     'test_state: { stage: "test-on-test" } test_iter: 1 test_interval: 3 test_compute_loss: true\n')


def _train(folder, net: str, extra: str, capsys, *args) -> str:
    (folder / "snap").mkdir(parents=True, exist_ok=True)
    (folder / "net.prototxt").write_text(net)
    (folder / "solver.prototxt").write_text(SOLVER + extra)
    assert main(["train", "solver.prototxt", *args]) == 0
    return capsys.readouterr().err


@pytest.mark.parametrize("net, extra, shared", [
    (SIAMESE, "", [("ip1", "ip1_p"), ("feat", "feat_p")]),
    (AUTOENCODER, AUTOENCODER_TESTS, []),
    (LSTM, "", []),
], ids=["siamese", "autoencoder", "lstm"])
def test_trains_snapshots_and_resumes_exactly(tmp_path, monkeypatch, capsys, net, extra, shared):
    monkeypatch.chdir(tmp_path)
    log = _train(tmp_path, net, extra, capsys)
    losses = [float(v) for v in re.findall(r"Iteration \d+ \(.*\), loss = ([-\d.e+na]+)", log)]
    assert len(losses) >= 6 and all(np.isfinite(losses)), log[-2000:]
    straight = read_weights(tmp_path / "snap" / "net_iter_6.caffemodel")
    start = read_weights(tmp_path / "snap" / "net_iter_3.caffemodel")
    assert any(not np.array_equal(a, b) for name in straight for a, b in zip(straight[name][1], start[name][1]))
    for a, b in shared:  # one blob under two layer names, as Caffe writes shared parameters
        for wa, wb in zip(straight[a][1], straight[b][1]):
            assert np.array_equal(wa, wb), f"{a} and {b} do not share their weights"
    if extra:
        assert "Test net output #0: cross_entropy_loss" in log and "l2_error" in log
    os.remove(tmp_path / "snap" / "net_iter_6.caffemodel")
    log = _train(tmp_path, net, extra, capsys, "-snapshot", "snap/net_iter_3.solverstate")
    resumed = read_weights(tmp_path / "snap" / "net_iter_6.caffemodel")
    assert list(resumed) == list(straight)
    for name in straight:
        for a, b in zip(straight[name][1], resumed[name][1]):
            assert np.array_equal(a, b), f"{name}: resumed run differs by {np.abs(a - b).max()}"


BVLC = Path(__file__).parent / "data" / "bvlc"


@pytest.mark.parametrize("phase, stages", [("TRAIN", ()), ("TEST", ("test-on-train",)), ("TEST", ("test-on-test",))])
def test_bvlc_mnist_autoencoder_loads_with_its_two_loss_layers(phase, stages):
    net, _ = compile_for_inspection(str(BVLC / "mnist_autoencoder.prototxt"), phase, stage_list=stages,
                                    input_shapes={"data": (4, 1, 28, 28)})
    losses = [(lp.name, lp.type, lp.top[0]) for lp in net.layer_params if lp.name == "loss"]
    assert losses == [("loss", "SigmoidCrossEntropyLoss", "cross_entropy_loss"), ("loss", "EuclideanLoss", "l2_error")]
    assert net.loss_weights == {"cross_entropy_loss": 1.0}  # l2_error has loss_weight 0
    assert net.blob_shapes["decode1"] == (4, 784) and net.blob_shapes["cross_entropy_loss"] == ()


def test_bvlc_mnist_siamese_loads_with_shared_towers():
    net, _ = compile_for_inspection(str(BVLC / "mnist_siamese_train_test.prototxt"), "TRAIN",
                                    input_shapes={"pair_data": (4, 2, 28, 28), "sim": (4,)})
    params = net.params()
    assert params["conv1"][0] is params["conv1_p"][0] and params["ip2"][1] is params["ip2_p"][1]
    assert net.blob_shapes["feat"] == net.blob_shapes["feat_p"] == (4, 2)
    assert net.layers["loss"].type == "ContrastiveLoss"
