"""Structural checks of a filtered net before anything is built (Caffe's Net::Init and InsertSplits).

Each problem is one line naming the file, line, layer and blob: a bottom nothing produced, a bottom
produced only by a later layer (a cycle, or layers out of order), a top produced twice other than in
place, and an in-place layer on a blob another layer already read (Caffe inserts a Split there and
then fails with "produced by multiple sources").
"""
from __future__ import annotations

from ..errors import NetspecError
from ..proto import pb


def _producers(net: pb.NetParameter) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, layer in enumerate(net.layer):
        for t in layer.top:
            out.setdefault(t, []).append(i)
    return out


def _reaches(net: pb.NetParameter, start: int, target: int) -> bool:
    """Does data flow from layer `start`'s tops to layer `target` (in file order)?"""
    tainted = set(net.layer[start].top)
    for layer in net.layer[start + 1:target + 1]:
        if tainted.intersection(layer.bottom):
            tainted.update(layer.top)
    return bool(tainted.intersection(net.layer[target].bottom))


def validate_net(net: pb.NetParameter, source=None, lines: list | None = None) -> None:
    """Raise NetspecError for the first structural problem in `net` (already phase-filtered)."""
    def fail(i, msg):
        raise NetspecError(msg, file=source, line=lines[i] if lines else None, layer=net.layer[i].name)

    available: dict[str, int] = {name: -1 for name in net.input}   # blob -> producing layer index
    readers: dict[str, int] = {}                                     # readers of the current version
    producers = _producers(net)
    names: dict[str, int] = {}
    for i, layer in enumerate(net.layer):
        if not layer.name:
            fail(i, f"layer #{i} ({layer.type}) has no name")
        if not layer.type:
            fail(i, "layer has no type")
        if layer.name in names:
            fail(i, f"layer name '{layer.name}' is used twice (also layer #{names[layer.name]})")
        names[layer.name] = i
        if layer.propagate_down and len(layer.propagate_down) != len(layer.bottom):
            fail(i, f"propagate_down has {len(layer.propagate_down)} entries, expected one per bottom "
                    f"({len(layer.bottom)})")
        for j, b in enumerate(layer.bottom):
            if b in available:
                continue
            later = [k for k in producers.get(b, []) if k > i]
            if not later:
                fail(i, f"bottom '{b}' is not produced by any layer or input")
            k = later[0]
            kind = "a cycle" if _reaches(net, i, k) else "layers out of order: Caffe runs layers in file order"
            fail(i, f"bottom '{b}' is produced only by the later layer '{net.layer[k].name}' ({kind})")
        for j, t in enumerate(layer.top):
            in_place = j < len(layer.bottom) and layer.bottom[j] == t
            if in_place:
                others = readers.get(t, 0)
                if others > 0:
                    fail(i, f"in-place top '{t}' rewrites a blob that {others} other layer(s) already read; "
                            f"give the top its own name")
            elif t in available:
                by = available[t]
                src = "the net's inputs" if by < 0 else f"layer '{net.layer[by].name}'"
                fail(i, f"top '{t}' is already produced by {src} (only an in-place layer, with top == bottom "
                        f"at the same index, may reuse a blob name)")
        for b in layer.bottom:
            readers[b] = readers.get(b, 0) + 1
        for t in layer.top:   # a new version of each top, read by nobody yet
            available[t] = i
            readers[t] = 0
