"""pycaffe's process-wide functions beside Net and the solvers (python/caffe/_caffe.cpp's module
functions and its Timer and NCCL classes): init_log/log, the solver count and rank, set_multiprocess,
has_nccl, NCCL and Timer.

netspec trains on several GPUs through torch.distributed (`netspec train -gpu 0,1`, netspec.parallel),
not through pycaffe's NCCL object, so the API here is that of a pycaffe built without NCCL:
has_nccl() is False and NCCL(solver, uid) is accepted and does nothing (it has no new_uid or bcast).
"""
from __future__ import annotations

import logging
import sys
import time

import torch

log_ = logging.getLogger("netspec")

_STATE = {"solver_count": None, "solver_rank": None, "multiprocess": False}
# glog's severities (FLAGS_minloglevel): 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL.
_GLOG_LEVELS = (logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)


def init_log(level: int = 0, use_stderr: bool = True) -> None:
    """Caffe's InitLog / InitLogLevel / InitLogLevelPipe: glog-style lines at `level` and above on
    stderr (glog's log files are not written: netspec always logs to stderr)."""
    from ..solver.log import GlogFormatter

    logger = logging.getLogger("netspec")
    if not any(getattr(h, "_netspec_init_log", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(GlogFormatter())
        handler._netspec_init_log = True
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(_GLOG_LEVELS[min(max(int(level), 0), 3)])


def log(message: str) -> None:
    """Caffe's Log: one INFO line."""
    log_.info("%s", message)


def _distributed(attr: str, default: int) -> int:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return getattr(dist, attr)()
    return default


def solver_count() -> int:
    """How many solvers train together (set_solver_count's value, else torch.distributed's world)."""
    n = _STATE["solver_count"]
    return n if n is not None else _distributed("get_world_size", 1)


def set_solver_count(count: int) -> None:
    _STATE["solver_count"] = int(count)


def solver_rank() -> int:
    """This solver's rank (set_solver_rank's value, else torch.distributed's rank)."""
    r = _STATE["solver_rank"]
    return r if r is not None else _distributed("get_rank", 0)


def set_solver_rank(rank: int) -> None:
    _STATE["solver_rank"] = int(rank)


def set_multiprocess(value: bool) -> None:
    _STATE["multiprocess"] = bool(value)


def multiprocess() -> bool:
    return _STATE["multiprocess"]


def has_nccl() -> bool:
    """False: as pycaffe built without USE_NCCL (netspec's multi-GPU training is torch.distributed)."""
    return False


class NCCL:
    """pycaffe's NCCL(solver, uid) without NCCL support: constructing it does nothing."""

    def __init__(self, solver, uid):
        self.solver, self.uid = solver, uid


class Timer:
    """Caffe's Timer: start(), stop(), and `ms`, the milliseconds between them (reading `ms` stops a
    running timer, as Timer::MilliSeconds does; 0 before the first start). CUDA work is waited for
    in GPU mode so that the time covers it, as Caffe's CUDA-event timer does."""

    def __init__(self):
        self._start = self._stop = None

    @staticmethod
    def _now() -> float:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()
        return time.perf_counter()

    def start(self) -> None:
        self._start, self._stop = self._now(), None

    def stop(self) -> None:
        if self._start is not None and self._stop is None:
            self._stop = self._now()

    @property
    def ms(self) -> float:
        if self._start is None:
            log_.warning("Timer has never been run before reading time.")
            return 0.0
        self.stop()
        return (self._stop - self._start) * 1000.0
