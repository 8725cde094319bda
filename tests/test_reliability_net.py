"""Reliability of nets and solvers (issue 14): Caffe's remaining checks as one-line errors naming the
file and layer: non-positive stride/dilation/kernel, negative dims, blobs larger than memory
(refused by arithmetic before allocating), labels out of range in training (reported at the next
display, naming the iteration and the label, without a per-iteration host read) and in testing, a
solver state with a negative iter, and a test_iter repeated for the one generic net.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from reliability_helpers import make_lmdb, one_line

from netspec.cli import main
from netspec.errors import NetspecError
from netspec.formats.caffemodel import write_caffemodel
from netspec.formats.solverstate import write_solverstate
from netspec.frontend import load_net, load_solver
from netspec.graph import compile_net
from netspec.proto import pb
from netspec.solver.solver import Solver

INPUT = 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 1 dim: 8 dim: 8 } } }\n'


def compile_text(tmp_path: Path, text: str):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return compile_net(load_net(str(path), pb.TRAIN), pb.TRAIN, source=str(path))


# ---- geometry and dims ----------------------------------------------------------------------------------
@pytest.mark.parametrize("param, message", [
    ("kernel_size: 3 stride: 0", "convolution_param.stride is 0; it must be positive"),
    ("kernel_size: 3 dilation: 0", "convolution_param.dilation is 0; it must be positive"),
    ("kernel_size: 0", "convolution_param.kernel_size is 0; it must be positive"),
    ("kernel_h: 3 kernel_w: 3 stride_h: 0 stride_w: 1", "convolution_param.stride_h is 0"),
])
def test_non_positive_convolution_geometry(tmp_path, param, message):
    text = INPUT + f'layer {{ name: "conv" type: "Convolution" bottom: "x" top: "y"\n' \
                   f'  convolution_param {{ num_output: 2 {param} }} }}\n'
    with pytest.raises(NetspecError, match=f"net.prototxt:2: layer 'conv': {message}"):
        compile_text(tmp_path, text)


def test_zero_pooling_stride(tmp_path):
    text = INPUT + 'layer { name: "pool" type: "Pooling" bottom: "x" top: "y"\n' \
                   '  pooling_param { kernel_size: 2 stride: 0 } }\n'
    with pytest.raises(NetspecError, match="net.prototxt:2: layer 'pool': pooling_param.stride is 0"):
        compile_text(tmp_path, text)


def test_negative_dims_are_refused(tmp_path, capsys):
    text = 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: -2 dim: 3 } } }\n'
    with pytest.raises(NetspecError, match=r"layer 'in': input_param shape #0 has a negative dimension "
                                           r"\(-2 x 3\)"):
        compile_text(tmp_path, text)
    assert main(["shapes", str(tmp_path / "net.prototxt")]) == 1
    assert "negative dimension" in one_line(capsys.readouterr().err)
    legacy = 'input: "x" input_dim: 1 input_dim: -3 input_dim: 4 input_dim: 4\n'   # upgraded to an Input layer
    with pytest.raises(NetspecError, match=r"input_param shape #0 has a negative dimension \(1 x -3 x 4 x 4\)"):
        compile_text(tmp_path, legacy)
    dummy = 'layer { name: "d" type: "DummyData" top: "x" dummy_data_param { shape { dim: 2 dim: -1 } } }\n'
    with pytest.raises(NetspecError, match="layer 'd': dummy_data_param shape #0 has a negative"):
        compile_text(tmp_path, dummy)


# ---- blobs larger than memory ---------------------------------------------------------------------------
def test_parameter_blob_larger_than_memory_names_layer_and_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("NETSPEC_MAX_BLOB_BYTES", str(1 << 30))
    text = INPUT + 'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "y"\n' \
                   '  inner_product_param { num_output: 2000000000 } }\n'
    with pytest.raises(NetspecError, match=r"net.prototxt:2: layer 'fc': parameter blob 'weight' of shape "
                                           r"2000000000 x 64 needs 512000000000 bytes \(512 GB\), more than "
                                           r"the 1.07 GB"):
        compile_text(tmp_path, text)


def test_top_larger_than_memory_is_refused_before_allocating(tmp_path):
    # 10^12 floats: 4 TB, more than any machine running this test (the default limit is its memory)
    text = 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1000000 dim: 1000000 } } }\n'
    with pytest.raises(NetspecError, match=r"layer 'in': top 'x' of shape 1000000 x 1000000 needs "
                                           r"4000000000000 bytes \(4 TB\)"):
        compile_text(tmp_path, text)


# ---- labels out of range --------------------------------------------------------------------------------
NET = """name: "labels"
layer { name: "data" type: "Data" top: "data" top: "label"
  transform_param { scale: 0.00390625 } data_param { source: "%s" batch_size: 4 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" include { phase: TEST } }
"""


def write_run(tmp_path: Path, bad_record: int, bad_label: int, solver: str = "") -> Path:
    """An LMDB of 40 records, labels 0..3 but `bad_label` at `bad_record`, a net and a solver."""
    make_lmdb(tmp_path / "db", n=40, size=4, label=lambda i: bad_label if i == bad_record else i % 4)
    (tmp_path / "net.prototxt").write_text(NET % (tmp_path / "db"))
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.01 lr_policy: "fixed" max_iter: 9 display: 5 '
        f'snapshot: 0 snapshot_after_train: false random_seed: 1 solver_mode: CPU {solver}')
    return tmp_path / "solver.prototxt"


@pytest.mark.parametrize("label", [99, -1])
def test_train_label_out_of_range_is_named_at_the_next_display(tmp_path, label):
    # record 13 is in the batch of iteration 3 (4 records per batch); the display at 5 reports it
    sp, path = load_solver(write_run(tmp_path, 13, label))
    solver = Solver(sp, path, device="cpu")
    with pytest.raises(NetspecError, match=rf"layer 'loss': iteration 3: label {label} is outside \[0, 4\)"):
        solver.solve()
    assert solver.iter <= 6
    solver.net.close()


@pytest.mark.parametrize("loss", [
    'layer { name: "loss" type: "HingeLoss" bottom: "ip" bottom: "label" top: "loss" }',
    'layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }\n'
    'layer { name: "loss" type: "MultinomialLogisticLoss" bottom: "prob" bottom: "label" top: "loss" }',
])
def test_other_losses_on_a_gpu_name_a_bad_label_at_the_next_display(tmp_path, monkeypatch, loss):
    """As on a GPU (no host read per forward): the label is clamped for the forward, kept on the
    device, and named at the display with its iteration, as SoftmaxWithLoss names it."""
    from netspec.layers import loss_extra

    monkeypatch.setattr(loss_extra, "_checked_at_once", lambda labels: False)
    path = write_run(tmp_path, 13, 99)
    net = (tmp_path / "net.prototxt").read_text()
    start = net.index('layer { name: "loss"')
    (tmp_path / "net.prototxt").write_text(net[:start] + loss + net[net.index("\n", start):])
    sp, path = load_solver(path)
    solver = Solver(sp, path, device="cpu")
    with pytest.raises(NetspecError, match=r"layer 'loss': iteration 3: label 99 is outside \[0, 4\)"):
        solver.solve()
    assert solver.iter <= 6
    solver.net.close()


def test_train_label_out_of_range_from_the_cli_is_one_line(tmp_path, capsys):
    write_run(tmp_path, 2, 99)
    assert main(["train", str(tmp_path / "solver.prototxt"), "--no-progress"]) == 1
    assert one_line(capsys.readouterr().err).endswith(
        "layer 'loss': iteration 0: label 99 is outside [0, 4) (the classes of bottom 'ip'); fix the data "
        "or set ignore_label")


def test_ignore_label_still_skips_an_out_of_range_value(tmp_path):
    sp, path = load_solver(write_run(tmp_path, 13, -1))
    net = text_format.Parse((tmp_path / "net.prototxt").read_text(), pb.NetParameter())
    net.layer[2].loss_param.ignore_label = -1
    (tmp_path / "net.prototxt").write_text(text_format.MessageToString(net))
    solver = Solver(sp, path, device="cpu")
    solver.solve()
    assert solver.iter == 9
    solver.net.close()


def test_test_net_label_out_of_range(tmp_path):
    sp, path = load_solver(write_run(tmp_path, 6, 7, 'test_iter: 3 test_interval: 4 test_net: "%s"'
                                     % (tmp_path / "net.prototxt")))
    sp.ClearField("net")
    sp.train_net = str(tmp_path / "net.prototxt")
    solver = Solver(sp, path, device="cpu")
    # test_initialization: the test at iteration 0 reads records 0..11 before any training
    with pytest.raises(NetspecError, match=r"layer 'loss': test net #0 at iteration 0: label 7 is outside"):
        solver.solve()
    for net in [solver.net, *solver.test_nets]:
        net.close()


def test_netspec_test_names_the_batch(tmp_path, capsys, caplog):
    write_run(tmp_path, 9, 12)
    with caplog.at_level("WARNING"):   # an earlier main() may have left its log handler on a closed stream
        net = compile_net(load_net(str(tmp_path / "net.prototxt"), pb.TEST), pb.TEST)
        write_caffemodel(tmp_path / "w.caffemodel", list(net.layer_params), net.params())
        net.close()
    status = main(["test", "--model", str(tmp_path / "net.prototxt"), "--weights", str(tmp_path / "w.caffemodel"),
                   "--iterations", "4"])
    assert status == 1
    assert "layer 'loss': batch 2: label 12 is outside [0, 4)" in one_line(capsys.readouterr().err)


# ---- solver files and states ----------------------------------------------------------------------------
def test_solverstate_with_negative_iter(tmp_path):
    sp, path = load_solver(write_run(tmp_path, 100, 0))
    state = pb.SolverState(iter=-5, current_step=0)
    write_solverstate(tmp_path / "bad.solverstate", state)
    solver = Solver(sp, path, device="cpu")
    with pytest.raises(NetspecError, match="bad.solverstate: iter is -5; a solver state's iter cannot be negative"):
        solver.restore(tmp_path / "bad.solverstate")
    solver.net.close()


def test_test_iter_repeated_for_the_generic_net_is_warned_about(tmp_path, caplog):
    solver_file = write_run(tmp_path, 100, 0, "test_iter: 2 test_iter: 2 test_interval: 100")
    sp, path = load_solver(solver_file)
    solver = Solver(sp, path, device="cpu")
    assert len(solver.test_nets) == 2   # Caffe's InitTestNets: one instance per test_iter
    assert "test_iter is given 2 times for the one generic net: it will be tested 2 times" in caplog.text
    for net in [solver.net, *solver.test_nets]:
        net.close()
