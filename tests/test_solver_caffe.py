"""The solver against real Caffe: the 12-iteration SGD trajectory of tests/data/caffe (step policy,
momentum, weight decay, lr/decay mults), driven through the pycaffe API exactly as gen_fixtures.py's
`trajectory()` drove Caffe, and the snapshot pair Caffe wrote after it."""
from pathlib import Path

import numpy as np
import pytest

import netspec.pycaffe.net as caffe
from netspec.formats.caffemodel import read_weights
from netspec.formats.solverstate import history_arrays, read_solverstate
from netspec.pycaffe.solver import get_solver

DATA = Path(__file__).parent / "data" / "caffe"
TOL = 1e-5


def rel_error(ours, ref) -> float:
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12))


@pytest.fixture(scope="module")
def trajectory(tmp_path_factory):
    """Run the trajectory once (snapshot into a temporary folder); return what the tests compare."""
    import os

    ref = np.load(DATA / "sgd_step_trajectory.npz")
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("traj"))
    try:
        caffe.set_mode_cpu()
        solver = get_solver(DATA / "sgd_step_solver.prototxt")
        net = solver.net
        net.copy_from(DATA / "loss_net.caffemodel")
        errors, losses = {}, []
        for name, blobs in net.params.items():
            for i, b in enumerate(blobs):
                errors[f"init/{name}/{i}"] = rel_error(b.data, ref[f"init/{name}/{i}"])
        for it in range(12):
            net.blobs["data"].data[...] = ref[f"iter{it}/data"]
            net.blobs["label"].data[...] = ref[f"iter{it}/label"]
            solver.step(1)
            losses.append(float(net.blobs["loss"].data))
            errors[f"iter{it}/loss"] = rel_error(net.blobs["loss"].data, ref[f"iter{it}/loss"])
            for name, blobs in net.params.items():
                for i, b in enumerate(blobs):
                    errors[f"iter{it}/{name}/{i}"] = rel_error(b.data, ref[f"iter{it}/{name}/{i}"])
        solver.snapshot()
        folder = Path.cwd()
    finally:
        os.chdir(here)
    return dict(solver=solver, errors=errors, losses=losses, folder=folder)


def test_trajectory_matches_caffe_across_the_lr_step(trajectory):
    errors = trajectory["errors"]
    assert len(errors) == 6 + 12 * 7
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOL, f"worst relative error {errors[worst]:.3g} at {worst}"


def test_the_trajectory_really_moves(trajectory):
    # A solver that did nothing would fail the comparison above; make sure the loss changed too.
    losses = trajectory["losses"]
    assert len(set(round(v, 4) for v in losses)) > 6, losses


def test_snapshot_solverstate_equals_caffes(trajectory):
    ours = read_solverstate(trajectory["folder"] / "sgd_step_iter_12.solverstate")
    ref = read_solverstate(DATA / "sgd_step_iter_12.solverstate")
    assert (ours.iter, ours.current_step) == (ref.iter, ref.current_step) == (12, 2)
    assert Path(ours.learned_net).name == "sgd_step_iter_12.caffemodel"
    hours, href = history_arrays(ours), history_arrays(ref)
    assert len(hours) == len(href) == 6
    for i, (a, b) in enumerate(zip(hours, href)):
        assert a.shape == b.shape, f"history {i}: shape {a.shape} vs Caffe's {b.shape}"
        err = rel_error(a, b)
        assert err < TOL, f"history blob {i}: worst relative error {err:.3g}"


def test_snapshot_caffemodel_equals_caffes(trajectory):
    ours = read_weights(trajectory["folder"] / "sgd_step_iter_12.caffemodel")
    ref = read_weights(DATA / "sgd_step_iter_12.caffemodel")
    learned = {k: v for k, v in ref.items() if v[1]}
    assert [k for k, v in ours.items() if v[1]] == list(learned)
    for name, (_, blobs) in learned.items():
        for i, b in enumerate(blobs):
            a = ours[name][1][i]
            assert a.shape == b.shape, f"{name}/{i}"
            err = rel_error(a, b)
            assert err < TOL, f"caffemodel {name}/{i}: worst relative error {err:.3g}"


def test_restore_from_caffes_own_snapshot(tmp_path, monkeypatch):
    """Caffe's .solverstate names its caffemodel relative to where Caffe ran: found next to it."""
    monkeypatch.chdir(tmp_path)
    solver = get_solver(DATA / "sgd_step_solver.prototxt")
    solver.restore(DATA / "sgd_step_iter_12.solverstate")
    assert solver.iter == 12 and solver._core.current_step == 2
    ref = read_weights(DATA / "sgd_step_iter_12.caffemodel")
    for name, blobs in solver.net.params.items():
        for i, b in enumerate(blobs):
            assert np.array_equal(b.data, ref[name][1][i]), f"{name}/{i}"
    href = history_arrays(read_solverstate(DATA / "sgd_step_iter_12.solverstate"))
    for i, (h, r) in enumerate(zip(solver._core.rule.history, href)):
        assert np.array_equal(h.numpy(), r), f"history {i}"
