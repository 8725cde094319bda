"""How many threads netspec computes with, chosen from the cores this process may actually use.

torch's default intra-op thread count is the machine's core count, which on a shared or containerised
machine is wrong twice over: the process may be pinned to fewer cores (taskset, cpusets) or limited by
a CPU quota (cgroup `cpu.max`, a container's `--cpus`), and other processes compete for the same
cores. Threads beyond the cores at hand do not add speed; they wait for each other at every
parallel region (OpenMP barriers spin), so one busy neighbour can make each step several times
slower. netspec therefore takes, in this order: `--threads N`, then OMP_NUM_THREADS (as every
OpenMP program does), then the usable cores (the affinity mask, capped by the cgroup quota) less
those the machine's load already keeps busy, at least one: a thread too few costs its share of the
speed, a thread too many on a busy machine can cost several times over. The
Data layer's decoding threads share the same budget (`data_workers`), so reading and computing do
not oversubscribe the cores between them.
"""
from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path

from .errors import NetspecError

log = logging.getLogger("netspec.threads")

_CGROUP = Path("/sys/fs/cgroup")


def cgroup_quota(root: Path = _CGROUP) -> float | None:
    """The CPU quota in cores (cgroup v2 `cpu.max`, else v1 `cpu.cfs_quota_us`/`cfs_period_us`),
    None when unlimited or unreadable."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def usable_cores(root: Path = _CGROUP) -> int:
    """Cores this process may run on: its affinity mask, capped by the cgroup quota (rounded up)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    quota = cgroup_quota(root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def idle_cores(cores: int, load: float | None = None, cpus: int | None = None) -> int:
    """Of `cores`, those the load does not already keep busy (rounded to nearest, at least 1). The
    1-minute load average counts the whole machine's runnable processes, so it is scaled to this
    process's share of the machine's CPUs."""
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            return cores
    busy = load * cores / max(cpus or os.cpu_count() or cores, cores)
    return max(1, min(cores, math.floor(cores - busy + 0.5)))


def choose(flag: int | None = None, env=None, root: Path = _CGROUP, load: float | None = None
           ) -> tuple[int, str]:
    """(threads, where the number came from)."""
    env = os.environ if env is None else env
    if flag is not None:
        if flag < 1:
            raise NetspecError(f"--threads must be at least 1, found {flag}")
        return flag, "--threads"
    omp = env.get("OMP_NUM_THREADS", "").strip()
    if omp:
        try:
            n = int(omp.split(",")[0])
        except ValueError:
            raise NetspecError(f"OMP_NUM_THREADS='{omp}': expected a positive integer") from None
        if n >= 1:
            return n, "OMP_NUM_THREADS"
    cores = usable_cores(root)
    n = idle_cores(cores, load)
    return n, f"{cores} usable core{'s' if cores > 1 else ''}" + (f", {cores - n} busy" if n < cores else "")


_chosen: int | None = None


def configure(flag: int | None = None) -> int:
    """Apply the choice: torch's intra-op threads now if torch is loaded, else through OMP_NUM_THREADS
    (which torch reads when it loads, and which child processes inherit). Logged once."""
    global _chosen
    n, why = choose(flag)
    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    if _chosen != n:
        log.info("Using %d compute thread%s (%s)", n, "" if n == 1 else "s", why)
    _chosen = n
    return n


def budget() -> int:
    """The compute threads chosen for this run (choosing now if no command chose yet); data-parallel
    CPU replicas split it between them."""
    return _chosen or choose()[0]


def data_workers(requested: int | None, prefetch: int) -> int:
    """Decoding threads for a Data layer: as asked, else the cores left over by the compute threads
    (at least one, at most `prefetch`), so reading and computing do not oversubscribe the cores."""
    if requested:
        return requested
    return max(1, min(prefetch, usable_cores() - budget()))
