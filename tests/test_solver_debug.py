"""debug_info: Caffe's [Forward]/[Backward]/[Update] lines carry each blob's mean |value|."""
import logging
import re
from pathlib import Path

import numpy as np
import pytest

import netspec as caffe
from netspec.frontend import load_solver
from netspec.solver import Solver

DATA = Path(__file__).parent / "data" / "caffe"


def values(text, pattern):
    return [float(v) for v in re.findall(pattern + r" ([-\d.e+]+)", text)]


def test_debug_info_lines_hold_caffes_mean_absolute_values(tmp_path, caplog):
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(f'net: "{DATA / "loss_net.prototxt"}"\nweights: "{DATA / "loss_net.caffemodel"}"\n'
                           'base_lr: 0.05 lr_policy: "fixed" momentum: 0.9 weight_decay: 0.005\n'
                           'max_iter: 1 display: 1 debug_info: true solver_mode: CPU random_seed: 1\n')
    sp, path = load_solver(solver_file)
    with caplog.at_level(logging.INFO, logger="netspec"):
        solver = Solver(sp, path)
        w_before = {p.layer + str(p.index): p.tensor.detach().clone().numpy() for p in solver.net.learnable_params()}
        solver.step(1)
    text = caplog.text
    # The same forward/backward by the pycaffe API: Input blobs stay zero in `netspec train`.
    ref = caffe.Net(str(DATA / "loss_net.prototxt"), caffe.TRAIN, weights=str(DATA / "loss_net.caffemodel"))
    ref.forward()
    ref.backward()
    assert values(text, r"\[Forward\] Layer ip1, top blob ip1 data:") == pytest.approx(
        [np.abs(ref.blobs["ip1"].data).mean()], rel=1e-5)
    assert values(text, r"\[Forward\] Layer conv2, param blob 0 data:") == pytest.approx(
        [np.abs(ref.params["conv2"][0].data).mean()], rel=1e-5)
    assert values(text, r"\[Backward\] Layer ip1, param blob 0 diff:") == pytest.approx(
        [np.abs(ref.params["ip1"][0].diff).mean()], rel=1e-5)
    assert values(text, r"\[Backward\] Layer conv2, bottom blob pool1 diff:") == pytest.approx(
        [np.abs(ref.blobs["pool1"].diff).mean()], rel=1e-5)
    # SGD's first step from zero history: update = lr * (grad + decay * decay_mult * w).
    grad, w = ref.params["ip1"][0].diff, w_before["ip10"]
    assert values(text, r"\[Update\] Layer ip1, param 0 data: [-\d.e+]+; diff:") == pytest.approx(
        [np.abs(0.05 * (grad + 0.005 * w)).mean()], rel=1e-4)
    assert "[Backward] All net params (data, diff): L1 norm = (" in text
