"""`netspec train --tensorboard DIR` (netspec/solver/tensorboard.py): the event file holds the log's
train loss, train and test outputs and learning rate, at the log's iterations, under --quiet too."""
import pytest

from netspec.cli import main
from netspec.solver.log import parse_log

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 6 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" include { phase: TEST } }
"""
SOLVER = ('net: "net.prototxt" base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 2 display: 1 max_iter: 4 '
          'test_iter: 1 test_interval: 2 snapshot_after_train: false random_seed: 3 solver_mode: CPU\n')


def _scalars(logdir):
    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, pytest.approx(e.value, rel=1e-5)) for e in acc.Scalars(tag)]
            for tag in acc.Tags()["scalars"]}


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    return tmp_path


def test_event_file_holds_what_the_log_says(run, capsys):
    assert main(["train", "solver.prototxt", "--tensorboard", "tb"]) == 0
    (run / "train.log").write_text(capsys.readouterr().err)
    log, got = parse_log(run / "train.log"), _scalars(run / "tb")
    assert got["loss"] == log.loss and len(log.loss) == 5            # the displayed, smoothed loss
    assert got["train/loss"] == list(zip(*log.train_series("loss"))) and len(got["train/loss"]) == 4
    assert got["lr"] == log.lr and [v for _, v in log.lr] == [0.1, 0.1, 0.05, 0.05]
    assert got["test0/acc"] == list(zip(*log.test_series(0, "acc")))
    assert got["test0/loss"] == list(zip(*log.test_series(0, "loss"))) and len(got["test0/loss"]) == 3
    assert got["loss"][0][0] == 0 and got["test0/acc"][-1][0] == 4


def test_quiet_still_writes_the_scalars(run, capsys):
    assert main(["train", "solver.prototxt", "--tensorboard", "tb", "--quiet"]) == 0
    assert "Iteration" not in capsys.readouterr().err
    got = _scalars(run / "tb")
    assert len(got["loss"]) == 5 and len(got["test0/acc"]) == 3
