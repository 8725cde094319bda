"""Compiling a net only to look at it (shapes, drawing, timing, export): data layers whose sources
cannot be opened are stood in for by Input layers with assumed shapes, and every device is the CPU."""
from __future__ import annotations

from pathlib import Path

from ..errors import NetspecError
from ..proto import pb


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
                                  + ", ".join(f"{t} {'x'.join(map(str, s))}" for t, s in zip(lp.top, shapes)))
    finally:
        SOURCE_DIR.reset(token)
    return out, notes


def compile_for_inspection(path: str, phase_name: str = "TEST", level=None, stage_list=(), input_shapes=None):
    """Compile `path` on the CPU for looking at it (shapes, drawing); returns (CompiledNet, notes)."""
    from ..frontend import load_net
    from .compile import compile_net

    phase = pb.TRAIN if phase_name == "TRAIN" else pb.TEST
    given = dict(input_shapes or {})
    net = load_net(path, phase=phase, level=level, stages=tuple(stage_list))
    net, notes = substitute_missing_data(net, phase, path, given)
    compiled = compile_net(net, phase=phase, device_map="cpu", seed=0, source=path, input_shapes=given)
    return compiled, notes
