"""`netspec train SOLVER`: Caffe's `caffe train` (tools/caffe.cpp train()).

Flags as Caffe spells them: -solver, -weights A.caffemodel[,B] (fine-tune; loaded in order),
-snapshot X.solverstate (resume; not with -weights), -gpu 0 | 0,1 | all, -level, -stage,
-sigint_effect / -sighup_effect (stop | snapshot | none), plus netspec's --device-map. The log goes
to stderr in Caffe's glog format, so Caffe's parse_log.py and `netspec plot` read it; a progress
bar with an ETA is shown only when stderr is a terminal.
"""
from __future__ import annotations

import logging
import sys

import torch

from ..errors import NetspecError
from ..frontend import load_solver
from ..solver.log import glog_to_stderr
from ..solver.signals import EFFECTS, SignalHandler

log = logging.getLogger("netspec.cli.train")

HELP = "train a net with a Caffe solver prototxt (caffe train)"
EXAMPLES = ("  netspec train models/caffenet/solver.prototxt -gpu 0\n"
            "  netspec train solver.prototxt -snapshot caffenet_iter_5000.solverstate\n"
            "  netspec train solver.prototxt -weights bvlc_reference_caffenet.caffemodel\n")


def add_arguments(p) -> None:
    p.add_argument("solver_file", nargs="?", metavar="SOLVER", help="solver prototxt (or -solver)")
    p.add_argument("--solver", help="solver prototxt")
    p.add_argument("--weights", help="pretrained .caffemodel(s) to fine-tune from, comma-separated")
    p.add_argument("--snapshot", help=".solverstate to resume training from")
    p.add_argument("--gpu", help="GPU id(s): 0, 0,1 or all (default: the solver's solver_mode/device_id)")
    p.add_argument("--level", type=int, default=0, help="train net state level (default 0)")
    p.add_argument("--stage", action="append", default=[], help="train net state stage(s), comma-separated")
    p.add_argument("--device-map", "--device_map", dest="device_map", metavar="MAP",
                   help="logical devices to torch devices, e.g. gpu0=cuda:0,gpu1=cuda:1")
    p.add_argument("--sigint_effect", default="stop", choices=EFFECTS,
                   help="on SIGINT/SIGTERM (default stop: snapshot then stop, as snapshot_after_train)")
    p.add_argument("--sighup_effect", default="snapshot", choices=EFFECTS, help="on SIGHUP (default snapshot)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")


def parse_gpus(flag: str | None) -> list[int]:
    """-gpu: '' -> [], '0,1' -> [0, 1], 'all' -> every visible GPU."""
    if not flag:
        return []
    count = torch.cuda.device_count()
    if flag.strip() == "all":
        ids = list(range(count))
    else:
        try:
            ids = [int(s) for s in flag.split(",") if s.strip()]
        except ValueError:
            raise NetspecError(f"-gpu '{flag}': expected GPU ids such as 0 or 0,1, or 'all'") from None
    if not ids or max(ids) >= count or min(ids) < 0:
        raise NetspecError(f"-gpu {flag}: this machine has {count} CUDA device(s)"
                           + ("" if count else " (drop -gpu to train on the CPU)"))
    return ids


def choose_device(sp, gpu_flag: str | None) -> torch.device | None:
    """caffe.cpp: -gpu wins; else the solver's solver_mode/device_id (None: let the solver decide)."""
    gpus = parse_gpus(gpu_flag)
    if not gpus:
        if gpu_flag is None:
            return None
        log.info("Use CPU.")
        return torch.device("cpu")
    log.info("Using GPUs %s", ", ".join(str(g) for g in gpus))
    if len(gpus) > 1:
        log.warning("data-parallel training over %d GPUs is not available in this netspec version; "
                    "training on GPU %d only (the effective batch size is one GPU's)", len(gpus), gpus[0])
    sp.device_id = gpus[0]
    return torch.device("cuda", gpus[0])


def _progress(solver, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    total = max(solver.param.max_iter - solver.iter, 0)
    return tqdm(total=total, initial=0, unit="it", dynamic_ncols=True, leave=False, file=sys.stderr)


def run(args) -> int:
    with glog_to_stderr(logging.DEBUG if args.verbose > 1 else logging.INFO):
        return train(args)


def train(args) -> int:
    from ..solver.solver import Solver

    solver_file = args.solver or args.solver_file
    if not solver_file:
        raise NetspecError("need a solver definition to train (netspec train SOLVER or -solver SOLVER)")
    if args.solver and args.solver_file and args.solver != args.solver_file:
        raise NetspecError(f"two solvers given: '{args.solver_file}' and -solver '{args.solver}'")
    if args.snapshot and args.weights:
        raise NetspecError("give -snapshot to resume training or -weights to fine-tune, not both")
    sp, path = load_solver(solver_file)
    sp.train_state.level = args.level
    sp.train_state.stage.extend(s.strip() for item in args.stage for s in item.split(",") if s.strip())
    device = choose_device(sp, args.gpu)
    if args.snapshot:
        sp.ClearField("weights")
    elif args.weights:
        sp.ClearField("weights")
        sp.weights.append(args.weights)
    solver = Solver(sp, path, device=device, device_map=args.device_map)
    log.info("Training on %s", solver.device)
    with SignalHandler(args.sigint_effect, args.sighup_effect) as signals:
        solver.action_fn = signals.action
        if args.snapshot:
            log.info("Resuming from %s", args.snapshot)
            solver.restore(args.snapshot)
        solver.progress = _progress(solver, not args.no_progress)
        log.info("Starting Optimization")
        try:
            solver.solve()
        finally:
            if solver.progress is not None:
                solver.progress.close()
    return 0
