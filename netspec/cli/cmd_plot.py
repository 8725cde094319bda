"""`netspec plot train.log -o curves.png`: training curves from a netspec or Caffe training log
(what Caffe's tools/extra/plot_training_log.py draws, from the same log lines).

Three panels against iterations: the smoothed training loss with each test net's loss outputs,
the test nets' other outputs (accuracies), and the learning rate.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import NetspecError
from ..solver.log import parse_log

HELP = "plot training loss, test outputs and learning rate from a training log"
EXAMPLES = "  netspec train solver.prototxt 2>&1 | tee train.log; netspec plot train.log -o curves.png\n"


def add_arguments(p) -> None:
    p.add_argument("log", help="training log (netspec train's or caffe train's stderr)")
    p.add_argument("-o", "--output", help="image to write (.png, .pdf, .svg; default: LOG.png)")
    p.add_argument("--title", help="figure title (default: the log's file name)")


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


def run(args) -> int:
    parsed = parse_log(args.log)
    if not (parsed.loss or parsed.test or parsed.lr):
        raise NetspecError("no training progress found (expected Caffe's 'Iteration N, loss = L' lines)",
                           file=args.log)
    out = Path(args.output or f"{args.log}.png")
    if not out.parent.is_dir():
        raise NetspecError(f"cannot write: folder '{out.parent}' does not exist", file=out)
    fig = draw(parsed, args.title or Path(args.log).name)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}{out.suffix}")
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    print(f"wrote {out} ({len(parsed.loss)} train, {sum(len(r) for r in parsed.test.values())} test points)")
    return 0
