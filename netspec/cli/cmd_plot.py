"""`netspec plot train.log -o curves.png`: training curves from a netspec or Caffe training log
(what Caffe's tools/extra/plot_training_log.py draws, from the same log lines).

Three panels against iterations: the smoothed training loss with each test net's loss outputs,
the test nets' other outputs (accuracies), and the learning rate.
"""
from __future__ import annotations

from pathlib import Path

from ..solver.plot import save_curves

HELP = "plot training loss, test outputs and learning rate from a training log"
EXAMPLES = "  netspec train solver.prototxt 2>&1 | tee train.log; netspec plot train.log -o curves.png\n"


def add_arguments(p) -> None:
    p.add_argument("log", help="training log (netspec train's or caffe train's stderr)")
    p.add_argument("-o", "--output", help="image to write (.png, .pdf, .svg; default: LOG.png)")
    p.add_argument("--title", help="figure title (default: the log's file name)")


def run(args) -> int:
    out = Path(args.output or f"{args.log}.png")
    parsed = save_curves(args.log, out, args.title)
    print(f"wrote {out} ({len(parsed.loss)} train, {sum(len(r) for r in parsed.test.values())} test points)")
    return 0
