"""`netspec demo`: toy ImageNet -> LMDB -> mean -> train a CPU-sized CaffeNet -> test -> curves, in a
work folder (default ./netspec_demo/). The steps and what a rerun reuses: netspec/demo.py.

stdout gets one line per step, `netspec test`'s summary and, at the end, where everything went and
the commands to go on by hand; stderr gets the progress bars and the training log in Caffe's format.
"""
from __future__ import annotations

from pathlib import Path

from ..demo import Config, Result, run_demo

HELP = "see netspec work end to end: toy ImageNet, LMDB, mean, train a small CaffeNet, test, plot"
EXAMPLES = ("  netspec demo\n"
            "  netspec demo --workdir /tmp/demo --iterations 200 --classes 5 --gpu cpu\n")


def add_arguments(p) -> None:
    d = Config()
    p.add_argument("--workdir", default=str(d.workdir), help=f"work folder (default ./{d.workdir}/)")
    p.add_argument("--iterations", type=int, default=None,
                   help="training iterations (default: the toy solver's max_iter; the schedule scales)")
    p.add_argument("--classes", type=int, default=d.classes, help=f"toy classes (default {d.classes})")
    p.add_argument("--per-class", "--per_class", dest="per_class", type=int, default=d.per_class,
                   help=f"training images per class (default {d.per_class})")
    p.add_argument("--val-per-class", "--val_per_class", dest="val_per_class", type=int,
                   default=d.val_per_class, help=f"validation images per class (default {d.val_per_class})")
    p.add_argument("--gpu", default="auto",
                   help="auto (a CUDA device if there is one, else the CPU), cpu, or a CUDA device id")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the toy images and the shuffle")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def summary(r: Result) -> list[str]:
    """Where everything went, the test's accuracies against chance, and how to go on."""
    rows = [("toy ImageNet", f"{r.data}/ ({r.train_images} train + {r.val_images} val JPEGs)"),
            ("LMDBs", f"{r.data / 'train_lmdb'}, {r.data / 'val_lmdb'}"),
            ("mean", str(r.data / "mean.binaryproto")),
            ("net, solver", f"{r.net}, {r.solver}"),
            ("training log", str(r.log)),
            ("snapshot", f"{r.caffemodel}, {r.solverstate.name}"),
            ("curves", str(r.curves))]
    lines = [f"netspec demo done in {sum(r.seconds.values()):.0f} s on {r.device} ("
             + ", ".join(f"{k} {v:.0f} s" for k, v in r.seconds.items()) + ")"]
    lines += [f"  {k:<13} {v}" for k, v in rows]
    for k, acc in ((1, r.top1), (5, r.top5)):
        if acc is not None:
            lines.append(f"  top-{k} accuracy = {acc:.4g} (error {1 - acc:.4g}; chance {k / r.classes:.3g})")
    lines += ["next:",
              f"  netspec train {r.solver}",
              f"  netspec test -model {r.net} -weights {r.caffemodel} -iterations {r.test_iterations}",
              f"  netspec plot {r.log} -o {r.curves}"]
    return lines


def run(args) -> int:
    cfg = Config(workdir=Path(args.workdir), classes=args.classes, per_class=args.per_class,
                 val_per_class=args.val_per_class, iterations=args.iterations, gpu=args.gpu, seed=args.seed,
                 progress=not args.quiet)
    result = run_demo(cfg, say=lambda line: print(line, flush=True))
    print("\n".join(summary(result)))
    return 0
