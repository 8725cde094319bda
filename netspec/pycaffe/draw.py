"""pycaffe's caffe.draw: a NetParameter as a pydot graph, rendered by Graphviz (python/caffe/draw.py).

Same functions, arguments, labels, colours and graph structure as pycaffe's: every layer is a record
node labelled `name (type)` plus the kernel/stride/pad of spatial layers (and lr_mult with
display_lrm), every blob an octagon, bottoms -> layer -> tops, top edges labelled with the batch size
or num_output. As pycaffe, `phase` filters on include/exclude phase rules only. netspec's own drawing
(`netspec draw`, shapes and devices) is netspec.diagram.

pydot is optional (`pip install 'netspec[draw]'`), and rendering an image needs Graphviz's `dot`
program; without them these functions raise one-line NetspecErrors (the label helpers need neither).
"""
from __future__ import annotations

from ..errors import NetspecError
from ..proto import pb

LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}

_LEARNING = ("Convolution", "Deconvolution", "InnerProduct")
_COLORS = {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900", "InnerProduct": "#CC33FF"}


def _pydot():
    try:
        import pydot
    except ImportError:
        raise NetspecError("netspec.draw needs pydot: pip install 'netspec[draw]' (and Graphviz's dot "
                           "program to render images)") from None
    return pydot


def get_pooling_types_dict() -> dict[int, str]:
    """Pooling method number -> its name (0: 'MAX', 1: 'AVE', 2: 'STOCHASTIC')."""
    return {v.number: name for name, v in pb.PoolingParameter.PoolMethod.DESCRIPTOR.values_by_name.items()}


def get_edge_label(layer) -> str:
    """A top edge's label: the Data layer's batch size, a learning layer's num_output, else empty."""
    if layer.type == "Data":
        return "Batch " + str(layer.data_param.batch_size)
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_lr_mult(layer) -> tuple[float, float]:
    """(weights, bias) lr_mult of a Convolution, Deconvolution or InnerProduct layer (1.0 unset)."""
    if layer.type not in _LEARNING:
        raise ValueError(f"{layer.type} layers do not have a learning rate multiplier")
    specs = list(layer.param)
    if len(specs) > 2:
        raise ValueError("Could not parse the learning rate multiplier")
    mults = [float(p.lr_mult) for p in specs] + [1.0] * (2 - len(specs))
    return mults[0], mults[1]


def _spatial(layer, sep: str) -> str:
    if layer.type == "Pooling":
        p = layer.pooling_param
        k, s, pad = p.kernel_size, p.stride, p.pad
    else:
        c = layer.convolution_param
        k = c.kernel_size[0] if len(c.kernel_size) else 1
        s = c.stride[0] if len(c.stride) else 1
        pad = c.pad[0] if len(c.pad) else 0
    return sep.join([f"kernel size: {int(k)}", f"stride: {int(s)}", f"pad: {int(pad)}"])


def get_layer_label(layer, rankdir, display_lrm=False) -> str:
    """The quoted node label: name, (type), spatial parameters, lr mults; words on separate lines
    when the graph runs left to right (vertical space is free), spaces when it runs top-down."""
    sep = " " if rankdir in ("TB", "BT") else r"\n"
    kind = layer.type
    if kind == "Pooling":
        kind = f"{kind} {get_pooling_types_dict()[layer.pooling_param.pool]}"
    parts = [layer.name, f"({kind})"]
    if layer.type in ("Convolution", "Deconvolution", "Pooling"):
        parts.append(_spatial(layer, sep))
    if display_lrm and layer.type in _LEARNING:
        w, b = get_layer_lr_mult(layer)
        if w or b:
            parts.append(f"lr mult: {w:.1f}, {b:.1f}")
    return f'"{sep.join(parts)}"'


def choose_color_by_layertype(layertype) -> str:
    return _COLORS.get(layertype, "#6495ED")


def _included(layer, phase) -> bool:
    """pycaffe's phase filter: include/exclude rules' phase alone (levels and stages not looked at)."""
    if phase is None:
        return True
    if len(layer.include) and len(layer.exclude):
        raise ValueError(f"layer {layer.name} has both include and exclude specified.")
    keep = not len(layer.include) or any(r.phase == phase for r in layer.include)
    return keep and not any(r.phase == phase for r in layer.exclude)


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """The net as a pydot.Dot digraph (layers as records, blobs as octagons)."""
    pydot = _pydot()
    graph = pydot.Dot(caffe_net.name or "Net", graph_type="digraph", rankdir=rankdir)
    nodes, edges = {}, []
    for layer in caffe_net.layer:
        if not _included(layer, phase):
            continue
        name = f"{layer.name}_{layer.type}"
        in_place = len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]
        style = NEURON_LAYER_STYLE if in_place else dict(LAYER_STYLE_DEFAULT,
                                                         fillcolor=choose_color_by_layertype(layer.type))
        nodes[name] = pydot.Node(get_layer_label(layer, rankdir, display_lrm=display_lrm), **style)
        for b in layer.bottom:
            nodes[b + "_blob"] = pydot.Node(b, **BLOB_STYLE)
            edges.append((b + "_blob", name, '""'))
        for t in layer.top:
            # As pycaffe: a top gets a plain node, styled as a blob once a later layer reads it.
            nodes[t + "_blob"] = pydot.Node(t)
            edges.append((name, t + "_blob", get_edge_label(layer) if label_edges else '""'))
    for node in nodes.values():
        graph.add_node(node)
    for src, dst, label in edges:
        graph.add_edge(pydot.Edge(nodes[src], nodes[dst], label=label))
    return graph


def draw_net(caffe_net, rankdir, ext="png", phase=None, display_lrm=False) -> bytes:
    """The drawing as bytes in format `ext` (any Graphviz output format; 'raw' gives the DOT text)."""
    graph = get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    if ext == "raw":
        return graph.to_string().encode()
    try:
        return graph.create(format=ext)
    except FileNotFoundError:
        raise NetspecError("netspec.draw: Graphviz's 'dot' program is not installed (apt-get install "
                           "graphviz), so no image can be rendered; ext='raw' gives the DOT text") from None
    except (AssertionError, OSError) as e:
        raise NetspecError(f"netspec.draw: Graphviz could not render format '{ext}': "
                           f"{' '.join(str(e).split())}") from None


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False) -> None:
    """Write the drawing to `filename` in the format its extension names ('.raw': the DOT text)."""
    ext = filename[filename.rfind(".") + 1:]
    data = draw_net(caffe_net, rankdir, ext, phase, display_lrm)
    with open(filename, "wb") as f:
        f.write(data)
