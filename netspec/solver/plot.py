"""Training curves from a parsed netspec or Caffe log (what Caffe's plot_training_log.py draws).

Three panels against iterations: the smoothed training loss with each test net's loss outputs, the
test nets' other outputs (accuracies), and the learning rate.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import NetspecError
from ..formats.atomic import atomic_open
from .log import parse_log


def _is_loss(name: str) -> bool:
    return "loss" in name.lower()


def draw(parsed, title: str):
    """A matplotlib Figure of the parsed log."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 9), tight_layout=True)
    ax_loss, ax_out, ax_lr = fig.subplots(3, 1, sharex=True)
    if parsed.loss:
        ax_loss.plot(*zip(*parsed.loss), label="train loss (smoothed)")
    for net in sorted(parsed.test):
        for name in parsed.test_names(net):
            ax = ax_loss if _is_loss(name) else ax_out
            ax.plot(*parsed.test_series(net, name), marker=".", label=f"test #{net} {name}")
    if parsed.lr:
        ax_lr.plot(*zip(*parsed.lr), drawstyle="steps-post", label="learning rate")
        if all(v > 0 for _, v in parsed.lr):
            ax_lr.set_yscale("log")
    for ax, ylabel in ((ax_loss, "loss"), (ax_out, "test outputs"), (ax_lr, "learning rate")):
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
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
    fig = draw(parsed, title or Path(log_path).name)
    kinds = fig.canvas.get_supported_filetypes()
    if out.suffix and out.suffix[1:].lower() not in kinds:
        raise NetspecError(f"cannot write a '{out.suffix}' image (formats: {', '.join(sorted(kinds))})", file=out)
    with atomic_open(out) as f:        # the format follows out's suffix, as savefig(out) would pick it
        fig.savefig(f, dpi=100, format=out.suffix[1:] or None)
    return parsed
