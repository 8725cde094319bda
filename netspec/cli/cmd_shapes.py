"""`netspec shapes NET.prototxt`: every layer's device, top shapes and parameter count, and the total.

The net is compiled for one phase with every logical device bound to the CPU; no weights are needed
(fillers run, nothing is trained). A data layer whose LMDB or mean file cannot be opened is replaced
by an Input layer whose shape comes from `--input-shape`, else from batch_size and crop_size (3
channels, 1 with force_gray), and the table says so. Caffe prints the same shapes in its log while
Net::Init sets up each layer ("Top shape: 128 96 55 55 (37171200)").
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import NetspecError
from ..proto import pb
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


_BATCH_PARAM = {"Data": "data_param", "ImageData": "image_data_param", "WindowData": "window_data_param",
                "HDF5Data": "hdf5_data_param", "MemoryData": "memory_data_param"}


def _guess_top_shapes(lp: pb.LayerParameter, given: dict) -> list[tuple[int, ...]]:
    """Shapes of a data layer's tops: --input-shape, else batch_size and crop_size; labels (N,)."""
    field = _BATCH_PARAM.get(lp.type)
    batch = getattr(lp, field).batch_size if field else 0
    tp = lp.transform_param
    crop = tp.crop_size or lp.data_param.crop_size   # the legacy place of crop_size too
    ip = lp.image_data_param
    if not crop and lp.type == "ImageData" and ip.new_height == ip.new_width:
        crop = ip.new_height
    if lp.top[0] in given:
        first = given[lp.top[0]]
        batch = first[0]
    elif batch and crop:
        first = (batch, 1 if tp.force_gray else 3, crop, crop)
    else:
        raise NetspecError(f"cannot tell the shape of top '{lp.top[0]}' without its data source "
                           f"(batch_size {batch}, crop_size {crop}); give --input-shape "
                           f"{lp.top[0]}=N,C,H,W", layer=lp.name)
    return [first] + [given.get(t, (batch,)) for t in lp.top[1:]]


def _as_input(lp: pb.LayerParameter, shapes) -> pb.LayerParameter:
    out = pb.LayerParameter(name=lp.name, type="Input", top=list(lp.top))
    out.device.extend(lp.device)
    for s in shapes:
        out.input_param.shape.add().dim.extend(s)
    return out


def substitute_missing_data(net: pb.NetParameter, phase: int, source, given: dict):
    """Replace data layers that cannot open their source by Input layers.

    Returns the new net and {layer name: (its type, why it was replaced and what was assumed)}.
    """
    from ..layers import layer_class
    from ..layers.base import SOURCE_DIR

    notes, out = {}, pb.NetParameter()
    out.CopyFrom(net)
    token = SOURCE_DIR.set(Path(source).parent if source else None)
    try:
        for i, lp in enumerate(net.layer):
            cls = layer_class(lp.type, lp.name)
            if not cls.is_data or lp.type == "Input":
                continue
            try:
                layer = cls(lp, [], phase)
                layer.close()
            except NetspecError as e:
                shapes = _guess_top_shapes(lp, given)
                out.layer[i].CopyFrom(_as_input(lp, shapes))
                notes[lp.name] = (lp.type, f"{e}; assumed top shapes "
                                  + ", ".join(f"{t} {fmt_shape(s)}" for t, s in zip(lp.top, shapes)))
    finally:
        SOURCE_DIR.reset(token)
    return out, notes


def compile_for_inspection(path: str, phase_name: str = "TEST", level=None, stage_list=(), input_shapes=None):
    """Compile `path` on the CPU for looking at it (shapes, drawing); returns (CompiledNet, notes)."""
    from ..frontend import load_net
    from ..graph import compile_net

    phase = pb.TRAIN if phase_name == "TRAIN" else pb.TEST
    given = dict(input_shapes or {})
    net = load_net(path, phase=phase, level=level, stages=tuple(stage_list))
    net, notes = substitute_missing_data(net, phase, path, given)
    compiled = compile_net(net, phase=phase, device_map="cpu", seed=0, source=path, input_shapes=given)
    return compiled, notes


def _times() -> str:
    enc = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        "×".encode(enc)
        return "×"
    except (UnicodeEncodeError, LookupError):
        return "x"


def fmt_shape(shape) -> str:
    return _times().join(str(d) for d in shape) if len(shape) else "scalar"


def layer_param_counts(net) -> dict[str, int]:
    """Parameter count per layer; a shared blob counts once, at the layer that owns it."""
    counts = {name: 0 for name in net.layers}
    for info in net.learnable_params():
        counts[info.layer] += info.tensor.numel()
    return counts


def shape_table(net, assumed: dict | None = None) -> list[list[str]]:
    """Rows: layer, type, device, tops with shapes, parameter count; a final total row.
    Layers in `assumed` (data layers replaced by inputs, see substitute_missing_data) show their
    own type with a '*'."""
    assumed = assumed or {}
    counts = layer_param_counts(net)
    rows = [["layer", "type", "device", "top shapes", "params"]]
    shapes = _shapes_as_produced(net)
    for step, lp in zip(net.steps, net.layer_params):
        tops = ", ".join(f"{t} {fmt_shape(s)}" for t, s in zip(step.tops, shapes[lp.name]))
        kind = f"{assumed[lp.name][0]}*" if lp.name in assumed else lp.type
        rows.append([lp.name, kind, step.logical_device or "-", tops, f"{counts[lp.name]:,}"])
    rows.append(["total", "", "", f"{len(net.layers)} layers", f"{sum(counts.values()):,}"])
    return rows


def _shapes_as_produced(net) -> dict[str, list[tuple]]:
    """Each layer's own top shapes (net.blob_shapes keeps only a blob's last version); Input layers'
    tops as compiled (input_shapes may override the prototxt)."""
    return {lp.name: [net.blob_shapes[t] for t in lp.top] if step.is_input else list(step.layer.top_shapes)
            for step, lp in zip(net.steps, net.layer_params)}


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
