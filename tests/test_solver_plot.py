"""`netspec plot` (netspec/solver/plot.py): whole-number iteration ticks, visible short series, the
learning rate's steps where the logged schedule puts them, a short title, the user's backend untouched."""
import matplotlib
import pytest

from netspec.solver.log import parse_log
from netspec.solver.plot import draw, lr_steps, save_curves, step_boundaries

HEAD = """I1125 12:00:00.000000 1 solver.cpp:48] Initializing solver from parameters: 
base_lr: 0.01
display: 20
max_iter: 800
lr_policy: "step"
gamma: 0.1
stepsize: 750
net: "toy.prototxt"
I1125 12:00:00.100000 1 solver.cpp:310] Solving ToyNet
"""


def _log(tmp_path, iterations, lr_at=lambda it: 0.01):
    lines = [HEAD]
    for it in iterations:
        lines.append(f"I1125 12:00:01.000000 1 solver.cpp:228] Iteration {it}, loss = {2.3 - it / 1000:g}\n")
        lines.append(f"I1125 12:00:01.000000 1 sgd_solver.cpp:105] Iteration {it}, lr = {lr_at(it):g}\n")
    path = tmp_path / "run" / "a_long_folder_name" / "train.log"
    path.parent.mkdir(parents=True)
    path.write_text("".join(lines))
    return path


def test_the_drop_sits_at_the_stepsize_not_at_the_next_display(tmp_path):
    path = _log(tmp_path, range(0, 801, 20), lambda it: 0.01 if it < 750 else 0.001)
    parsed = parse_log(path)
    fig = draw(parsed, "t", step_boundaries(path.read_text(), parsed.lr[-1][0]))
    line = fig.axes[2].lines[0]
    pairs = list(zip(line.get_xdata(), line.get_ydata()))
    assert (740, 0.01) in pairs and (750, 0.001) in pairs and line.get_drawstyle() == "steps-post"


def test_multistep_boundaries_and_other_policies():
    text = 'lr_policy: "multistep"\nstepvalue: 300\nstepvalue: 100\n'
    assert step_boundaries(text, 1000) == [100, 300]
    assert step_boundaries('lr_policy: "step"\nstepsize: 100\n', 350) == [100, 200, 300]
    assert step_boundaries('lr_policy: "inv"\n', 1000) == []
    assert lr_steps([(0, 1.0), (20, 0.1)], [15]) == ([0, 15, 20], [1.0, 0.1, 0.1])


def test_short_logs_have_integer_ticks_and_visible_series(tmp_path):
    path = _log(tmp_path, [0, 1, 2, 3])
    parsed = parse_log(path)
    fig = draw(parsed, "t", [])
    fig.canvas.draw()
    ticks = [t for t in fig.axes[2].get_xticks() if 0 <= t <= 3]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    for ax in (fig.axes[0], fig.axes[2]):
        assert ax.lines[0].get_marker() == "o"    # four points: markers, or nothing would show


def test_title_is_the_file_name_and_the_backend_stays(tmp_path):
    matplotlib.use("svg")          # a user's choice that the plot must not switch
    try:
        path = _log(tmp_path, [0, 20, 40])
        save_curves(path, tmp_path / "c.png")
        assert matplotlib.get_backend().lower() == "svg"
        assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    finally:
        matplotlib.use("agg")


def test_default_title(tmp_path, monkeypatch):
    from netspec.solver import plot

    seen = {}
    real = plot.draw
    monkeypatch.setattr(plot, "draw", lambda parsed, title, *rest: seen.setdefault("t", title) and real(parsed, title, *rest))
    path = _log(tmp_path, [0, 20])
    save_curves(path, tmp_path / "c.png")
    assert seen["t"] == "train.log"


@pytest.mark.parametrize("n, marker", [(3, "o"), (200, "None")])
def test_markers_only_on_short_series(tmp_path, n, marker):
    path = _log(tmp_path, range(0, 20 * n, 20))
    fig = draw(parse_log(path), "t", [])
    assert str(fig.axes[0].lines[0].get_marker()) == marker
