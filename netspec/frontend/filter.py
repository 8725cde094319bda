"""Phase, level and stage filtering: Caffe's Net::FilterNet and Net::StateMeetsRule.

One train_val.prototxt yields the TRAIN net and the TEST net: a layer with include rules is kept
when the net's state meets ANY of them; a layer with exclude rules is dropped when it meets ANY.
"""
from __future__ import annotations

from ..errors import NetspecError
from ..proto import pb


def make_state(phase: int, level: int = 0, stages=()) -> pb.NetState:
    state = pb.NetState(phase=phase, level=level)
    state.stage.extend(stages)
    return state


def state_meets_rule(state: pb.NetState, rule: pb.NetStateRule) -> bool:
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    have = set(state.stage)
    return all(s in have for s in rule.stage) and not any(s in have for s in rule.not_stage)


def filter_net(net: pb.NetParameter, state: pb.NetState, lines: list[int] | None = None,
               source=None) -> pb.NetParameter:
    """A copy of `net` holding only the layers `state` selects; the copy's `state` is `state`."""
    out = pb.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    out.state.CopyFrom(state)
    for i, layer in enumerate(net.layer):
        if layer.include and layer.exclude:
            raise NetspecError("specify either include rules or exclude rules, not both", file=source,
                               line=lines[i] if lines else None, layer=layer.name)
        keep = not layer.include
        if any(state_meets_rule(state, r) for r in layer.exclude):
            keep = False
        if any(state_meets_rule(state, r) for r in layer.include):
            keep = True
        if keep:
            out.layer.add().CopyFrom(layer)
    return out
