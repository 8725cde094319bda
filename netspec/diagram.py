"""A net as a picture: layers and blobs as a graph, laid out and drawn in pure Python (SVG, and PNG or
PDF through matplotlib), or written as Graphviz DOT text (the role of Caffe's python/caffe/draw.py and
python/draw_net.py, without needing Graphviz).

Layers are boxes naming their type and key parameters (kernel, stride, pad, outputs...) and their
parameter count, filled by type with draw_net's colours (convolutions red, pooling orange, inner
products purple, in-place neuron layers green, others blue); blobs are grey octagons with their
shapes. A blob written in place (ReLU, Dropout) gets one node per version, so the graph stays
acyclic. Logical devices (AlexNet's two columns) are drawn as columns side by side, each node
framed in its device's colour, with a legend; a blob read on another device than the one it lives
on gets a red dashed edge labelled with the copy. The layout (netspec/diagram_layout.py) wraps a
long net into several columns (or rows, left to right) so that the picture keeps a readable shape.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import NetspecError
from .proto import pb

# Frame colours of logical devices in order of first use.
PALETTE = ("#1f78b4", "#ff7f00", "#33a02c", "#6a3d9a", "#e31a1c", "#b15928", "#a6cee3", "#fb9a99")
# draw_net's fills (python/caffe/draw.py): by layer type; in-place neuron layers; blobs.
TYPE_FILL = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
             "InnerProduct": "#CC33FF"}
LAYER_FILL, NEURON_FILL, BLOB_FILL = "#6495ED", "#90EE90", "#E0E0E0"
PICTURES = (".png", ".svg", ".pdf")


def layer_fill(lp: pb.LayerParameter) -> str:
    if len(lp.bottom) == 1 and len(lp.top) == 1 and lp.bottom[0] == lp.top[0]:
        return NEURON_FILL
    return TYPE_FILL.get(lp.type, LAYER_FILL)


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


def _layer_text(lp: pb.LayerParameter, params: int, device: str, display_lrm: bool) -> list[str]:
    """A layer box's lines: name, type, key parameters, lr mults, parameter count, device."""
    summary = layer_summary(lp)
    lines = [lp.name, lp.type] + ([summary] if summary else [])
    if display_lrm and lp.type in ("Convolution", "Deconvolution", "InnerProduct"):
        mults = [p.lr_mult for p in lp.param[:2]] + [1.0] * (2 - min(len(lp.param), 2))
        if any(mults):     # draw_net's "lr mult: %.1f, %.1f" (absent param specs count as 1)
            lines.append(f"lr mult: {mults[0]:.1f}, {mults[1]:.1f}")
    return lines + ([f"{params:,} params"] if params else []) + ([f"@{device}"] if device else [])


@dataclass
class Node:
    id: str
    kind: str                 # "layer" or "blob"
    lines: list[str]
    fill: str
    device: str = ""


@dataclass
class Edge:
    src: str
    dst: str
    label: str = ""           # set for a copy between devices


@dataclass
class Graph:
    name: str
    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    devices: dict[str, str] = field(default_factory=dict)     # logical device -> frame colour


def _steps(net):
    """(layer, logical device, top shapes or None, parameter count, transfers) of a CompiledNet, or of
    a NetParameter drawn without compiling (draw_net's `--phase ALL`: no shapes, no counts)."""
    if isinstance(net, pb.NetParameter):
        for lp in net.layer:
            yield lp, (lp.device[0] if lp.device else ""), None, 0, []
        return
    owner = {id(info.tensor): info.layer for info in net.learnable_params()}
    for step, lp in zip(net.steps, net.layer_params):
        shapes = [net.blob_shapes[t] for t in lp.top] if step.is_input else list(step.layer.top_shapes)
        params = sum(t.numel() for t in step.layer.blobs if owner.get(id(t)) == lp.name)
        yield lp, step.logical_device, shapes, params, step.transfers


def net_graph(net, shape_text=None, display_lrm: bool = False) -> Graph:
    """The nodes and edges every drawing is made of, in net order (a topological order)."""
    fmt = shape_text or (lambda s: "×".join(str(d) for d in s) if len(s) else "scalar")
    g = Graph(net.name or "net")
    version: dict[str, int] = {}      # blob name -> how many times it has been written before
    writer: dict[str, str] = {}       # blob name -> the layer that wrote its current version

    def blob_id(b):
        return f"blob:{b}:{version.get(b, 0)}"

    if not isinstance(net, pb.NetParameter):
        from_layers = {t for step in net.steps if step.is_input for t in step.tops}
        for b in (b for b in net.input_names if b not in from_layers):   # legacy `input:` blobs
            g.nodes.append(Node(blob_id(b), "blob", [b, fmt(net.blob_shapes[b])], BLOB_FILL))
            version[b] = 0
    drawn: set[str] = set()
    for k, (lp, device, shapes, params, transfers) in enumerate(_steps(net)):
        if device and device not in g.devices:
            g.devices[device] = PALETTE[len(g.devices) % len(PALETTE)]
        lid = f"layer:{lp.name}"
        if lid in drawn and isinstance(net, pb.NetParameter) and lid in writer.values():
            continue                  # a same-named layer of another phase (--phase ALL): one node, as draw_net
        if lid in drawn:              # one net's layers may share a name (Caffe allows it): each its own node
            lid = f"{lid}:{k}"
        drawn.add(lid)
        g.nodes.append(Node(lid, "layer", _layer_text(lp, params, device, display_lrm), layer_fill(lp), device))
        copies = {blob: (src or "default", dst or "default") for blob, src, dst in transfers}
        for b in lp.bottom:
            if b not in version:      # read before any layer wrote it (an undrawn phase's blob)
                g.nodes.append(Node(blob_id(b), "blob", [b], BLOB_FILL))
                version[b] = 0
            g.edges.append(Edge(blob_id(b), lid, "copy {} → {}".format(*copies[b]) if b in copies else ""))
        for j, b in enumerate(lp.top):
            version[b] = version[b] + 1 if b in version else 0
            writer[b] = lid
            text = [b] + ([fmt(shapes[j])] if shapes is not None else [])
            g.nodes.append(Node(blob_id(b), "blob", text, BLOB_FILL, device))
            g.edges.append(Edge(lid, blob_id(b)))
    return g


def net_to_dot(net, rankdir: str = "TB", shape_text=None, display_lrm: bool = False) -> str:
    """DOT text of a CompiledNet (or a NetParameter). `shape_text(shape) -> str` formats blob shapes."""
    g = net_graph(net, shape_text, display_lrm)
    lines = [f"digraph {_q(g.name)} {{", f"  rankdir={rankdir};",
             '  node [fontname="Helvetica", fontsize=10, style=filled];',
             '  edge [fontname="Helvetica", fontsize=9];']
    for n in g.nodes:
        shape = "box" if n.kind == "layer" else "octagon"
        frame = f", color={_q(g.devices[n.device])}, penwidth=2" if n.device else ""
        lines.append(f"  {_q(n.id)} [shape={shape}, fillcolor={_q(n.fill)}{frame}, label={_q(*n.lines)}];")
    for e in g.edges:
        style = f' [style="bold,dashed", color=red, label={_q(e.label)}]' if e.label else ""
        lines.append(f"  {_q(e.src)} -> {_q(e.dst)}{style};")
    lines += _legend(g.devices)
    lines.append("}")
    return "\n".join(lines) + "\n"


def _legend(colours: dict[str, str]) -> list[str]:
    if not colours:
        return []
    out = ["  subgraph cluster_legend {", '    label="logical devices"; fontname="Helvetica"; fontsize=10;']
    for d, c in colours.items():
        out.append(f"    {_q('legend:' + d)} [shape=box, fillcolor=white, color={_q(c)}, penwidth=2, "
                   f"label={_q(d)}];")
    ids = [_q("legend:" + d) for d in colours]
    if len(ids) > 1:   # side by side, in order of first use
        out.append(f"    {{ rank=same; {' -> '.join(ids)} [style=invis]; }}")
    out.append("  }")
    return out


def write_drawing(net, out_path, rankdir: str = "TB", shape_text=None, display_lrm: bool = False) -> Path:
    """Draw `net` to out_path: .svg, .png or .pdf (laid out and drawn here, no Graphviz needed), or
    .dot/.gv (DOT text, for Graphviz's own layout)."""
    from .formats.atomic import atomic_write

    out = Path(out_path)
    suffix = out.suffix.lower()
    if suffix in (".dot", ".gv"):
        atomic_write(out, net_to_dot(net, rankdir, shape_text, display_lrm).encode())
        return out
    if suffix not in PICTURES:
        raise NetspecError(f"cannot tell the drawing format from '{out}': use .png, .svg, .pdf or .dot")
    from .diagram_layout import layout, render_matplotlib, render_svg

    scene = layout(net_graph(net, shape_text, display_lrm), rankdir)
    atomic_write(out, render_svg(scene) if suffix == ".svg" else render_matplotlib(scene, suffix[1:]))
    return out
