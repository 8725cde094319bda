"""Solver files: reading, the deprecated solver_type, path resolution, and which nets they name
(Caffe's ReadSolverParamsFromTextFileOrDie, Solver::InitTrainNet and Solver::InitTestNets).

Paths inside a solver (`net`, `train_net`, `test_net`) resolve as in Caffe, from the current
directory. Where that path does not exist, netspec also tries it relative to the solver file's own
folder, and logs which one it used; so `netspec train models/alexnet/solver.prototxt` works from the
repository root and from inside models/alexnet alike.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import NetspecError
from ..proto import pb
from .parse import read_text_file

log = logging.getLogger("netspec")

_SOLVER_TYPES = {pb.SolverParameter.SGD: "SGD", pb.SolverParameter.NESTEROV: "Nesterov",
                 pb.SolverParameter.ADAGRAD: "AdaGrad", pb.SolverParameter.RMSPROP: "RMSProp",
                 pb.SolverParameter.ADADELTA: "AdaDelta", pb.SolverParameter.ADAM: "Adam"}


def resolve_path(path: str, relative_to: Path | None, what: str, source=None) -> Path:
    """`path` from the current directory as Caffe, else from `relative_to` (saying so)."""
    p = Path(path)
    if p.exists() or p.is_absolute() or relative_to is None:
        return p
    alt = relative_to / p
    if alt.exists():
        log.info("%s: %s '%s' not found from %s; using %s", source, what, path, Path.cwd(), alt)
        return alt
    raise NetspecError(f"{what} '{path}' not found (looked in {Path.cwd()} and {relative_to})", file=source)


def upgrade_solver_type(sp: pb.SolverParameter) -> bool:
    """Caffe's UpgradeSolverType: the deprecated solver_type enum becomes the `type` string (a `type`
    already given wins); True when there was a solver_type to fold."""
    had = sp.HasField("solver_type")
    if had and not sp.HasField("type"):
        sp.type = _SOLVER_TYPES[sp.solver_type]
    sp.ClearField("solver_type")
    return had


def load_solver(path: str | os.PathLike) -> tuple[pb.SolverParameter, Path]:
    """Read a solver prototxt; net paths resolved, solver_type folded into type."""
    path = Path(path)
    sp = read_text_file(path, pb.SolverParameter())
    upgrade_solver_type(sp)
    here = path.parent
    if sp.HasField("net"):
        sp.net = str(resolve_path(sp.net, here, "net", path))
    if sp.HasField("train_net"):
        sp.train_net = str(resolve_path(sp.train_net, here, "train_net", path))
    for i, t in enumerate(sp.test_net):
        sp.test_net[i] = str(resolve_path(t, here, "test_net", path))
    return sp, path


@dataclass
class NetSource:
    """One net a solver names: its unfiltered message, where it came from, and its state."""
    param: pb.NetParameter
    source: str | None
    state: pb.NetState = field(default_factory=pb.NetState)


def _read_net(path: str) -> pb.NetParameter:
    return read_text_file(path, pb.NetParameter())


def _state(phase: int, net: pb.NetParameter, extra: pb.NetState | None) -> pb.NetState:
    state = pb.NetState(phase=phase)
    state.MergeFrom(net.state)
    if extra is not None:
        state.MergeFrom(extra)
    return state


def train_net_source(sp: pb.SolverParameter, solver_path=None) -> NetSource:
    fields = [f for f in ("train_net_param", "train_net", "net_param", "net") if sp.HasField(f)]
    if len(fields) != 1:
        raise NetspecError("a solver must name exactly one train net with one of train_net_param, "
                           f"train_net, net_param, net; found {len(fields)} ({', '.join(fields) or 'none'})",
                           file=solver_path)
    f = fields[0]
    if f.endswith("_param"):
        net, source = getattr(sp, f), solver_path
    else:
        net, source = _read_net(getattr(sp, f)), getattr(sp, f)
    extra = sp.train_state if sp.HasField("train_state") else None
    return NetSource(net, str(source) if source else None, _state(pb.TRAIN, net, extra))


def test_net_sources(sp: pb.SolverParameter, solver_path=None) -> list[NetSource]:
    specific = [(n, str(solver_path) if solver_path else None) for n in sp.test_net_param]
    specific += [(_read_net(p), p) for p in sp.test_net]
    has_generic = sp.HasField("net") or sp.HasField("net_param")
    n_iter = len(sp.test_iter)
    if (n_iter < len(specific)) if has_generic else (n_iter != len(specific)):
        raise NetspecError(f"test_iter must be given once per test net: {len(specific)} test net(s) "
                           f"named{' plus the generic net' if has_generic else ''}, {n_iter} test_iter",
                           file=solver_path)
    if has_generic:
        _warn_repeated_test_iter(sp, n_iter - len(specific), solver_path)
        generic = (sp.net_param, str(solver_path)) if sp.HasField("net_param") else (_read_net(sp.net), sp.net)
        specific += [generic] * (n_iter - len(specific))
    if sp.test_state and len(sp.test_state) != len(specific):
        raise NetspecError(f"test_state must be given once per test net ({len(specific)}), "
                           f"found {len(sp.test_state)}", file=solver_path)
    return [NetSource(net, src, _state(pb.TEST, net, sp.test_state[i] if sp.test_state else None))
            for i, (net, src) in enumerate(specific)]


def _warn_repeated_test_iter(sp: pb.SolverParameter, copies: int, solver_path) -> None:
    """Caffe's InitTestNets makes one instance of the generic net per extra test_iter, so a test_iter
    written twice tests the same net twice; without a test_state to tell them apart that is a slip."""
    if copies > 1 and not sp.test_state:
        where = f"{solver_path}: " if solver_path else ""
        log.warning("%stest_iter is given %d times for the one generic net: it will be tested %d times "
                    "per test_interval (as Caffe does); give test_state per instance or one test_iter",
                    where, copies, copies)
