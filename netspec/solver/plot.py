"""Training curves from a parsed netspec or Caffe log (what Caffe's plot_training_log.py draws).

Three panels against iterations: the smoothed training loss with each test net's loss outputs, the
test nets' other outputs (accuracies), and the learning rate, whose steps sit where the schedule the
log starts with puts them. The figure is drawn on its own Agg canvas: pyplot's state and the user's
matplotlib backend are never touched.
"""
from __future__ import annotations

import re
from pathlib import Path

from ..errors import NetspecError
from ..formats.atomic import atomic_open
from .log import parse_log


def _is_loss(name: str) -> bool:
    return "loss" in name.lower()


def step_boundaries(text: str, last: int) -> list[int]:
    """Where a "step" or "multistep" schedule changes the rate, from the solver parameters a log starts
    with (caffe and netspec both print them: 'Initializing solver from parameters: ...'), up to
    iteration `last`; [] for other policies or a log without them."""
    policy = re.search(r'^\s*lr_policy: "(\w+)"', text, re.MULTILINE)
    if policy and policy[1] == "step" and (size := re.search(r"^\s*stepsize: (\d+)", text, re.MULTILINE)):
        return list(range(int(size[1]), last + 1, int(size[1]))) if int(size[1]) > 0 else []
    if policy and policy[1] == "multistep":
        return sorted(int(v) for v in re.findall(r"^\s*stepvalue: (\d+)", text, re.MULTILINE))
    return []


def plateau_drops(text: str) -> list[int]:
    """Iterations where lr_policy "plateau" lowered the rate: its 'Iteration N, lr = X: test net #i ...
    has not improved ...' lines (netspec/solver/plateau.py)."""
    return [int(m[1]) for m in re.finditer(r"Iteration (\d+), lr = \S+: test net #\d+ .* has not improved", text)]


def lr_steps(points: list[tuple[int, float]], boundaries: list[int]):
    """(iterations, rates) for a steps-post line whose changes sit at the schedule's boundaries: the
    log samples the rate at display iterations only, so a drop at 750 would show at 760. From a
    boundary on, the rate is the one logged at the next sample."""
    if not points:
        return [], []
    first, last = points[0][0], points[-1][0]
    xs = sorted({it for it, _ in points} | {b for b in boundaries if first < b <= last})
    ys, k = [], 0
    for x in xs:
        while points[k][0] < x:
            k += 1
        ys.append(points[k][1])
    return xs, ys


def _style(n: int) -> dict:
    """Markers on short series: one or two points draw no visible line."""
    return {"marker": "o", "markersize": 3} if n <= 50 else {}


def draw(parsed, title: str, boundaries: list[int] | None = None, drops: list[int] | None = None):
    """A matplotlib Figure of the parsed log, on its own Agg canvas (pyplot and the user's backend are
    left alone); `drops` (plateau rate drops) are marked on every panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8, 9), tight_layout=True)
    FigureCanvasAgg(fig)
    ax_loss, ax_out, ax_lr = fig.subplots(3, 1, sharex=True)
    if parsed.loss:
        ax_loss.plot(*zip(*parsed.loss), label="train loss (smoothed)", **_style(len(parsed.loss)))
    for net in sorted(parsed.test):
        for name in parsed.test_names(net):
            ax = ax_loss if _is_loss(name) else ax_out
            ax.plot(*parsed.test_series(net, name), marker=".", label=f"test #{net} {name}")
    if parsed.lr:
        xs, ys = lr_steps(parsed.lr, boundaries or [])
        ax_lr.plot(xs, ys, drawstyle="steps-post", label="learning rate", **_style(len(parsed.lr)))
        if all(v > 0 for _, v in parsed.lr):
            ax_lr.set_yscale("log")
    for ax, ylabel in ((ax_loss, "loss"), (ax_out, "test outputs"), (ax_lr, "learning rate")):
        for k, it in enumerate(drops or []):
            ax.axvline(it, color="grey", linestyle=":", linewidth=1,
                       label="lr drop: validation stalled" if k == 0 else None)
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    ax_lr.xaxis.set_major_locator(MaxNLocator(integer=True))      # iterations are whole numbers
    ax_lr.set_xlabel("iteration")
    ax_loss.set_title(title)
    return fig


def save_curves(log_path, out, title: str | None = None):
    """Parse `log_path` and write its curves to `out` (temporary name, then rename); the parsed log."""
    parsed = parse_log(log_path)
    if not (parsed.loss or parsed.test or parsed.lr):
        raise NetspecError("no training progress found (expected Caffe's 'Iteration N, loss = L' lines)",
                           file=log_path)
    out = Path(out)
    text = Path(log_path).read_text(encoding="utf-8", errors="replace")
    last = parsed.lr[-1][0] if parsed.lr else 0
    drops = plateau_drops(text)
    fig = draw(parsed, title or Path(log_path).name, sorted(set(step_boundaries(text, last)) | set(drops)), drops)
    kinds = fig.canvas.get_supported_filetypes()
    if out.suffix and out.suffix[1:].lower() not in kinds:
        raise NetspecError(f"cannot write a '{out.suffix}' image (formats: {', '.join(sorted(kinds))})", file=out)
    with atomic_open(out) as f:        # the format follows out's suffix, as savefig(out) would pick it
        fig.savefig(f, dpi=100, format=out.suffix[1:] or None)
    return parsed
