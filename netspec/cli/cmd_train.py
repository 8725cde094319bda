"""`netspec train SOLVER`: Caffe's `caffe train` (tools/caffe.cpp train()).

Flags as Caffe spells them: -solver, -weights A.caffemodel[,B] (fine-tune; loaded in order),
-snapshot X.solverstate (resume; not with -weights), -gpu 0 | 0,1 | all, -level, -stage,
-sigint_effect / -sighup_effect (stop | snapshot | none), plus netspec's --device-map and
--cpu-workers. The log goes to stderr in Caffe's glog format, so Caffe's parse_log.py and `netspec
plot` read it; a progress bar with an ETA is shown only when stderr is a terminal.

Several GPUs train data-parallel as Caffe does (netspec.parallel): one process per replica, each
with the solver's batch; a device map spanning two GPUs (AlexNet's columns) makes each replica span
two. `--cpu-workers N` runs N replicas on the CPU; under torchrun (RANK/WORLD_SIZE set) this process
is one replica of the launcher's group, on one machine or several.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import TYPE_CHECKING

from ..errors import NetspecError
from ..solver.signals import EFFECTS, SignalHandler
from . import report_errors
from .cmd_shapes import stages

if TYPE_CHECKING:
    from .. import parallel

log = logging.getLogger("netspec.cli.train")

HELP = "train a net with a Caffe solver prototxt (caffe train)"
EXAMPLES = ("  netspec train models/caffenet/solver.prototxt -gpu 0\n"
            "  netspec train solver.prototxt -snapshot caffenet_iter_5000.solverstate\n"
            "  netspec train solver.prototxt -weights bvlc_reference_caffenet.caffemodel\n"
            "  netspec train models/alexnet/solver.prototxt -gpu 0,1,2,3   # 2 replicas x 2 columns\n"
            "  torchrun --nnodes 2 --nproc-per-node 8 ... -m netspec train solver.prototxt -gpu all\n")


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
    p.add_argument("--cpu-workers", "--cpu_workers", dest="cpu_workers", type=int, default=0, metavar="N",
                   help="data-parallel training in N CPU processes (gloo); the effective batch is N times "
                        "the net's")
    p.add_argument("--sigint_effect", default="stop", choices=EFFECTS,
                   help="on SIGINT/SIGTERM (default stop: snapshot then stop, as snapshot_after_train)")
    p.add_argument("--sighup_effect", default="snapshot", choices=EFFECTS, help="on SIGHUP (default snapshot)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    p.add_argument("--tensorboard", metavar="DIR",
                   help="also write the train and test outputs and the learning rate as TensorBoard "
                        "scalars to DIR (needs the tensorboard package)")
    p.add_argument("--force", action="store_true",
                   help="train even if another training uses the same snapshot_prefix")


def parse_gpus(flag: str | None) -> list[int]:
    """-gpu: '' -> [], '0,1' -> [0, 1], 'all' -> every visible GPU."""
    import torch

    from .. import parallel

    return parallel.parse_gpu_ids(flag, torch.cuda.device_count())


def replica_gpus(args, sp, rank) -> list[int]:
    """The GPUs this run's replicas share: -gpu's; under a launcher without -gpu, every visible GPU
    when the solver asks for the GPU; none for --cpu-workers."""
    if args.cpu_workers:
        return []
    if args.gpu is not None or rank is None:
        return parse_gpus(args.gpu)
    import torch

    from ..solver.solver import default_device

    return list(range(torch.cuda.device_count())) if default_device(sp).type == "cuda" else []


def replicas_to_start(args, sp) -> int:
    """How many processes `netspec train` starts itself: --cpu-workers, or -gpu's GPUs divided into
    replicas of as many GPUs as the device map names."""
    if args.cpu_workers:
        if args.gpu is not None:
            raise NetspecError("give -gpu or --cpu-workers, not both")
        if args.cpu_workers < 1:
            raise NetspecError(f"--cpu-workers must be at least 1, found {args.cpu_workers}")
        return args.cpu_workers
    from .. import parallel

    gpus = parse_gpus(args.gpu)
    per = parallel.gpus_per_replica(args.device_map or sp.device_map or None)
    n = parallel.replica_count(len(gpus), per)
    if gpus and len(gpus) > n * per:
        log.warning("-gpu %s: replicas span %d GPUs each; GPU(s) %s stay idle", args.gpu, per,
                    ", ".join(str(g) for g in gpus[n * per:]))
    return n


def choose_placement(args, sp, rank) -> parallel.Placement | None:
    """caffe.cpp: -gpu wins; else the solver's solver_mode/device_id (None: let the solver decide)."""
    import torch

    from .. import parallel

    gpus = replica_gpus(args, sp, rank)
    spec = args.device_map or sp.device_map or None
    if not gpus:
        if args.gpu is None and rank is None and not args.cpu_workers:
            return None
        log.info("Use CPU.")
        return parallel.place(spec, [], rank or parallel.Rank())
    log.info("Using GPUs %s", ", ".join(str(g) for g in gpus))
    for g in gpus:
        log.info("GPU %d: %s", g, torch.cuda.get_device_name(g))
    placement = parallel.place(spec, gpus, rank or parallel.Rank())
    sp.device_id = placement.gpus[0]
    return placement


def _progress(solver, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    total = max(solver.param.max_iter - solver.iter, 0)
    return tqdm(total=total, initial=0, unit="it", dynamic_ncols=True, leave=False, file=sys.stderr)


def run(args) -> int:
    from .. import parallel
    from ..solver.log import glog_to_stderr

    rank = parallel.launched()
    root = rank is None or rank.rank == 0
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet or not root else logging.INFO
    # The loggers stay at INFO (or DEBUG) so that --tensorboard reads the progress even under --quiet;
    # stderr's handler filters.
    with glog_to_stderr(min(level, logging.INFO)) as to_stderr, _scalars(args.tensorboard if root else None):
        to_stderr.setLevel(level)
        return train(args)


def _scalars(logdir):
    if not logdir:
        return contextlib.nullcontext()
    from ..solver.tensorboard import tensorboard_scalars

    return tensorboard_scalars(logdir)


def replica_main(args) -> int:
    """One replica started by `netspec train` itself: `run` with the CLI's one-line errors."""
    return report_errors("netspec train", args.debug, run, args)


def train(args) -> int:
    from .. import parallel
    from ..frontend import load_solver

    solver_file = args.solver or args.solver_file
    if not solver_file:
        raise NetspecError("need a solver definition to train (netspec train SOLVER or -solver SOLVER)")
    if args.solver and args.solver_file and args.solver != args.solver_file:
        raise NetspecError(f"two solvers given: '{args.solver_file}' and -solver '{args.solver}'")
    if args.snapshot and args.weights:
        raise NetspecError("give -snapshot to resume training or -weights to fine-tune, not both")
    sp, path = load_solver(solver_file)
    sp.train_state.level = args.level
    sp.train_state.stage.extend(stages(args.stage))
    rank = parallel.launched()
    if rank is None and (n := replicas_to_start(args, sp)) > 1:
        log.info("Starting %d data-parallel replicas", n)
        return parallel.spawn(replica_main, n, args, cpu=bool(args.cpu_workers))
    placement = choose_placement(args, sp, rank)
    if args.snapshot:
        sp.ClearField("weights")
    elif args.weights:
        sp.ClearField("weights")
        sp.weights.append(args.weights)
    if rank is not None:
        parallel.init_process_group(placement, rank)
    try:
        return solve(args, sp, path, placement, rank)
    finally:
        parallel.finish()


def solve(args, sp, path, placement, rank) -> int:
    from .. import parallel
    from ..solver.solver import Solver

    where = {"device_map": args.device_map}
    if placement is not None:
        where = {"device": placement.device, "device_map": placement.device_map}
    solver = Solver(sp, path, rank=rank.rank if rank else 0, world_size=rank.world_size if rank else 1,
                    **where)
    solver.force_prefix = args.force
    log.info("Training on %s", solver.device)
    with SignalHandler(args.sigint_effect, args.sighup_effect) as signals:
        solver.action_fn = signals.action
        if args.snapshot:
            log.info("Resuming from %s", args.snapshot)
            solver.restore(args.snapshot)
        if rank is not None:
            parallel.attach(solver)
        solver.progress = _progress(solver, not args.no_progress and solver.root)
        log.info("Starting Optimization")
        try:
            solver.solve()
        finally:
            if solver.progress is not None:
                solver.progress.close()
    return 0
