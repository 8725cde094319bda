"""Caffe's .solverstate: the solver's half of a snapshot (follows SGDSolver::SnapshotSolverStateToBinaryProto
and RestoreSolverStateFromBinaryProto in src/caffe/solvers/sgd_solver.cpp).

A SolverState holds `iter`, `learned_net` (the .caffemodel written with it, as the path Caffe was
given), `history` (one blob per learnable parameter, in Net::learnable_params order; AdaDelta and
Adam append their second set after the first) and `current_step` (the "step"/"multistep" LR policy's
position). Caffe always sets all four fields. Restoring checks only that the number of history blobs
matches; Caffe reshapes each blob to the stored shape.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import NetspecError
from ..proto import pb
from .atomic import atomic_write
from .blobs import array_to_blob, as_float32, blob_to_array
from .protofile import read_message

KIND = ".solverstate"


def read_solverstate(path) -> pb.SolverState:
    """The SolverState stored in the binary file `path`."""
    return read_message(path, pb.SolverState, KIND)


def history_arrays(state: pb.SolverState, source=None) -> list[np.ndarray]:
    """The history blobs as float32 arrays of their stored shapes."""
    return [blob_to_array(b, file=source, index=i) for i, b in enumerate(state.history)]


def make_solverstate(iter: int, current_step: int, history: Sequence, learned_net: str) -> pb.SolverState:
    """A SolverState as Caffe writes it; `history` holds tensors or arrays."""
    state = pb.SolverState()
    state.iter = iter
    state.learned_net = str(learned_net)
    state.history.extend(array_to_blob(as_float32(h)) for h in history)
    state.current_step = current_step
    return state


def write_solverstate(path, state: pb.SolverState) -> None:
    """Write `state` (see make_solverstate) to `path` atomically."""
    atomic_write(path, state.SerializeToString())


def check_history(state: pb.SolverState, expected: int, source=None) -> None:
    """Caffe's restore check: the snapshot must hold one history blob per solver history slot."""
    if len(state.history) != expected:
        raise NetspecError(f"holds {len(state.history)} history blobs but this solver and net need "
                           f"{expected} (was it written for another net or solver type?)", file=source)


def check_counters(state: pb.SolverState, source=None) -> None:
    """iter and current_step count up from 0; a negative one is a damaged or hand-edited file."""
    for name in ("iter", "current_step"):
        value = getattr(state, name)
        if value < 0:
            raise NetspecError(f"{name} is {value}; a solver state's {name} cannot be negative", file=source)
