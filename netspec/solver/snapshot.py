"""Snapshots: Caffe's file names, the .caffemodel + .solverstate pair, and restoring from it
(Solver::Snapshot, SnapshotFilename, CheckSnapshotWritePermissions and Restore in
src/caffe/solver.cpp; SGDSolver's SolverState read/write in src/caffe/solvers/sgd_solver.cpp, binary
or, with snapshot_format: HDF5, .caffemodel.h5 + .solverstate.h5 through netspec.formats.hdf5;
UpgradeSnapshotPrefixProperty in src/caffe/util/upgrade_proto.cpp).

Both files are written atomically (netspec.formats.atomic), the weights first, so a crash mid-snapshot
leaves the previous pair intact; and weights that are not finite are never written.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import torch

from ..errors import NetspecError
from ..formats.atomic import remove_stale_temps
from ..formats.caffemodel import load_weights, write_caffemodel
from ..formats.hdf5 import read_hdf5_solverstate, write_hdf5_solverstate, write_hdf5_weights
from ..formats.solverstate import (
    check_counters,
    check_history,
    history_arrays,
    make_solverstate,
    read_solverstate,
    write_solverstate,
)
from ..proto import pb

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the prefix is not locked
    fcntl = None

log = logging.getLogger(__name__)


def upgrade_snapshot_prefix(sp: pb.SolverParameter, solver_path) -> None:
    """No prefix: the solver file's path without extension; a folder: that folder / the file's stem.
    A prefix whose folder is missing from the current directory but exists next to the solver file
    is taken from there (netspec resolves the solver's net paths the same way)."""
    if solver_path is None:
        return
    solver_path = Path(solver_path)
    if not sp.HasField("snapshot_prefix"):
        sp.snapshot_prefix = str(solver_path.with_suffix(""))
        log.info("snapshot_prefix was not specified and is set to %s", sp.snapshot_prefix)
        return
    prefix = Path(sp.snapshot_prefix)
    if not prefix.is_absolute() and not prefix.parent.is_dir() and not prefix.is_dir():
        alt = solver_path.parent / prefix
        if alt.parent.is_dir():
            log.info("snapshot_prefix '%s': folder not found from %s; using %s", prefix, Path.cwd(), alt)
            prefix = alt
            sp.snapshot_prefix = str(alt)
    if prefix.is_dir():
        sp.snapshot_prefix = str(prefix / solver_path.stem)
        log.info("snapshot_prefix was a directory and is replaced to %s", sp.snapshot_prefix)


def check_snapshot_prefix(sp: pb.SolverParameter, source=None) -> None:
    """Caffe's CheckSnapshotWritePermissions: fail now, not after hours of training."""
    if not sp.snapshot and not sp.snapshot_after_train:
        return
    if not sp.HasField("snapshot_prefix"):
        if sp.snapshot:
            raise NetspecError("snapshot is set but snapshot_prefix is not", file=source)
        return
    folder = Path(sp.snapshot_prefix).parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise NetspecError(f"cannot write snapshots to snapshot_prefix '{sp.snapshot_prefix}': folder "
                           f"'{folder}' {'is not writable' if folder.is_dir() else 'does not exist'}",
                           file=source)


def snapshot_filename(sp: pb.SolverParameter, iter: int, extension: str) -> str:
    return f"{sp.snapshot_prefix}_iter_{iter}{extension}"


def _finite(tensors) -> bool:
    flags = [torch.isfinite(t.detach()).all() for t in tensors]
    return bool(torch.stack([f.cpu() for f in flags]).all()) if flags else True


def write_snapshot(sp: pb.SolverParameter, net, rule, iter: int, current_step: int,
                   extend_state=None) -> tuple[str, str]:
    """Write `<prefix>_iter_N.caffemodel` and `.solverstate`; return both paths. `extend_state(state)`
    fills netspec's SolverState extension fields (numbers >= 10000, which Caffe ignores)."""
    if not sp.HasField("snapshot_prefix"):
        raise NetspecError("cannot snapshot: the solver has no snapshot_prefix")
    params = net.params()
    if not _finite([t for ts in params.values() for t in ts]):
        raise NetspecError(f"iteration {iter}: the weights are not finite (nan or inf); snapshot refused")
    hdf5 = sp.snapshot_format == pb.SolverParameter.HDF5   # Solver::SnapshotToHDF5, SnapshotSolverStateToHDF5
    kind, suffix = ("HDF5", ".h5") if hdf5 else ("binary proto", "")
    model = snapshot_filename(sp, iter, ".caffemodel" + suffix)
    log.info("Snapshotting to %s file %s", kind, model)
    diffs = None
    if sp.snapshot_diff:
        diffs = {n: [t.grad if t.grad is not None else torch.zeros_like(t) for t in ts] for n, ts in params.items()}
    if hdf5:
        write_hdf5_weights(model, [lp.name for lp in net.layer_params], params, diffs=diffs)
    else:
        write_caffemodel(model, list(net.layer_params), params, diffs=diffs, name=net.name, phase=pb.TRAIN)
    state_path = snapshot_filename(sp, iter, ".solverstate" + suffix)
    log.info("Snapshotting solver state to %s file %s", kind, state_path)
    state = make_solverstate(iter, current_step, rule.history, model)
    if extend_state is not None:
        extend_state(state)
    (write_hdf5_solverstate if hdf5 else write_solverstate)(state_path, state)
    return model, state_path


def learned_net_path(state: pb.SolverState, state_path) -> Path:
    """The state's caffemodel, from the current directory as Caffe, else next to the .solverstate."""
    p = Path(state.learned_net)
    if p.exists() or p.is_absolute():
        return p
    for alt in (Path(state_path).parent / p, Path(state_path).parent / p.name):
        if alt.exists():
            log.info("learned_net '%s' not found from %s; using %s", p, Path.cwd(), alt)
            return alt
    raise NetspecError(f"learned_net '{state.learned_net}' not found (looked in {Path.cwd()} and "
                       f"{Path(state_path).parent})", file=state_path)


def read_snapshot(path, net, rule) -> pb.SolverState:
    """Restore weights (learned_net) and solver history from a .solverstate; return the state (its iter,
    current_step and netspec's extension fields are the caller's to apply)."""
    # Solver::Restore: a name ending in .h5 is an HDF5 state, anything else binary protobuf
    state = read_hdf5_solverstate(path) if str(path).endswith(".h5") else read_solverstate(path)
    check_counters(state, source=path)
    check_history(state, len(rule.history), source=path)
    if state.HasField("learned_net") and state.learned_net:
        weights = learned_net_path(state, path)
        report = load_weights(net.params(), weights)
        log.info("Restored weights: %s", report.summary())
    rule.history_from_arrays(history_arrays(state, source=path))
    log.info("%s: restoring history", rule.type)
    return state


# ---- one training per snapshot_prefix --------------------------------------------------------------
class PrefixLock:
    """An exclusive flock on `.<prefix name>.lock` beside the snapshots, held while a run trains.

    The kernel drops the lock when its process dies (kill -9 included), so a lock is never stale;
    the file only records the holder's pid for the message a second run gives.
    """

    def __init__(self, path: Path, fd: int):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)   # while still locked: a waiting run then locks a fresh file
        os.close(self.fd)
        self.fd = None


def _holder(path: Path) -> str:
    try:
        return path.read_text().split()[0]
    except (OSError, IndexError):
        return "unknown"


def _try_lock(path: Path) -> int | None:
    """The fd of `path` locked by us, or None if another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)   # the holder released and removed it between our open and lock: again


def lock_snapshot_prefix(sp: pb.SolverParameter, force: bool = False, source=None) -> PrefixLock | None:
    """Refuse to train when another process trains to the same snapshot_prefix (`force`: warn and go
    on); then remove the temporary files a killed run left beside the snapshots."""
    if fcntl is None or not sp.HasField("snapshot_prefix") or not (sp.snapshot or sp.snapshot_after_train):
        return None
    prefix = Path(sp.snapshot_prefix)
    path = prefix.with_name(f".{prefix.name}.lock")
    try:
        fd = _try_lock(path)
    except OSError as e:
        raise NetspecError(f"cannot lock snapshot_prefix '{prefix}': {e.strerror}", file=path) from None
    if fd is None:
        message = (f"snapshot_prefix '{prefix}' is in use by another training (pid {_holder(path)}); "
                   "wait for it, choose another snapshot_prefix, or pass --force")
        if not force:
            raise NetspecError(message, file=source)
        log.warning("%s; --force: training anyway, the snapshots may interleave", message.split(";")[0])
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    for p in remove_stale_temps(prefix.parent, f"{prefix.name}_iter_"):
        log.info("removed %s, a temporary file left by a killed run", p)
    return PrefixLock(path, fd)
