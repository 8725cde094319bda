"""`netspec demo`: Caffe's whole ImageNet workflow, end to end, on a toy ImageNet and a CPU-sized CaffeNet.

The steps are the by-hand commands of models/caffenet/README.md, run in this process:
  1. make_toy_imagenet        -> WORKDIR/toy_imagenet/{train,val}/, train.txt, val.txt (JPEG files)
  2. convert_imageset         -> toy_imagenet/train_lmdb (shuffled), toy_imagenet/val_lmdb, 64x64 Datum
  3. compute_image_mean       -> toy_imagenet/mean.binaryproto
  4. the toy prototxts        -> WORKDIR/toy_train_val.prototxt, WORKDIR/toy_solver.prototxt, every path
                                 in them absolute, so `netspec train WORKDIR/toy_solver.prototxt` works
                                 from any folder (a `toy_imagenet/` in the current folder cannot shadow them)
  5. caffe train              -> Caffe's glog lines on stderr and in WORKDIR/train.log, the final
                                 snapshot WORKDIR/toy_caffenet_iter_N.caffemodel + .solverstate
  6. caffe test               -> the snapshot scored once on every validation image: top-1/top-5 error
  7. plot_training_log        -> WORKDIR/curves.png
The process's current folder is never changed. A rerun reuses steps 1-3 when they are complete and
were made with the same options (a stamp file records them; an interrupted conversion resumes), and
always trains afresh from the fillers.
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from google.protobuf import text_format

from .data import db as dbmod
from .data.convert import Options, convert, read_listfile
from .data.mean import compute_mean
from .data.toy import RECORD_SIZE, make_toy_imagenet
from .errors import NetspecError
from .frontend import load_net, load_solver, read_text_file
from .formats.atomic import atomic_write
from .proto import pb
from .solver.log import GlogFormatter, glog_to_stderr
from .solver.signals import SignalHandler

log = logging.getLogger("netspec.demo")

TEMPLATE_NET, TEMPLATE_SOLVER = "toy_train_val.prototxt", "toy_solver.prototxt"
STAMP = "netspec_demo.json"          # the options toy_imagenet/ was made with
MAX_TEST_BATCH = 50


@dataclass
class Config:
    workdir: Path = Path("netspec_demo")
    classes: int = 10
    per_class: int = 100             # training images per class
    val_per_class: int = 20
    iterations: int | None = None    # None: the toy solver's max_iter
    gpu: str = "auto"                # auto | cpu | a CUDA device id
    seed: int = 0
    progress: bool = True


@dataclass
class Result:
    """What a run made (paths below `workdir`) and what the test said (accuracies as fractions; None
    for an Accuracy layer the net lacks)."""
    workdir: Path
    device: str
    classes: int
    train_images: int
    val_images: int
    caffemodel: Path
    solverstate: Path
    test_iterations: int
    test_lines: list[str]
    top1: float | None
    top5: float | None
    seconds: dict[str, float] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)

    data = property(lambda self: self.workdir / "toy_imagenet")
    net = property(lambda self: self.workdir / TEMPLATE_NET)
    solver = property(lambda self: self.workdir / TEMPLATE_SOLVER)
    log = property(lambda self: self.workdir / "train.log")
    curves = property(lambda self: self.workdir / "curves.png")


# ---- steps 1-3: data ------------------------------------------------------------------------------
def _settings(cfg: Config) -> dict:
    return {"classes": cfg.classes, "per_class": cfg.per_class, "val_per_class": cfg.val_per_class,
            "seed": cfg.seed, "record_size": RECORD_SIZE}


def _stamp_matches(root: Path, settings: dict) -> bool:
    try:
        return json.loads((root / STAMP).read_text()) == settings
    except (OSError, ValueError):
        return False


def make_images(cfg: Config, root: Path, say) -> bool:
    """Step 1; False when a complete tree made with the same options is already there."""
    settings = _settings(cfg)
    if _stamp_matches(root, settings) and (root / "synset_words.txt").is_file():  # written last
        return False
    if root.exists():
        if not (root / STAMP).is_file() and any(root.iterdir()):
            raise NetspecError(f"'{root}' exists and was not made by netspec demo: choose another --workdir "
                               "or remove it")
        shutil.rmtree(root)  # ours: other options, or an interrupted run
    root.mkdir(parents=True)
    atomic_write(root / STAMP, json.dumps(settings).encode())
    say(f"making the toy ImageNet in {root} ...")
    make_toy_imagenet(root, cfg.classes, cfg.per_class, cfg.val_per_class, cfg.seed)
    return True


def make_lmdb(root: Path, split: str, remake: bool, cfg: Config) -> bool:
    """Step 2 for one split; False when the LMDB is there with every record of the list."""
    lines = read_listfile(root / f"{split}.txt")
    db, partial = root / f"{split}_lmdb", root / f"{split}_lmdb.partial"
    if not remake and db.is_dir() and dbmod.count(db) == len(lines):
        return False
    for stale in (db, partial) if remake else (db,):
        if stale.exists():
            shutil.rmtree(stale)
    size = RECORD_SIZE
    convert(root / split, lines, db, Options(resize_height=size, resize_width=size), shuffle=split == "train",
            seed=cfg.seed, resume=partial.exists(), progress=cfg.progress)
    return True


def prepare_data(cfg: Config, root: Path, say) -> list[str]:
    """Steps 1-3 in `root`; returns the names of the parts reused from an earlier run."""
    remake = make_images(cfg, root, say)
    reused = [] if remake else ["toy images"]
    made = {split: make_lmdb(root, split, remake, cfg) for split in ("train", "val")}
    reused += [f"{split}_lmdb" for split, m in made.items() if not m]
    mean = root / "mean.binaryproto"
    if made["train"] or not mean.is_file():
        compute_mean(root / "train_lmdb", mean, progress=cfg.progress)
    else:
        reused.append("mean")
    return reused


# ---- step 4: the prototxts --------------------------------------------------------------------------
def template_dir() -> Path:
    """models/caffenet of the source tree (editable installs), else a copy inside the package."""
    here = Path(__file__).resolve().parent
    for d in (here.parent / "models" / "caffenet", here / "models" / "caffenet"):
        if (d / TEMPLATE_NET).is_file() and (d / TEMPLATE_SOLVER).is_file():
            return d
    raise NetspecError(f"the toy CaffeNet ({TEMPLATE_NET}, {TEMPLATE_SOLVER}) is not installed: looked in "
                       f"{here.parent / 'models' / 'caffenet'} and {here / 'models' / 'caffenet'}")


def test_batch(n: int) -> int:
    """The largest TEST batch <= 50 that divides n, so one pass scores every image exactly once."""
    return max(b for b in range(1, min(n, MAX_TEST_BATCH) + 1) if n % b == 0)


def demo_net(template: pb.NetParameter, data: Path, classes: int, val_images: int) -> pb.NetParameter:
    """The toy net reading WORKDIR's data by absolute path, fc8 sized for `classes`."""
    net = pb.NetParameter()
    net.CopyFrom(template)
    for lp in net.layer:
        if lp.type == "Data":
            train = any(r.phase == pb.TRAIN for r in lp.include)
            lp.data_param.source = str(data / ("train_lmdb" if train else "val_lmdb"))
            lp.transform_param.mean_file = str(data / "mean.binaryproto")
            if not train:
                lp.data_param.batch_size = test_batch(val_images)
    scores = [lp for lp in net.layer if lp.type == "InnerProduct"][-1]  # fc8
    scores.inner_product_param.num_output = classes
    keep = [lp for lp in net.layer if not (lp.type == "Accuracy" and lp.accuracy_param.top_k > classes)]
    del net.layer[:]
    net.layer.extend(keep)
    return net


def _scaled(value: int, template_iters: int, iters: int) -> int:
    return max(1, round(value * iters / template_iters))


def demo_solver(template: pb.SolverParameter, net: Path, prefix: Path, test_iter: int, iterations,
                device) -> pb.SolverParameter:
    """The toy solver with absolute paths; --iterations scales the schedule (step, tests, display)."""
    sp = pb.SolverParameter()
    sp.CopyFrom(template)
    sp.net, sp.snapshot_prefix = str(net), str(prefix)
    del sp.test_iter[:]
    sp.test_iter.append(test_iter)
    if iterations and iterations != template.max_iter:
        n0 = template.max_iter
        sp.max_iter = iterations
        for name in ("stepsize", "test_interval", "display"):
            if getattr(template, name):
                setattr(sp, name, _scaled(getattr(template, name), n0, iterations))
    sp.solver_mode = pb.SolverParameter.GPU if device.type == "cuda" else pb.SolverParameter.CPU
    if device.type == "cuda":
        sp.device_id = device.index or 0
    return sp


def _write_prototxt(path: Path, message, origin: Path, what: str) -> None:
    header = (f"# Written by `netspec demo` from {origin} ({what}). Edit it and run\n"
              f"# `netspec train {path.parent / TEMPLATE_SOLVER}` to train again; the next `netspec demo`\n"
              "# in this folder writes it anew.\n")
    atomic_write(path, (header + text_format.MessageToString(message)).encode())


def write_prototxts(cfg: Config, data: Path, val_images: int, device) -> None:
    """Step 4: WORKDIR/toy_train_val.prototxt and WORKDIR/toy_solver.prototxt."""
    src = template_dir()
    net_path, solver_path = cfg.workdir / TEMPLATE_NET, cfg.workdir / TEMPLATE_SOLVER
    net = demo_net(read_text_file(src / TEMPLATE_NET, pb.NetParameter()), data, cfg.classes, val_images)
    _write_prototxt(net_path, net, src / TEMPLATE_NET, f"data paths, fc8 for {cfg.classes} classes")
    test_iter = val_images // test_batch(val_images)
    sp = demo_solver(read_text_file(src / TEMPLATE_SOLVER, pb.SolverParameter()), net_path,
                     cfg.workdir / "toy_caffenet", test_iter, cfg.iterations, device)
    _write_prototxt(solver_path, sp, src / TEMPLATE_SOLVER, "paths, test_iter, device, iterations")


# ---- steps 5-7: train, test, plot ---------------------------------------------------------------------
def choose_device(flag: str):
    """--gpu auto: the first CUDA device if there is one; cpu; or a device id."""
    import torch

    flag = str(flag).strip().lower()
    if flag in ("auto", ""):
        return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    if flag in ("cpu", "-1"):
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if not flag.isdigit() or int(flag) >= count:
        raise NetspecError(f"--gpu {flag}: expected auto, cpu or a CUDA device id; this machine has {count} "
                           "CUDA device(s)")
    return torch.device("cuda", int(flag))


@contextlib.contextmanager
def _tee(path: Path):
    """The `netspec` loggers also write glog lines to `path` (what `caffe train 2>&1 | tee` keeps)."""
    handler = logging.FileHandler(path, mode="w", encoding="utf-8")
    handler.setFormatter(GlogFormatter())
    logger = logging.getLogger("netspec")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()


def _progress_bar(solver):
    import sys

    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=max(solver.param.max_iter - solver.iter, 0), unit="it", leave=False, file=sys.stderr)


def train(solver_path: Path, device, log_path: Path, progress: bool = True) -> tuple[str, str]:
    """Step 5: Caffe's training loop from the fillers; Ctrl-C snapshots and stops, as `netspec train`.
    The log goes to `log_path` only (stderr gets its warnings and, on a terminal, a progress bar)."""
    from .solver.solver import Solver

    sp, path = load_solver(solver_path)
    with glog_to_stderr(logging.INFO) as to_stderr, _tee(log_path):
        to_stderr.setLevel(logging.WARNING)
        solver = Solver(sp, path, device=device)
        solver.progress = _progress_bar(solver) if progress else None
        log.info("Training on %s", solver.device)
        main_thread = threading.current_thread() is threading.main_thread()
        with SignalHandler() if main_thread else contextlib.nullcontext() as signals:
            solver.action_fn = signals.action if signals else None
            try:
                solver.solve()
            finally:
                if solver.progress is not None:
                    solver.progress.close()
                for net in [solver.net, *solver.test_nets]:
                    net.close()
    if solver.requested_early_exit:
        if solver.last_snapshot:
            print(f"training interrupted at iteration {solver.iter}; to go on: netspec train {solver_path} "
                  f"-snapshot {solver.last_snapshot[1]}")
        raise KeyboardInterrupt
    if solver.last_snapshot is None:
        raise NetspecError("training wrote no snapshot", file=solver_path)
    return solver.last_snapshot


def score(net_path: Path, weights: str, iterations: int, device) -> tuple[list[str], dict[int, float]]:
    """Step 6, `netspec test`: Caffe's summary and error lines, and {top_k: accuracy}."""
    from . import evaluate
    from .formats import load_weights
    from .graph import compile_net

    param = load_net(str(net_path), phase=pb.TEST)
    net = compile_net(param, phase=pb.TEST, device_map=str(device), device=device, source=str(net_path))
    try:
        load_weights(net.params(), weights)
        scores = evaluate.score(net, iterations)
    finally:
        net.close()
    lines = evaluate.summary_lines(scores) + evaluate.error_lines(net, scores)
    return lines, {k: float(scores.mean(b)[0]) for k, b in evaluate.accuracy_tops(net)}


def plot(log_path: Path, out: Path) -> None:
    """Step 7: the curves `netspec plot` draws."""
    from .solver.plot import save_curves

    save_curves(log_path, out, "netspec demo")


# ---- the whole demo -----------------------------------------------------------------------------------
def _check(cfg: Config) -> None:
    if cfg.classes < 2 or cfg.per_class < 1 or cfg.val_per_class < 1:
        raise NetspecError("--classes must be at least 2, --per-class and --val-per-class at least 1")
    if cfg.iterations is not None and cfg.iterations < 1:
        raise NetspecError(f"--iterations must be positive, got {cfg.iterations}")


def run_demo(cfg: Config, say=print) -> Result:
    """Steps 1-7 in `cfg.workdir`; `say` gets one line per step and the test's summary."""
    _check(cfg)
    device, clock = choose_device(cfg.gpu), [time.perf_counter()]
    cfg = replace(cfg, workdir=Path(cfg.workdir).expanduser().resolve())
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    r = Result(cfg.workdir, str(device), cfg.classes, cfg.classes * cfg.per_class,
               cfg.classes * cfg.val_per_class, Path(), Path(), 0, [], None, None)

    def lap(step: str) -> None:
        clock.append(time.perf_counter())
        r.seconds[step] = clock[-1] - clock[-2]

    say(f"[1-3/7] data: toy ImageNet, LMDBs and mean in {r.data}")
    r.reused = prepare_data(cfg, r.data, say)
    if r.reused:
        say(f"        reused from an earlier run: {', '.join(r.reused)}")
    lap("data")
    write_prototxts(cfg, r.data, r.val_images, device)
    say(f"[4/7] prototxts: {r.net}, {r.solver}")
    say(f"[5/7] training on {device} (log: {r.log})")
    r.caffemodel, r.solverstate = (Path(p) for p in train(r.solver, device, r.log, cfg.progress))
    lap("train")
    r.test_iterations = r.val_images // test_batch(r.val_images)
    say(f"[6/7] netspec test -model {r.net} -weights {r.caffemodel} -iterations {r.test_iterations}")
    r.test_lines, acc = score(r.net, str(r.caffemodel), r.test_iterations, device)
    r.top1, r.top5 = acc.get(1), acc.get(5)
    for line in r.test_lines:
        say("        " + line)
    lap("test")
    say(f"[7/7] training curves: {r.curves}")
    plot(r.log, r.curves)
    lap("plot")
    return r
