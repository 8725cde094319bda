"""Data-parallel training on torch.distributed, with model-parallel replicas (Caffe's multi-GPU
`caffe train -gpu 0,1,...`: tools/caffe.cpp train() and the NCCL class of src/caffe/parallel.cpp).

As in Caffe, each process (a replica, Caffe's solver of one rank) runs the solver's whole batch on
its own share of the data (the Data layer's rank r reads records r, r+W, ...), so the effective
batch is batch_size x W. When an iteration's backward passes are done, every learnable blob's diff
is summed over the replicas and scaled by 1/W (NCCL::on_gradients_ready: ncclAllReduce with
ncclSum, then caffe_gpu_scal by 1/solver_count), and each replica applies the same update, so
weights and solver history stay equal everywhere. With losses normalised per batch (SoftmaxWithLoss
divides by the batch), W replicas of batch B therefore train as one process of batch W*B.
Rank 0's weights are broadcast once before training (NCCL::Broadcast, after Restore); rank 0 alone
logs, tests and snapshots (Caffe's root solver); signal requests are rank 0's, broadcast so that
every rank snapshots and stops at the same iteration.

The reduction is a torch.distributed.all_reduce in the solver's on_gradients_ready callback rather
than DistributedDataParallel: it happens once per iteration after iter_size accumulations as in
Caffe, layers off the loss path and lr_mult 0 blobs need no special case, and a replica spanning
two GPUs reduces each device's diffs on that device.

Placement: a device map naming D GPUs (AlexNet's gpu0=cuda:0,gpu1=cuda:1: D = 2) makes every
replica span D GPUs; with -gpu 0,1,2,3 there are two replicas and rank r binds gpu0 to cuda:2r and
gpu1 to cuda:2r+1. When a node has fewer GPUs than its replicas need, each rank binds every logical
device to its one GPU.

Launching: `netspec train S -gpu 0,1` (or --cpu-workers N) starts the replicas itself with torchrun's
environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR=127.0.0.1, a free MASTER_PORT); under
`torchrun ... -m netspec train S` that environment is already there, on one machine or many.
"""
from __future__ import annotations

import collections
import datetime
import logging
import os
import signal
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import NetspecError
from .graph import DeviceMap
from .graph.devices import check_device

log = logging.getLogger(__name__)

REQUESTS = ("none", "snapshot", "stop")
BUCKET_BYTES = 32 << 20      # diffs are reduced in flat buckets of at most this size per device
DIST_TIMEOUT_S = 600         # a collective waiting longer than this fails the run (NETSPEC_DIST_TIMEOUT)
AGREE_LAG = 2                # on CUDA, iterations between rank 0's request and every rank acting on it


# ---- where this process stands -------------------------------------------------------------------
@dataclass(frozen=True)
class Rank:
    """torchrun's view of a process: its global rank, the world, its rank and count on this node."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1


def launched(env=None) -> Rank | None:
    """The Rank a launcher (torchrun, or netspec's own spawn) gave this process; None without one."""
    env = os.environ if env is None else env
    if "RANK" not in env or "WORLD_SIZE" not in env:
        return None
    try:
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        local = int(env.get("LOCAL_RANK", rank))
        local_world = int(env.get("LOCAL_WORLD_SIZE", world))
    except ValueError:
        raise NetspecError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers, found RANK={env['RANK']!r} "
                           f"WORLD_SIZE={env['WORLD_SIZE']!r} LOCAL_RANK={env.get('LOCAL_RANK')!r}") from None
    if not 0 <= rank < world or not 0 <= local < local_world:
        raise NetspecError(f"RANK {rank} of WORLD_SIZE {world} (LOCAL_RANK {local} of {local_world}) "
                           "is out of range")
    return Rank(rank, world, local, local_world)


# ---- -gpu and the replicas' devices (pure functions) -----------------------------------------------
def parse_gpu_ids(flag: str | None, count: int) -> list[int]:
    """caffe.cpp's get_gpus: '' -> [], '0,1' -> [0, 1], 'all' -> every one of `count` GPUs."""
    if not flag:
        return []
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
    if len(set(ids)) != len(ids):
        raise NetspecError(f"-gpu {flag}: each GPU may be named once")
    return ids


def map_gpus(spec: str | None) -> list[int]:
    """The distinct CUDA device indices a device map names, ascending (`cuda` counts as cuda:0)."""
    dm = DeviceMap(spec or None)
    devices = [*dm.bindings.values(), *([dm.catch_all] if dm.catch_all is not None else [])]
    return sorted({d.index or 0 for d in devices if d.type == "cuda"})


def gpus_per_replica(spec: str | None) -> int:
    return max(len(map_gpus(spec)), 1)


def replica_count(n_gpus: int, per_replica: int) -> int:
    """How many replicas -gpu's GPUs hold (one when there are fewer GPUs than a replica spans)."""
    return max(n_gpus // max(per_replica, 1), 1)


def replica_gpus(gpus: list[int], per_replica: int, local_rank: int, local_world: int) -> list[int]:
    """This node's GPUs for replica `local_rank`: a block of `per_replica` when every replica's block
    fits, else its one GPU (all its logical devices then share it)."""
    if local_world > len(gpus):
        raise NetspecError(f"{local_world} processes on this node but {len(gpus)} GPU(s) for them "
                           f"({', '.join(map(str, gpus))}): one GPU per process at least")
    per = max(per_replica, 1)
    if local_world * per <= len(gpus):
        return gpus[local_rank * per:(local_rank + 1) * per]
    return [gpus[local_rank]]


def replica_device_map(spec: str | None, block: list[int]) -> str | None:
    """`spec` with its k-th GPU (ascending index) replaced by block[k], or by block[0] for a one-GPU
    block: gpu0=cuda:0,gpu1=cuda:1 with block [2, 3] -> gpu0=cuda:2,gpu1=cuda:3."""
    order = map_gpus(spec)
    if not order:
        return spec
    slot = {g: block[k] if len(block) > 1 else block[0] for k, g in enumerate(order)}

    def moved(d: torch.device) -> str:
        return f"cuda:{slot[d.index or 0]}" if d.type == "cuda" else str(d)

    dm = DeviceMap(spec)
    parts = [f"{name}={moved(d)}" for name, d in dm.bindings.items()]
    if dm.catch_all is not None:
        parts.append(moved(dm.catch_all))
    return ",".join(parts)


@dataclass(frozen=True)
class Placement:
    """One replica's devices: its default device, its device map, the backend to reduce with."""
    device: torch.device
    device_map: str | None
    backend: str
    gpus: tuple[int, ...] = ()


def place(spec: str | None, gpus: list[int], rank: Rank) -> Placement:
    """Where replica `rank` runs: on the CPU (gloo) without GPUs, else on its block of `gpus` (NCCL)."""
    if not gpus:
        return Placement(torch.device("cpu"), spec, "gloo")
    per = gpus_per_replica(spec)
    block = replica_gpus(gpus, per, rank.local_rank, rank.local_world_size)
    mapped = replica_device_map(spec, block)
    if len(block) < per:
        log.warning("device map '%s' spans %d GPUs but this replica has only GPU %d: every logical "
                    "device is bound to cuda:%d", spec, per, block[0], block[0])
    return Placement(torch.device("cuda", block[0]), mapped, "nccl", tuple(block))


# ---- the process group ---------------------------------------------------------------------------
def timeout() -> datetime.timedelta:
    """How long a collective may wait for the other ranks before the run fails (a rank that died or
    hangs otherwise stalls the others silently): NETSPEC_DIST_TIMEOUT seconds, default 10 minutes."""
    text = os.environ.get("NETSPEC_DIST_TIMEOUT", str(DIST_TIMEOUT_S))
    try:
        seconds = float(text)
    except ValueError:
        raise NetspecError(f"NETSPEC_DIST_TIMEOUT: expected seconds, found {text!r}") from None
    if seconds <= 0:
        raise NetspecError(f"NETSPEC_DIST_TIMEOUT: expected a positive number of seconds, found {text}")
    return datetime.timedelta(seconds=seconds)


def init_process_group(placement: Placement, rank: Rank) -> None:
    """Join the launcher's process group (MASTER_ADDR/MASTER_PORT from the environment), with a
    timeout on every collective; a GPU this machine lacks is a one-line error."""
    kwargs = {}
    if placement.backend == "nccl":
        for g in placement.gpus or (placement.device.index or 0,):
            check_device(torch.device("cuda", g), f"replica {rank.rank}'s GPU")
        torch.cuda.set_device(placement.device)
        kwargs["device_id"] = placement.device      # NCCL's communicator is made at once, on this GPU
    dist.init_process_group(placement.backend, init_method="env://", rank=rank.rank,
                            world_size=rank.world_size, timeout=timeout(), **kwargs)


def finish() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child(local_rank: int, entry, world: int, port: int, threads: int, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(local_rank), LOCAL_WORLD_SIZE=str(world))
    if threads and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(threads)   # the replicas share the cores, as torchrun's default
    code = entry(*args)
    if code:
        raise SystemExit(code)


def spawn(entry, nprocs: int, *args, cpu: bool = False) -> int:
    """Run entry(*args) in `nprocs` fresh processes that see torchrun's environment on this machine;
    0 when all succeed. Signals are the replicas' own to handle (rank 0 decides), so this process
    ignores SIGINT/SIGHUP while it waits; a failing replica stops the others."""
    import torch.multiprocessing as mp

    from .threads import budget

    threads = max(budget() // nprocs, 1) if cpu else 0   # the run's thread budget, shared
    ctx = mp.start_processes(_child, args=(entry, nprocs, free_port(), threads, args), nprocs=nprocs,
                             join=False, start_method="spawn")
    caught = [s for s in (signal.SIGINT, getattr(signal, "SIGHUP", None)) if s is not None]
    old = {s: signal.signal(s, signal.SIG_IGN) for s in caught}
    try:
        while not ctx.join():
            pass
    except mp.ProcessExitedException as e:
        if e.exit_code == 130:
            raise KeyboardInterrupt from None
        raise NetspecError(f"replica {e.error_index} stopped with exit code {e.exit_code} "
                           "(its message is above); the other replicas were stopped") from None
    except mp.ProcessRaisedException as e:
        raise NetspecError(f"replica {e.error_index} failed: {str(e).strip().splitlines()[-1]}") from None
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return 0


# ---- the solver's side: Caffe's NCCL callback ------------------------------------------------------
def buckets(tensors, cap: int = BUCKET_BYTES) -> list[list[torch.Tensor]]:
    """Tensors grouped by device and dtype in first-seen order, each group cut into buckets of at
    most `cap` bytes (a single larger tensor is a bucket of its own). The order depends only on the
    net, so every rank issues the same collectives in the same order."""
    groups: dict = {}
    for t in tensors:
        chain = groups.setdefault((t.device, t.dtype), [[]])
        size = t.numel() * t.element_size()
        if chain[-1] and sum(x.numel() * x.element_size() for x in chain[-1]) + size > cap:
            chain.append([])
        chain[-1].append(t)
    return [b for chain in groups.values() for b in chain]


def _collective(tensors, start, scale: float = 1.0) -> None:
    """Start `start(flat) -> work` on every bucket flattened (all in flight at once), then wait for
    each, scale it and copy it back."""
    pending = []
    for bucket in buckets(tensors):
        flat = torch.cat([t.reshape(-1) for t in bucket])
        pending.append((start(flat), flat, bucket))
    for work, flat, bucket in pending:
        work.wait()
        if scale != 1.0:
            flat.mul_(scale)
        offset = 0
        for t in bucket:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def broadcast_weights(net) -> None:
    """Every learnable blob takes rank 0's values (NCCL::Broadcast)."""
    with torch.no_grad():
        _collective([p.tensor.data for p in net.learnable_params()],
                    lambda flat: dist.broadcast(flat, src=0, async_op=True))


class AllReduceGradients:
    """A solver callback: after an iteration's backward passes every learnable diff becomes its mean
    over the replicas, summed then scaled by 1/W as NCCL::on_gradients_ready does."""

    def __init__(self, net):
        self.params = [p.tensor for p in net.learnable_params() if p.tensor.requires_grad]
        self.scale = 1.0 / dist.get_world_size()

    def on_start(self) -> None:
        pass

    def on_gradients_ready(self) -> None:
        for p in self.params:
            if p.grad is None:           # a blob this replica's passes did not reach: Caffe's zero diff
                p.grad = torch.zeros_like(p)
        _collective([p.grad for p in self.params],
                    lambda flat: dist.all_reduce(flat, op=dist.ReduceOp.SUM, async_op=True), self.scale)


def agree(request: str, device: torch.device) -> str:
    """Rank 0's request ('none', 'snapshot', 'stop'), on every rank, at once."""
    code = torch.tensor([REQUESTS.index(request) if request in REQUESTS else 0], device=device)
    dist.broadcast(code, src=0)
    return REQUESTS[int(code.item())]


class Agreement:
    """Rank 0's requests on every rank, without making the host wait for the GPU every iteration.

    On the CPU (gloo) the broadcast is read at once. On CUDA each iteration's broadcast is queued
    behind the iteration's work, followed by a copy into pinned host memory and an event; every
    rank acts on the request broadcast `lag` iterations earlier, waiting (if at all) for that old
    event only, so the GPU keeps the later iterations queued and all ranks act at the same
    iteration. A request made in the last `lag` iterations of a run is dropped with the run."""

    def __init__(self, device, lag: int = AGREE_LAG, broadcast=None):
        self.device = torch.device(device)
        self.lag = lag if self.device.type == "cuda" else 0
        self.broadcast = broadcast or (lambda t: dist.broadcast(t, src=0))
        self.pending: collections.deque = collections.deque()

    def __call__(self, request: str, now: bool = False) -> str:
        code = REQUESTS.index(request) if request in REQUESTS else 0
        if now or self.lag == 0:
            t = torch.tensor([code], device=self.device)
            self.broadcast(t)
            return REQUESTS[int(t.item())]
        t = torch.full((1,), code, dtype=torch.int64, device=self.device)   # a fill kernel, no copy
        self.broadcast(t)
        host = torch.empty(1, dtype=torch.int64, pin_memory=True)
        host.copy_(t, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        self.pending.append((host, done))
        if len(self.pending) <= self.lag:
            return "none"
        host, done = self.pending.popleft()
        done.synchronize()
        return REQUESTS[int(host[0])]


def share_floats(values, device: torch.device) -> list[float]:
    """Rank 0's values, on every rank (the plateau rule's decision after a test pass)."""
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return t.tolist()


def attach(solver) -> AllReduceGradients:
    """Make `solver` one replica of the process group's data-parallel run; call it after restoring."""
    broadcast_weights(solver.net)
    sync = AllReduceGradients(solver.net)
    solver.callbacks.append(sync)
    solver.agree = Agreement(solver.device)
    solver.share_floats = lambda values: share_floats(values, solver.device)
    world = dist.get_world_size()
    batch = next(iter(solver.net.blob_shapes.values()), (0,))[0] if solver.net.blob_shapes else 0
    log.info("Data-parallel training over %d replicas (%s): each runs the train net's batch of %d, "
             "an effective batch of %d", world, dist.get_backend(), batch, world * batch)
    return sync
