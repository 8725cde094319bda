"""`netspec shapes NET.prototxt`: every layer's device, top shapes and parameter count, and the total.

The net is compiled for one phase with every logical device bound to the CPU; no weights are needed
(fillers run, nothing is trained). A data layer whose LMDB or mean file cannot be opened is replaced
by an Input layer whose shape comes from `--input-shape`, else from batch_size and crop_size (3
channels, 1 with force_gray), and the table says so. Caffe prints the same shapes in its log while
Net::Init sets up each layer ("Top shape: 128 96 55 55 (37171200)").
"""
from __future__ import annotations

import sys

from ..errors import NetspecError
from ..graph.inspect import compile_for_inspection
from .args import add_input_shapes, add_net_state

HELP = "print each layer's device, top blob shapes and parameter count, and the total"
EXAMPLES = ("  netspec shapes models/alexnet/deploy.prototxt\n"
            "  netspec shapes models/caffenet/train_val.prototxt -phase TRAIN "
            "--input-shape data=2,3,227,227\n")


def add_arguments(p) -> None:
    p.add_argument("net", help="net prototxt")
    add_net_state(p, "TEST", None)
    add_input_shapes(p)


def parse_input_shapes(items: list[str]) -> dict[str, tuple[int, ...]]:
    """`data=2,3,227,227` -> {'data': (2, 3, 227, 227)}."""
    out = {}
    for item in items:
        name, _, dims = item.partition("=")
        try:
            shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
        except ValueError:
            shape = ()
        if not name or not shape or min(shape) <= 0:
            raise NetspecError(f"--input-shape '{item}': expected BLOB=N,C,H,W with positive integers")
        out[name.strip()] = shape
    return out


def stages(items: list[str]) -> list[str]:
    return [s.strip() for item in items for s in item.split(",") if s.strip()]


def _times() -> str:
    enc = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "×".encode(enc)
        return "×"
    except (UnicodeEncodeError, LookupError):
        return "x"


def fmt_shape(shape) -> str:
    return _times().join(str(d) for d in shape) if len(shape) else "scalar"


def layer_param_counts(net) -> list[int]:
    """Parameter count per layer (in net.steps order); a shared blob counts once, at the layer that owns it."""
    owner = {id(info.tensor): info.layer for info in net.learnable_params()}
    return [sum(t.numel() for t in step.layer.blobs if owner.get(id(t)) == step.layer.name) for step in net.steps]


def _row_names(net) -> list[str]:
    """Layer names; a name several layers use (Caffe allows it) is followed by each one's line."""
    names = [step.layer.name for step in net.steps]
    out = []
    for name, step in zip(names, net.steps):
        line = step.layer.origin()[1] if names.count(name) > 1 and hasattr(step.layer, "origin") else None
        out.append(f"{name} (line {line})" if line else name)
    return out


def shape_table(net, assumed: dict | None = None) -> list[list[str]]:
    """Rows: layer, type, device, tops with shapes, parameter count; a final total row.
    Layers in `assumed` (data layers replaced by inputs, see graph.inspect) show their
    own type with a '*'."""
    assumed = assumed or {}
    counts = layer_param_counts(net)
    rows = [["layer", "type", "device", "top shapes", "params"]]
    shapes = _shapes_as_produced(net)
    for step, lp, own, name, count in zip(net.steps, net.layer_params, shapes, _row_names(net), counts):
        tops = ", ".join(f"{t} {fmt_shape(s)}" for t, s in zip(step.tops, own))
        kind = f"{assumed[lp.name][0]}*" if lp.name in assumed else lp.type
        rows.append([name, kind, step.logical_device or "-", tops, f"{count:,}"])
    rows.append(["total", "", "", f"{len(net.steps)} layers", f"{sum(counts):,}"])
    return rows


def _shapes_as_produced(net) -> list[list[tuple]]:
    """Each layer's own top shapes (net.blob_shapes keeps only a blob's last version); Input layers'
    tops as compiled (input_shapes may override the prototxt)."""
    return [[net.blob_shapes[t] for t in lp.top] if step.is_input else list(step.layer.top_shapes)
            for step, lp in zip(net.steps, net.layer_params)]


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for k, r in enumerate(rows):
        cells = [c.ljust(w) if i < len(r) - 1 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
        if k == 0 or k == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args) -> int:
    net, notes = compile_for_inspection(args.net, args.phase, args.level, stages(args.stage),
                                        parse_input_shapes(args.input_shape))
    print(f"net '{net.name}', phase {args.phase}")
    print(format_table(shape_table(net, notes)))
    for _, why in notes.values():
        print(f"* {why}")
    return 0
