"""`netspec train` and `netspec plot`: Caffe's flags and their refusals, resume through -snapshot,
fine-tuning through -weights, SIGINT and a diverging loss in a real subprocess, and (slow) a small
CaffeNet-style net learning the toy ImageNet from LMDB on the CPU."""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from netspec.cli import main
from netspec.formats.caffemodel import read_weights
from netspec.formats.solverstate import read_solverstate
from netspec.proto import pb

NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 6 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 2 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 16 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
SOLVER = ('net: "net.prototxt" base_lr: 0.05 momentum: 0.9 lr_policy: "fixed" display: 2 '
          'max_iter: {max_iter} snapshot: {snapshot} snapshot_prefix: "snap/tiny" random_seed: 7 '
          'solver_mode: CPU {extra}')


def setup_run(folder: Path, max_iter=10, snapshot=0, extra="") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "snap").mkdir(exist_ok=True)
    (folder / "net.prototxt").write_text(NET)
    sp = pb.SolverParameter()
    text_format.Merge(SOLVER.format(max_iter=max_iter, snapshot=snapshot, extra=extra), sp)  # extra overrides
    path = folder / "solver.prototxt"
    path.write_text(text_format.MessageToString(sp))
    return path


def netspec_subprocess(*args, cwd):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "netspec.cli", "train", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_train_writes_caffe_log_and_snapshots(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    setup_run(tmp_path, max_iter=6, snapshot=4)
    assert main(["train", "-solver", "solver.prototxt"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"^I\d{4} [\d:.]+ +\d+ solver\.py:\d+\] Solving tiny$", err, re.M)
    assert re.findall(r"Iteration (\d+) \(", err) == ["0", "2", "4"]
    assert "Iteration 6, loss = " in err and "Optimization Done." in err
    assert sorted(p.name for p in (tmp_path / "snap").iterdir()) == [
        "tiny_iter_4.caffemodel", "tiny_iter_4.solverstate", "tiny_iter_6.caffemodel", "tiny_iter_6.solverstate"]
    state = read_solverstate(tmp_path / "snap" / "tiny_iter_6.solverstate")
    assert state.iter == 6 and state.learned_net == "snap/tiny_iter_6.caffemodel"


def test_resume_from_snapshot_equals_straight_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    setup_run(tmp_path, max_iter=10, snapshot=5)
    assert main(["train", "solver.prototxt"]) == 0
    straight = read_weights(tmp_path / "snap" / "tiny_iter_10.caffemodel")
    os.remove(tmp_path / "snap" / "tiny_iter_10.caffemodel")
    assert main(["train", "solver.prototxt", "-snapshot", "snap/tiny_iter_5.solverstate"]) == 0
    assert "Resuming from snap/tiny_iter_5.solverstate" in capsys.readouterr().err
    resumed = read_weights(tmp_path / "snap" / "tiny_iter_10.caffemodel")
    for name in ("ip1", "ip2"):
        for a, b in zip(straight[name][1], resumed[name][1]):
            assert np.array_equal(a, b), f"{name}: worst difference {np.abs(a - b).max()}"


def test_weights_fine_tune(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    setup_run(tmp_path, max_iter=2)
    assert main(["train", "solver.prototxt"]) == 0
    first = read_weights(tmp_path / "snap" / "tiny_iter_2.caffemodel")
    setup_run(tmp_path / "tune", max_iter=0, extra="snapshot_after_train: true")
    monkeypatch.chdir(tmp_path / "tune")
    assert main(["train", "solver.prototxt", "-weights", str(tmp_path / "snap" / "tiny_iter_2.caffemodel")]) == 0
    assert "copied 2 layers" in capsys.readouterr().err
    tuned = read_weights(tmp_path / "tune" / "snap" / "tiny_iter_0.caffemodel")
    assert all(np.array_equal(a, b) for a, b in zip(first["ip1"][1], tuned["ip1"][1]))


@pytest.mark.parametrize("argv, message", [
    (["-weights", "a.caffemodel", "-snapshot", "a.solverstate"], "give -snapshot to resume training or -weights"),
    ([], "need a solver definition"),
    (["-sigint_effect", "stop", "-gpu", "abc"], "-gpu 'abc': expected GPU ids"),
])
def test_refusals_are_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    setup_run(tmp_path)
    solver = ["solver.prototxt"] if argv else []
    assert main(["train", *solver, *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("netspec train: error: ") and message in err[-1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only message")
def test_gpu_flag_without_cuda(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    setup_run(tmp_path)
    assert main(["train", "solver.prototxt", "-gpu", "0"]) == 1
    assert "this machine has 0 CUDA device(s)" in capsys.readouterr().err


def test_iterations_is_not_a_train_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    setup_run(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["train", "solver.prototxt", "-iterations", "5"])
    assert e.value.code == 2


@pytest.mark.slow
def test_sigint_leaves_a_loadable_snapshot(tmp_path):
    setup_run(tmp_path, max_iter=10_000_000, extra="display: 1000")
    proc = netspec_subprocess("solver.prototxt", cwd=tmp_path)
    lines = []
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if "Starting Optimization" in line or not line:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    err = "".join(lines) + err
    assert proc.returncode == 0, err[-2000:]
    assert "Optimization stopped early." in err
    snaps = sorted((tmp_path / "snap").glob("tiny_iter_*.solverstate"))
    assert len(snaps) == 1, err[-2000:]
    state = read_solverstate(snaps[0])
    assert state.iter > 0 and snaps[0].name == f"tiny_iter_{state.iter}.solverstate"
    weights = read_weights(tmp_path / state.learned_net)
    assert all(np.isfinite(b).all() for _, blobs in weights.values() for b in blobs)


@pytest.mark.slow
def test_diverging_loss_stops_cleanly(tmp_path):
    # From iteration 3 the rate is 1e36: the weights blow up and the loss turns nan or inf.
    setup_run(tmp_path, max_iter=50, snapshot=2,
              extra='lr_policy: "multistep" stepvalue: 3 gamma: 1e36 base_lr: 0.01 display: 1')
    proc = netspec_subprocess("solver.prototxt", cwd=tmp_path)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert re.match(r"netspec train: error: iteration (\d+): the (loss is (nan|inf|-inf)|weights are not finite)",
                    last), last
    stopped_at = int(re.search(r"iteration (\d+)", last).group(1))
    assert 3 < stopped_at < 50
    snaps = sorted((tmp_path / "snap").glob("*.solverstate"), key=lambda p: read_solverstate(p).iter)
    assert snaps, "no snapshot was written before the divergence"
    state = read_solverstate(snaps[-1])
    assert state.iter <= stopped_at
    weights = read_weights(tmp_path / state.learned_net)
    assert all(np.isfinite(b).all() for _, blobs in weights.values() for b in blobs)


TOY_NET = """name: "ToyCaffeNet"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { mirror: true crop_size: 28 mean_value: 120 mean_value: 120 mean_value: 120 scale: 0.0125 }
  data_param { source: "train_lmdb" batch_size: 20 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { crop_size: 28 mean_value: 120 mean_value: 120 mean_value: 120 scale: 0.0125 }
  data_param { source: "val_lmdb" batch_size: 25 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 16 kernel_size: 5
    weight_filler { type: "gaussian" std: 0.05 } bias_filler { type: "constant" value: 0 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 32 kernel_size: 3 pad: 1 group: 2
    weight_filler { type: "gaussian" std: 0.05 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc3" type: "InnerProduct" bottom: "pool2" top: "fc3"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 64 weight_filler { type: "gaussian" std: 0.05 }
    bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu3" type: "ReLU" bottom: "fc3" top: "fc3" }
layer { name: "drop3" type: "Dropout" bottom: "fc3" top: "fc3" dropout_param { dropout_ratio: 0.5 } }
layer { name: "fc4" type: "InnerProduct" bottom: "fc3" top: "fc4"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.05 }
    bias_filler { type: "constant" value: 0 } } }
layer { name: "accuracy" type: "Accuracy" bottom: "fc4" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc4" bottom: "label" top: "loss" }
"""
TOY_SOLVER = """net: "net.prototxt"
test_iter: 2 test_interval: 100
base_lr: 0.01 lr_policy: "step" gamma: 0.1 stepsize: 150 momentum: 0.9 weight_decay: 0.0005
display: 20 max_iter: 200 snapshot: 0 snapshot_prefix: "toy" random_seed: 1 solver_mode: CPU
"""


@pytest.mark.slow
def test_toy_imagenet_learns_and_plots(tmp_path, monkeypatch, capsys):
    from netspec.data.convert import Options, convert, read_listfile
    from netspec.data.toy import make_toy_imagenet

    monkeypatch.chdir(tmp_path)
    classes = 5
    make_toy_imagenet("img", classes=classes, per_class=40, val_per_class=10, seed=1, min_size=32, max_size=64)
    opt = Options(resize_height=32, resize_width=32)
    convert("img/train", read_listfile("img/train.txt"), "train_lmdb", opt, shuffle=True, seed=1, progress=False)
    convert("img/val", read_listfile("img/val.txt"), "val_lmdb", opt, progress=False)
    (tmp_path / "net.prototxt").write_text(TOY_NET)
    (tmp_path / "solver.prototxt").write_text(TOY_SOLVER)
    capsys.readouterr()
    assert main(["train", "solver.prototxt"]) == 0
    log = capsys.readouterr().err
    (tmp_path / "train.log").write_text(log)
    accuracies = [float(v) for v in re.findall(r"Test net output #\d+: accuracy = ([\d.]+)", log)]
    assert len(accuracies) == 3  # iterations 0, 100, 200
    chance = 1.0 / classes
    assert accuracies[-1] > 2 * chance, f"test accuracy {accuracies} (chance {chance})"
    assert main(["plot", "train.log", "-o", "curves.png"]) == 0
    png = (tmp_path / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    import matplotlib.image

    image = matplotlib.image.imread(tmp_path / "curves.png")
    assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0


def test_plot_refuses_a_log_without_progress(tmp_path, capsys):
    (tmp_path / "empty.log").write_text("nothing here\n")
    assert main(["plot", str(tmp_path / "empty.log")]) == 1
    assert "no training progress found" in capsys.readouterr().err


def test_plot_refuses_an_unknown_image_format(tmp_path, capsys):
    log = tmp_path / "t.log"
    log.write_text("I1125 12:00:00.000000 1 solver.py:1] Iteration 0, loss = 2.3\n"
                   "I1125 12:00:01.000000 1 solver.py:1] Iteration 10, loss = 1.5\n")
    assert main(["plot", str(log), "-o", str(tmp_path / "curves.xyz")]) == 1
    err = capsys.readouterr().err
    assert "cannot write a '.xyz' image" in err and "png" in err and "Traceback" not in err
    assert not (tmp_path / "curves.xyz").exists()


def test_level_and_stage_select_the_train_net(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    setup_run(tmp_path, max_iter=0)
    staged = NET.replace('inner_product_param { num_output: 16 weight_filler { type: "xavier" } } }',
                         'inner_product_param { num_output: 16 weight_filler { type: "xavier" } }\n'
                         '  exclude { stage: "wide" } }\n'
                         'layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"\n'
                         '  inner_product_param { num_output: 24 weight_filler { type: "xavier" } }\n'
                         '  include { stage: "wide" min_level: 1 } }')
    (tmp_path / "net.prototxt").write_text(staged)
    assert main(["train", "solver.prototxt"]) == 0
    assert read_weights(tmp_path / "snap" / "tiny_iter_0.caffemodel")["ip1"][1][0].shape == (16, 6)
    assert main(["train", "solver.prototxt", "-stage", "wide", "-level", "1"]) == 0
    assert read_weights(tmp_path / "snap" / "tiny_iter_0.caffemodel")["ip1"][1][0].shape == (24, 6)
