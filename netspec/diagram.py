"""A compiled net as a Graphviz DOT graph (the role of Caffe's python/caffe/draw.py and draw_net.py).

Layers are boxes naming their type and key parameters (kernel, stride, pad, outputs...) and their
parameter count; blobs are ellipses with their shapes. A blob written in place (ReLU, Dropout) gets
one ellipse per version, so the drawing stays acyclic. Layers and blobs are filled with the colour
of their logical device (AlexNet's two columns), with a legend; a blob read on another device than
the one it lives on is drawn with a bold dashed edge labelled with the copy. The DOT text is written
by hand, so no graphviz Python package is needed; rendering to PNG/SVG/PDF runs Graphviz's `dot`.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from .errors import NetspecError
from .proto import pb

# Fill colours of logical devices in order of first use; "" (no device) stays white.
PALETTE = ("#a6cee3", "#fdbf6f", "#b2df8a", "#cab2d6", "#fb9a99", "#ffff99", "#8dd3c7", "#bebada")
RENDERED = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


def _q(*lines: str) -> str:
    """A DOT double-quoted string of one or more lines (DOT's centred line breaks between them)."""
    text = "\n".join(str(s) for s in lines)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _hw(values, h, w, default, square: bool = False) -> str:
    """Caffe's repeated or `_h`/`_w` spatial fields as '3' (or '3×3' when square) or '3×5'."""
    vals = list(values) or [default]
    if h or w:
        vals = [h or vals[0], w or vals[-1]]
    if len(set(vals)) == 1:
        return f"{vals[0]}×{vals[0]}" if square else str(vals[0])
    return "×".join(str(v) for v in vals)


def layer_summary(lp: pb.LayerParameter) -> str:
    """The key parameters of a layer, one short line ('' when there is nothing to say)."""
    t = lp.type
    if t in ("Convolution", "Deconvolution"):
        c = lp.convolution_param
        parts = [f"{c.num_output} × {_hw(c.kernel_size, c.kernel_h, c.kernel_w, 0, square=True)}"]
        stride, pad = _hw(c.stride, c.stride_h, c.stride_w, 1), _hw(c.pad, c.pad_h, c.pad_w, 0)
        parts += [f"stride {stride}"] if stride != "1" else []
        parts += [f"pad {pad}"] if pad != "0" else []
        parts += [f"group {c.group}"] if c.group != 1 else []
        return ", ".join(parts)
    if t == "Pooling":
        p = lp.pooling_param
        kind = pb.PoolingParameter.PoolMethod.Name(p.pool)
        if p.global_pooling:
            return f"{kind} global"
        k = _hw([p.kernel_size] if p.kernel_size else [], p.kernel_h, p.kernel_w, 0, square=True)
        pad = _hw([p.pad], p.pad_h, p.pad_w, 0)
        return f"{kind} {k}, stride {_hw([p.stride], p.stride_h, p.stride_w, 1)}" + \
            (f", pad {pad}" if pad != "0" else "")
    if t == "InnerProduct":
        return f"{lp.inner_product_param.num_output} outputs"
    if t == "LRN":
        p = lp.lrn_param
        return f"n {p.local_size}, α {p.alpha:g}, β {p.beta:g}, k {p.k:g}"
    if t == "Dropout":
        return f"ratio {lp.dropout_param.dropout_ratio:g}"
    if t == "Data":
        return f"batch {lp.data_param.batch_size}, {lp.data_param.source}"
    if t == "Concat":
        return f"axis {lp.concat_param.axis}"
    if t == "Accuracy" and lp.accuracy_param.top_k != 1:
        return f"top {lp.accuracy_param.top_k}"
    return ""


def _layer_text(lp: pb.LayerParameter, params: int, device: str) -> list[str]:
    """A layer box's lines: name, type, key parameters, parameter count, device."""
    summary = layer_summary(lp)
    return ([lp.name, lp.type] + ([summary] if summary else []) + ([f"{params:,} params"] if params else [])
            + ([f"@{device}"] if device else []))


def _device_colours(net) -> dict[str, str]:
    names = []
    for step in net.steps:
        if step.logical_device and step.logical_device not in names:
            names.append(step.logical_device)
    return {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(names)}


def net_to_dot(net, rankdir: str = "TB", shape_text=None) -> str:
    """DOT text of a CompiledNet. `shape_text(shape) -> str` formats blob shapes."""
    fmt = shape_text or (lambda s: "×".join(str(d) for d in s) if len(s) else "scalar")
    colours = _device_colours(net)
    counts: dict[str, int] = {}
    for info in net.learnable_params():
        counts[info.layer] = counts.get(info.layer, 0) + info.tensor.numel()
    lines = [f"digraph {_q(net.name or 'net')} {{", f"  rankdir={rankdir};",
             '  node [fontname="Helvetica", fontsize=10, style=filled, fillcolor=white];',
             '  edge [fontname="Helvetica", fontsize=9];']
    version: dict[str, int] = {}      # blob name -> how many times it has been written before

    def blob_id(b):
        return _q(f"blob:{b}:{version.get(b, 0)}")

    from_layers = {t for step in net.steps if step.is_input for t in step.tops}
    for b in net.input_names:
        if b not in from_layers:      # a legacy `input:` blob, no layer produces it
            lines.append(f"  {blob_id(b)} [shape=ellipse, label={_q(b, fmt(net.blob_shapes[b]))}];")
            version[b] = 0
    for step, lp in zip(net.steps, net.layer_params):
        fill = colours.get(step.logical_device, "white")
        lid = _q(f"layer:{lp.name}")
        text = _layer_text(lp, counts.get(lp.name, 0), step.logical_device)
        lines.append(f"  {lid} [shape=box, fillcolor={_q(fill)}, label={_q(*text)}];")
        copies = {blob: (src or "default", dst or "default") for blob, src, dst in step.transfers}
        for b in lp.bottom:
            if b in copies:
                label = _q("copy {} → {}".format(*copies[b]))
                lines.append(f'  {blob_id(b)} -> {lid} [style="bold,dashed", color=red, label={label}];')
            else:
                lines.append(f"  {blob_id(b)} -> {lid};")
        for j, b in enumerate(lp.top):
            version[b] = version[b] + 1 if b in version else 0
            shape = net.blob_shapes[b] if step.is_input else step.layer.top_shapes[j]
            lines.append(f"  {blob_id(b)} [shape=ellipse, fillcolor={_q(fill)}, "
                         f"label={_q(b, fmt(shape))}];")
            lines.append(f"  {lid} -> {blob_id(b)};")
    lines += _legend(colours)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _legend(colours: dict[str, str]) -> list[str]:
    if not colours:
        return []
    out = ["  subgraph cluster_legend {", '    label="logical devices"; fontname="Helvetica"; fontsize=10;']
    for d, c in colours.items():
        out.append(f"    {_q('legend:' + d)} [shape=box, fillcolor={_q(c)}, label={_q(d)}];")
    ids = [_q("legend:" + d) for d in colours]
    if len(ids) > 1:   # side by side, in order of first use
        out.append(f"    {{ rank=same; {' -> '.join(ids)} [style=invis]; }}")
    out.append("  }")
    return out


def write_drawing(dot_text: str, out_path) -> tuple[Path, bool]:
    """Write `dot_text` as out_path (.dot/.gv as is; .png/.svg/.pdf rendered by Graphviz's `dot`).

    Returns (path written, rendered?). When a picture is asked for and `dot` is not installed, the
    DOT text goes to out_path with suffix .dot and rendered is False.
    """
    from .formats.atomic import atomic_write

    out = Path(out_path)
    fmt = RENDERED.get(out.suffix.lower())
    if fmt is None:
        if out.suffix.lower() not in (".dot", ".gv"):
            raise NetspecError(f"cannot tell the drawing format from '{out}': use .png, .svg, .pdf or .dot")
        atomic_write(out, dot_text.encode())
        return out, False
    dot = shutil.which("dot")
    if dot is None:
        fallback = out.with_suffix(".dot")
        atomic_write(fallback, dot_text.encode())
        return fallback, False
    done = subprocess.run([dot, f"-T{fmt}"], input=dot_text.encode(), capture_output=True)
    if done.returncode != 0:
        raise NetspecError(f"graphviz 'dot -T{fmt}' failed: {done.stderr.decode(errors='replace').strip()}",
                           file=out)
    atomic_write(out, done.stdout)
    return out, True
