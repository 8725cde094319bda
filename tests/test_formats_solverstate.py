"""netspec.formats.solverstate against the .solverstate real Caffe 1.0 wrote (tests/data/caffe)."""
from pathlib import Path

import numpy as np
import pytest
import torch

from netspec.errors import NetspecError
from netspec.formats.solverstate import (
    check_history,
    history_arrays,
    make_solverstate,
    read_solverstate,
    write_solverstate,
)

DATA = Path(__file__).parent / "data" / "caffe"
STATE = DATA / "sgd_step_iter_12.solverstate"
PARAMS = [("conv1", 0), ("conv1", 1), ("conv2", 0), ("conv2", 1), ("ip1", 0), ("ip1", 1)]


def test_fields_of_caffe_snapshot():
    state = read_solverstate(STATE)
    # 12 SGD steps with the "step" policy, stepsize 5: the LR dropped at iterations 5 and 10
    assert (state.iter, state.current_step, state.learned_net) == (12, 2, "sgd_step_iter_12.caffemodel")
    shapes = [a.shape for a in history_arrays(state)]
    assert shapes == [(8, 3, 3, 3), (8,), (8, 4, 3, 3), (8,), (3, 128), (3,)]


def test_history_is_the_last_update_in_learnable_params_order():
    """Caffe's SGD sets diff = history and then data -= diff, so history = weights before - after."""
    trajectory = np.load(DATA / "sgd_step_trajectory.npz")
    for (layer, i), history in zip(PARAMS, history_arrays(read_solverstate(STATE), STATE)):
        before, after = trajectory[f"iter10/{layer}/{i}"], trajectory[f"iter11/{layer}/{i}"]
        error = np.abs((before - after) - history).max()
        assert error <= 4 * np.spacing(np.abs(after).max()), f"history of {layer}/{i}: worst error {error}"


def test_read_write_is_byte_identical(tmp_path):
    state = read_solverstate(STATE)
    history = [torch.from_numpy(a) for a in history_arrays(state)]
    out = tmp_path / "again.solverstate"
    write_solverstate(out, make_solverstate(state.iter, state.current_step, history, state.learned_net))
    assert out.read_bytes() == STATE.read_bytes()


def test_zero_fields_are_still_written(tmp_path):
    """Caffe sets every field, so iter 0 and current_step 0 are present in the file."""
    path = tmp_path / "s.solverstate"
    write_solverstate(path, make_solverstate(0, 0, [np.zeros((2, 2))], ""))
    state = read_solverstate(path)
    assert all(state.HasField(f) for f in ("iter", "current_step", "learned_net"))
    assert history_arrays(state)[0].shape == (2, 2)


def test_history_count_check():
    with pytest.raises(NetspecError) as e:
        check_history(read_solverstate(STATE), 12, source=STATE)
    assert "\n" not in str(e.value) and "6 history blobs" in str(e.value) and "12" in str(e.value)
    check_history(read_solverstate(STATE), 6)


@pytest.mark.parametrize("content, expected", [
    (lambda: STATE.read_bytes()[:-7], "truncated"),
    (lambda: b"iter: 12\ncurrent_step: 2\n", "this is a text file, not a binary .solverstate"),
    (lambda: bytes(range(256)) * 4, "not a binary .solverstate"),
])
def test_bad_files(content, expected, tmp_path):
    path = tmp_path / "bad.solverstate"
    path.write_bytes(content())
    with pytest.raises(NetspecError) as e:
        read_solverstate(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value) and expected in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(NetspecError, match="nope.solverstate: no such file"):
        read_solverstate(tmp_path / "nope.solverstate")
