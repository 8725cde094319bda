"""lr_policy "plateau" (netspec/solver/plateau.py): the AlexNet paper's divide-by-10-when-validation-
stops-improving rule, driven through the Solver by scripted test outputs, its solverstate extension and
exact resume, and its one-line errors."""
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from netspec.errors import NetspecError
from netspec.frontend import load_solver
from netspec.formats.solverstate import read_solverstate
from netspec.proto import pb
from netspec.solver.plateau import Plateau
from netspec.solver.solver import Solver

from test_solver_solver import make_solver

f32 = np.float32

# Tests every 2 iterations (iter 0 included); the script gives the watched output's value per pass.
PLATEAU = """lr_policy: "plateau" base_lr: 0.1 test_interval: 2 test_iter: 1 display: 0 max_iter: 30
plateau_param {{ output: "{output}" mode: "{mode}" factor: 0.1 patience: 1 cooldown: 1 threshold: 0.01
                 min_lr: 0.0002 max_drops: {max_drops} }}"""


def scripted(solver: Solver, values: dict[int, float], output: str) -> list[float]:
    """Replace the test net's forward by the script (keyed by iteration) and record each update's rate."""
    rates = []

    def test_forward(i):
        return {output: torch.tensor([values[solver.iter]])}, 0.0

    apply = solver.rule.apply

    def record(params, rate, it, **guard):
        rates.append(rate)
        apply(params, rate, it, **guard)

    solver.test_forward = test_forward
    solver.rule.apply = record
    return rates


def expected(drops: dict[int, float], iters: int, base: float = 0.1) -> list[float]:
    rates, rate = [], base
    for it in range(iters):
        rate = drops.get(it, rate)
        rates.append(rate)
    return rates


# Higher is better: improvement, a pass within patience, a drop, a pass in cooldown, another drop,
# a third drop clipped to min_lr, then the cap of three drops holds the rate.
MAX_SCRIPT = [0.5, 0.6, 0.603, 0.59, 0.55, 0.55, 0.7, 0.7, 0.7, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
MAX_DROPS = {6: 0.01, 16: 0.001, 22: 0.0002}


def test_higher_is_better_through_patience_cooldown_min_lr_and_cap(tmp_path):
    s = make_solver(tmp_path, PLATEAU.format(output="acc", mode="max", max_drops=3))
    rates = scripted(s, {2 * k: v for k, v in enumerate(MAX_SCRIPT)}, "acc")
    s.step(30)
    assert rates == pytest.approx(expected(MAX_DROPS, 30), rel=1e-6)
    assert (s.plateau.drops, s.plateau.best) == (3, pytest.approx(0.7))


def test_lower_is_better_stops_at_min_lr_without_a_cap(tmp_path):
    # Loss-like values: 1.0 then no improvement (0.995 is within the 1% threshold) -> a drop after two
    # bad passes, each followed by one cooldown pass; the fourth would go below min_lr and stops there.
    script = [1.0, 0.995, 1.2, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    s = make_solver(tmp_path, PLATEAU.format(output="loss", mode="min", max_drops=0))
    rates = scripted(s, {2 * k: v for k, v in enumerate(script)}, "loss")
    s.step(30)
    assert rates == pytest.approx(expected({4: 0.01, 10: 0.001, 16: 0.0002}, 30), rel=1e-6)
    assert s.plateau.drops == 3


def test_drop_is_logged_with_its_reason(tmp_path, caplog):
    s = make_solver(tmp_path, PLATEAU.format(output="acc", mode="max", max_drops=3))
    scripted(s, {2 * k: v for k, v in enumerate(MAX_SCRIPT)}, "acc")
    with caplog.at_level(logging.INFO):
        s.step(8)
    drops = [r.getMessage() for r in caplog.records if "has not improved" in r.getMessage()]
    assert len(drops) == 1
    assert drops[0].startswith("Iteration 6, lr = 0.01: test net #0 acc = 0.59 has not improved on the best 0.6")


def test_resume_in_a_patience_window_equals_the_uninterrupted_run(tmp_path):
    script = {2 * k: v for k, v in enumerate(MAX_SCRIPT)}
    extra = PLATEAU.format(output="acc", mode="max", max_drops=3) + ' snapshot_prefix: "snap/p"'
    whole = make_solver(tmp_path / "a", extra)
    rates_whole = scripted(whole, script, "acc")
    whole.step(20)
    # Stop at iteration 5: pass 2 (iter 4) was one pass without improvement, inside the patience window.
    first = make_solver(tmp_path / "b", extra)
    rates_first = scripted(first, script, "acc")
    first.step(5)
    assert first.plateau.bad_passes == 1
    _, state_path = first.snapshot()
    assert read_solverstate(state_path).plateau_state.bad_passes == 1
    resumed = make_solver(tmp_path / "c", extra)
    rates_resumed = scripted(resumed, script, "acc")
    resumed.restore(state_path)
    resumed.step(15)
    assert rates_first + rates_resumed == rates_whole
    for name, blobs in whole.net.params().items():
        for a, b in zip(blobs, resumed.net.params()[name]):
            assert torch.equal(a, b), name


def test_caffe_state_without_the_extension_starts_afresh(tmp_path):
    script = {2 * k: v for k, v in enumerate(MAX_SCRIPT)}
    extra = PLATEAU.format(output="acc", mode="max", max_drops=3) + ' snapshot_prefix: "snap/p"'
    first = make_solver(tmp_path / "a", extra)
    scripted(first, script, "acc")
    first.step(8)
    assert first.plateau.drops == 1
    _, state_path = first.snapshot()
    state = read_solverstate(state_path)
    state.ClearField("plateau_state")          # what Caffe writes: no netspec extension
    with open(state_path, "wb") as f:
        f.write(state.SerializeToString())
    resumed = make_solver(tmp_path / "b", extra)
    resumed.restore(state_path)
    assert resumed.iter == 8
    assert (resumed.plateau.lr, resumed.plateau.best, resumed.plateau.drops) == (pytest.approx(0.1), None, 0)


def test_plateau_state_round_trips_through_proto():
    p = Plateau(pb.PlateauParameter(), lr=float(f32(0.001)), best=float(f32(0.75)), bad_passes=2,
                cooldown_left=1, drops=2)
    q = Plateau(pb.PlateauParameter(), lr=1.0)
    q.load(pb.PlateauState.FromString(p.to_proto().SerializeToString()))
    assert q == p
    r = Plateau(pb.PlateauParameter(), lr=1.0)
    r.load_floats(p.as_floats())
    assert r == p


@pytest.mark.parametrize("extra, field", [
    ('test_iter: 1 test_interval: 2 plateau_param { output: "nope" }', "plateau_param.output"),
    ('test_iter: 1 test_interval: 2 plateau_param { test_net: 3 }', "plateau_param.test_net"),
    ('test_iter: 1 test_interval: 2 plateau_param { output: "acc" factor: 1.5 }', "plateau_param.factor"),
    ('test_iter: 1 test_interval: 2 plateau_param { output: "acc" mode: "up" }', "plateau_param.mode"),
])
def test_bad_settings_are_one_line_naming_solver_and_field(tmp_path, extra, field):
    with pytest.raises(NetspecError) as e:
        make_solver(tmp_path, 'lr_policy: "plateau" ' + extra)
    msg = str(e.value)
    assert "\n" not in msg and field in msg and "solver.prototxt" in msg


def test_no_test_net_is_one_line(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    from test_solver_solver import NET
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(
        'train_net: "net.prototxt" base_lr: 0.1 lr_policy: "plateau" max_iter: 4 solver_mode: CPU\n')
    sp, path = load_solver(tmp_path / "solver.prototxt")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(NetspecError) as e:
            Solver(sp, path)
    finally:
        os.chdir(cwd)
    msg = str(e.value)
    assert "\n" not in msg and "plateau_param.test_net" in msg and "no test net" in msg and "solver.prototxt" in msg


def test_paper_solver_uses_the_rule():
    sp, _ = load_solver(Path(__file__).parent.parent / "models" / "alexnet" / "solver_paper.prototxt")
    p = sp.plateau_param
    assert (sp.lr_policy, p.output, p.mode, p.max_drops) == ("plateau", "accuracy", "max", 3)
    assert p.factor == pytest.approx(0.1) and sp.base_lr == pytest.approx(0.01)


def test_plot_marks_the_drops_where_they_happened(tmp_path):
    from netspec.solver.log import GlogFormatter
    from netspec.solver.plot import draw, plateau_drops, save_curves

    s = make_solver(tmp_path, PLATEAU.format(output="acc", mode="max", max_drops=3).replace("display: 0",
                                                                                             "display: 5"))
    scripted(s, {2 * k: v for k, v in enumerate(MAX_SCRIPT)}, "acc")
    log_path = tmp_path / "train.log"
    handler = logging.FileHandler(log_path)
    handler.setFormatter(GlogFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    old = root.level
    root.setLevel(logging.INFO)
    try:
        s.step(30)
    finally:
        root.removeHandler(handler)
        root.setLevel(old)
        handler.close()
    text = log_path.read_text()
    assert plateau_drops(text) == sorted(MAX_DROPS)
    parsed = save_curves(log_path, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 1000
    fig = draw(parsed, "t", sorted(MAX_DROPS), plateau_drops(text))
    lr_axis = fig.axes[2]
    marks = sorted(int(line.get_xdata()[0]) for line in lr_axis.lines if line.get_linestyle() == ":")
    assert marks == sorted(MAX_DROPS)
    steps = next(line for line in lr_axis.lines if line.get_label() == "learning rate")
    xs, ys = steps.get_xdata(), steps.get_ydata()
    for it, rate in MAX_DROPS.items():      # the rate line steps down exactly at each drop
        k = list(xs).index(it)
        assert ys[k] == pytest.approx(rate, rel=1e-6) and ys[k - 1] > ys[k]
