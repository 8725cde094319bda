"""Exact resume (netspec.solver.resume): a net fed by a Data layer with mirror, crop and dropout,
trained 20 iterations, equals the same run stopped at 10 and resumed from its snapshot, bit for bit
on the CPU, in one process and under two gloo processes; a solver state without netspec's fields
(as Caffe writes it) resumes as Caffe does, its Data layers reading from the first record.

The LMDB holds 27 records, so the readers wrap around inside the run at a place no batch boundary
matches: a resume that restarted at record 0 (Caffe's behaviour, netspec's before) differs.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from netspec.cli import main
from netspec.data import db as dbmod
from netspec.data.datum import mat_to_datum
from netspec.formats.caffemodel import read_weights
from netspec.formats.solverstate import read_solverstate, write_solverstate
from netspec.frontend import load_solver
from netspec.solver.solver import Solver

RECORDS = 27

NET = """name: "resume"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { scale: 0.0078125 mirror: true crop_size: 6 mean_value: 128 }
  data_param { source: "records" batch_size: 4 backend: LMDB rand_skip: 5 } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { scale: 0.0078125 crop_size: 6 mean_value: 128 }
  data_param { source: "records" batch_size: 5 backend: LMDB } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "drop" type: "Dropout" bottom: "conv" top: "conv" dropout_param { dropout_ratio: 0.3 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" include { phase: TEST } }
"""
SOLVER = ('net: "net.prototxt" base_lr: 0.05 momentum: 0.9 weight_decay: 0.001 lr_policy: "fixed" '
          'display: 5 max_iter: %d snapshot: 10 snapshot_prefix: "snap/r" random_seed: 11 '
          'solver_mode: CPU test_iter: 2 test_interval: 7 test_initialization: false')


def write_run(folder: Path, max_iter: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "snap").mkdir(exist_ok=True)
    (folder / "net.prototxt").write_text(NET)
    (folder / "solver.prototxt").write_text(SOLVER % max_iter)
    rng = np.random.default_rng(3)
    writer = dbmod.Writer(folder / "records")
    for i in range(RECORDS):
        image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        writer.put(dbmod.caffe_key(i, f"img{i}.png"), mat_to_datum(image, i % 3).SerializeToString())
    writer.close()


def train(folder: Path, resume: str | None = None) -> Solver:
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        sp, path = load_solver("solver.prototxt")
        solver = Solver(sp, path, device="cpu")
        solver.solve(resume)
        for net in [solver.net, *solver.test_nets]:
            net.close()
        return solver
    finally:
        os.chdir(cwd)


def weights(folder: Path, it: int) -> dict:
    layers = read_weights(folder / "snap" / f"r_iter_{it}.caffemodel")
    return {n: arrays for n, (_, arrays) in layers.items() if len(arrays)}


def assert_equal_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() == {"conv", "ip"}
    for name, blobs in a.items():
        for k, (x, y) in enumerate(zip(blobs, b[name])):
            assert np.array_equal(x, y), f"blob {name}/{k}: worst difference {np.abs(x - y).max():.3g}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("full")
    write_run(folder, 20)
    train(folder)
    return folder


def test_resumed_run_equals_the_uninterrupted_run_bit_for_bit(uninterrupted, tmp_path):
    write_run(tmp_path, 10)
    train(tmp_path)
    state = read_solverstate(tmp_path / "snap" / "r_iter_10.solverstate")
    assert {(d.net, d.layer) for d in state.data_state} == {("train", "data"), ("test#0", "data")}
    (tmp_path / "solver.prototxt").write_text(SOLVER % 20)
    train(tmp_path, "snap/r_iter_10.solverstate")
    assert_equal_weights(weights(tmp_path, 20), weights(uninterrupted, 20))


def test_a_state_without_netspecs_fields_resumes_as_caffe(uninterrupted, tmp_path, caplog):
    # Caffe's state has no data_state: the readers restart at record 0, so the weights differ.
    write_run(tmp_path, 20)
    state = read_solverstate(uninterrupted / "snap" / "r_iter_10.solverstate")
    for field in ("data_state", "rng_state", "cuda_rng_state"):
        state.ClearField(field)
    state.learned_net = str(uninterrupted / "snap" / "r_iter_10.caffemodel")
    write_solverstate(tmp_path / "snap" / "caffe_10.solverstate", state)
    caplog.set_level("INFO")
    train(tmp_path, "snap/caffe_10.solverstate")
    assert "no data_state for layer 'data'" in caplog.text
    a, b = weights(tmp_path, 20), weights(uninterrupted, 20)
    assert np.abs(a["ip"][0] - b["ip"][0]).max() > 1e-4


def test_data_state_names_the_cursor_record(tmp_path):
    # rand_skip 5 is drawn below 5; 10 batches of 4 then put the cursor at (skip + 40) mod 27.
    write_run(tmp_path, 10)
    solver = train(tmp_path)
    state = read_solverstate(tmp_path / "snap" / "r_iter_10.solverstate")
    train_state = next(d for d in state.data_state if d.net == "train")
    skip = int(np.random.default_rng([solver.net.layers["data"].seed, 1 << 20]).integers(5))  # the reader's draw
    assert train_state.position == (skip + 40) % RECORDS
    test_state = next(d for d in state.data_state if d.net == "test#0")
    assert test_state.position == 10  # one test pass at iteration 7: 2 batches of 5


# ---- two gloo processes ------------------------------------------------------------------------------
def run_netspec(folder: Path, *argv) -> None:
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert main(["train", "solver.prototxt", "--no-progress", "--cpu-workers", "2", *argv]) == 0
    finally:
        os.chdir(cwd)


@pytest.mark.slow
def test_resume_under_two_gloo_processes_equals_the_uninterrupted_run(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    write_run(full, 20)
    run_netspec(full)
    write_run(part, 10)
    run_netspec(part)
    (part / "solver.prototxt").write_text(SOLVER % 20)
    run_netspec(part, "-snapshot", "snap/r_iter_10.solverstate")
    assert_equal_weights(weights(part, 20), weights(full, 20))
