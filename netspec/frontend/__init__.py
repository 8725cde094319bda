"""The front end: prototxt text -> a clean NetParameter for one phase.

`load_net` parses with protobuf's text_format, upgrades legacy (V1, `input:`) nets, keeps the layers
the NetState selects (phase, level, stages) and validates the structure, so that everything after it
sees one well-formed net. `load_solver` does the same for solver files.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..proto import pb
from .filter import filter_net, make_state, state_meets_rule
from .parse import layer_lines, parse_text, read_text_file, write_text_file
from .solver import NetSource, load_solver, resolve_path, test_net_sources, train_net_source
from .validate import validate_net

__all__ = ["load_net", "load_solver", "parse_net_text", "prepare_net", "layer_positions", "filter_net",
           "make_state", "state_meets_rule", "validate_net", "read_text_file", "write_text_file",
           "parse_text", "LazyLines", "NetSource", "train_net_source", "test_net_sources", "resolve_path"]


def _looks_like_text(s: str) -> bool:
    return "{" in s or "\n" in s or ":" in s and not os.path.exists(s)


def parse_net_text(text: str, source=None) -> pb.NetParameter:
    return parse_text(text, pb.NetParameter(), source)


def read_net(net) -> tuple[pb.NetParameter, str | None]:
    """A NetParameter from a path, prototxt text, or a message; plus its source file if any."""
    if isinstance(net, pb.NetParameter):
        return net, None
    if isinstance(net, (str, os.PathLike)) and not (isinstance(net, str) and _looks_like_text(net)):
        return read_text_file(net, pb.NetParameter()), str(net)
    return parse_net_text(str(net)), None


def upgrade_if_needed(net: pb.NetParameter, source=None) -> pb.NetParameter:
    from .upgrade import needs_upgrade, upgrade_net

    return upgrade_net(net, source) if needs_upgrade(net) else net


def layer_positions(net: pb.NetParameter, source) -> list[int | None]:
    """Line of each layer of `net` (possibly filtered or upgraded) in the prototxt `source`.

    A layer is matched to the first later layer of the file that is equal to it (after the same
    upgrade), so TRAIN and TEST layers sharing a name find their own lines.
    """
    if not source or not Path(str(source)).is_file():
        return [None] * len(net.layer)
    text = Path(str(source)).read_text(errors="replace")
    original = read_net(source)[0]
    lines = layer_lines(text, "layers" if original.layers else "layer")
    upgraded = upgrade_if_needed(original, source)
    offset = len(upgraded.layer) - len(lines)       # an Input layer made from legacy `input:` has no line
    out, k = [], 0
    for layer in net.layer:
        found = next((j for j in range(k, len(upgraded.layer)) if upgraded.layer[j] == layer), None)
        if found is None:
            found = next((j for j in range(k, len(upgraded.layer)) if upgraded.layer[j].name == layer.name), None)
        if found is None or not 0 <= found - offset < len(lines):
            out.append(None)
            continue
        out.append(lines[found - offset])
        k = found + 1
    return out


class LazyLines:
    """`layer_positions(net, source)`, worked out on the first lookup: the lines are needed only to
    report an error, and finding them re-reads and re-parses the prototxt."""

    def __init__(self, net: pb.NetParameter, source):
        self.net, self.source, self._lines = net, source, None

    def __getitem__(self, i: int) -> int | None:
        if self._lines is None:
            self._lines = layer_positions(self.net, self.source)
        return self._lines[i]


def prepare_net(net: pb.NetParameter, state: pb.NetState, source=None) -> pb.NetParameter:
    """Upgrade, filter by `state` and validate an already-read net."""
    net = upgrade_if_needed(net, source)
    net = filter_net(net, state, LazyLines(net, source), source)
    validate_net(net, source, LazyLines(net, source))
    return net


def load_net(net, phase: int = pb.TEST, level: int | None = None, stages=(), source=None) -> pb.NetParameter:
    """The net for one phase: `net` is a path, prototxt text or NetParameter."""
    param, src = read_net(net)
    source = source or src
    state = pb.NetState()
    state.CopyFrom(param.state)
    state.phase = phase
    if level is not None:
        state.level = level
    state.stage.extend(s for s in stages if s not in state.stage)
    return prepare_net(param, state, source)
