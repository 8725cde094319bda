"""`netspec draw`, netspec/diagram.py and netspec/diagram_layout.py: every layer and blob with shapes,
layers filled by type with draw_net's colours, AlexNet's devices framed with a legend and its copies
marked; SVG and PNG drawn without Graphviz, long nets wrapped to a readable shape."""
from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from netspec import diagram as draw
from netspec.cli import main
from netspec.frontend import load_net, parse_net_text
from netspec.graph import compile_net

ROOT = Path(__file__).resolve().parent.parent
ALEXNET_DEPLOY = ROOT / "models" / "alexnet" / "deploy.prototxt"
CAFFENET_TRAIN_VAL = ROOT / "models" / "caffenet" / "train_val.prototxt"


@pytest.fixture(scope="module")
def alexnet():
    return compile_net(load_net(ALEXNET_DEPLOY), device_map="cpu", source=str(ALEXNET_DEPLOY))


@pytest.fixture(scope="module")
def alexnet_dot(alexnet):
    return draw.net_to_dot(alexnet)


def _nodes(dot: str) -> dict[str, str]:
    """Node id -> its attribute text."""
    return dict(re.findall(r'^ +"([^"]+)" \[(.*)\];$', dot, re.M))


def test_every_layer_is_a_box_with_its_name(alexnet, alexnet_dot):
    nodes = _nodes(alexnet_dot)
    for lp in alexnet.layer_params:
        attrs = nodes[f"layer:{lp.name}"]
        assert "shape=box" in attrs and f'label="{lp.name}\\n{lp.type}' in attrs, attrs


def test_blobs_are_ellipses_with_shapes(alexnet_dot):
    nodes = _nodes(alexnet_dot)
    assert 'label="pool5_0\\n10×128×6×6"' in nodes["blob:pool5_0:0"]
    assert 'label="data\\n10×3×227×227"' in nodes["blob:data:0"]
    # ReLU writes conv1_0 in place: a second version, so the graph has no cycle
    assert "blob:conv1_0:1" in nodes and "blob:conv1_0:2" not in nodes
    assert '"blob:conv1_0:0" -> "layer:relu1_0";' in alexnet_dot
    assert '"layer:relu1_0" -> "blob:conv1_0:1";' in alexnet_dot
    assert '"blob:conv1_0:1" -> "layer:norm1_0";' in alexnet_dot


def test_devices_frame_their_nodes_and_layers_are_filled_by_type(alexnet_dot):
    nodes = _nodes(alexnet_dot)
    frame = {d: re.search(r'color="([^"]+)"', nodes[f"legend:{d}"].replace("fillcolor", "")).group(1)
             for d in ("gpu0", "gpu1")}
    assert frame["gpu0"] != frame["gpu1"]
    assert f'color="{frame["gpu0"]}"' in nodes["layer:conv2_0"].replace("fillcolor", "")
    assert f'color="{frame["gpu1"]}"' in nodes["blob:pool2_1:0"].replace("fillcolor", "")
    # draw_net's fills: convolutions red, pooling orange, inner products purple, in-place neurons green
    for layer, fill in (("conv2_0", "#FF5050"), ("pool1_1", "#FF9900"), ("fc8", "#CC33FF"),
                        ("relu1_0", "#90EE90"), ("norm1_0", "#6495ED")):
        assert f'fillcolor="{fill}"' in nodes[f"layer:{layer}"], layer
    assert 'fillcolor="#E0E0E0"' in nodes["blob:pool2_1:0"] and "penwidth" not in nodes["layer:data"]
    assert "subgraph cluster_legend" in alexnet_dot


def test_copies_between_devices_are_marked(alexnet, alexnet_dot):
    copies = re.findall(r'"blob:(\w+):\d+" -> "layer:(\w+)" \[[^]]*label="copy (\w+) → (\w+)"', alexnet_dot)
    expected = sorted((b, step.layer.name, s or "default", d or "default") for step in alexnet.steps
                      for b, s, d in step.transfers)
    between_columns = [c for c in copies if c[0] not in alexnet.input_names]    # not the image's delivery
    assert sorted(copies) == expected and len(between_columns) == 7 and len(copies) == 9


@pytest.mark.parametrize("text, summary", [
    ('type: "Convolution" convolution_param { num_output: 48 kernel_size: 11 stride: 4 }',
     "48 × 11×11, stride 4"),
    ('type: "Convolution" convolution_param { num_output: 8 kernel_h: 3 kernel_w: 5 pad: 1 group: 2 }',
     "8 × 3×5, pad 1, group 2"),
    ('type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }', "MAX 3×3, stride 2"),
    ('type: "Pooling" pooling_param { pool: AVE global_pooling: true }', "AVE global"),
    ('type: "LRN" lrn_param { local_size: 5 alpha: 0.0005 beta: 0.75 k: 2 }', "n 5, α 0.0005, β 0.75, k 2"),
    ('type: "InnerProduct" inner_product_param { num_output: 4096 }', "4096 outputs"),
    ('type: "Dropout"', "ratio 0.5"),
    ('type: "ReLU"', ""),
])
def test_layer_summaries(text, summary):
    lp = parse_net_text(f'layer {{ name: "x" {text} }}').layer[0]
    assert draw.layer_summary(lp) == summary


def test_odd_names_are_quoted():
    net = compile_net(parse_net_text(
        'layer { name: "in\\"put" type: "Input" top: "a/b" input_param { shape { dim: 1 dim: 2 } } }\n'
        'layer { name: "inception/3x3" type: "ReLU" bottom: "a/b" top: "c\\\\d" }'))
    dot = draw.net_to_dot(net)
    assert '"layer:in\\"put"' in dot and '"layer:inception/3x3"' in dot and '"blob:c\\\\d:0"' in dot


def test_cli_writes_dot_naming_every_layer_and_both_devices(tmp_path, capsys):
    out = tmp_path / "alexnet.dot"
    assert main(["draw", str(ALEXNET_DEPLOY), str(out)]) == 0
    dot = out.read_text()
    for lp in load_net(ALEXNET_DEPLOY).layer:
        assert f'"layer:{lp.name}"' in dot
    assert '"legend:gpu0"' in dot and '"legend:gpu1"' in dot
    assert dot.startswith('digraph "AlexNet" {') and dot.rstrip().endswith("}")


def test_cli_draws_a_train_val_without_its_lmdb(tmp_path, capsys):
    out = tmp_path / "caffenet.dot"
    assert main(["draw", str(CAFFENET_TRAIN_VAL), str(out), "-phase", "TRAIN", "--rankdir", "LR"]) == 0
    dot = out.read_text()
    assert "rankdir=LR;" in dot and 'label="data\\n128×3×227×227"' in dot and '"layer:drop7"' in dot
    assert "does not exist" in capsys.readouterr().err


def test_cli_rejects_unknown_formats(tmp_path, capsys):
    assert main(["draw", str(ALEXNET_DEPLOY), str(tmp_path / "alexnet.jpeg")]) == 1
    assert ".png, .svg, .pdf or .dot" in capsys.readouterr().err


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return struct.unpack(">II", data[16:24])


def test_svg_and_png_without_graphviz(tmp_path, capsys, monkeypatch, alexnet):
    monkeypatch.setenv("PATH", str(tmp_path))          # no `dot` anywhere
    svg, png = tmp_path / "alexnet.svg", tmp_path / "alexnet.png"
    assert main(["draw", str(ALEXNET_DEPLOY), str(svg)]) == 0 and main(["draw", str(ALEXNET_DEPLOY), str(png)]) == 0
    root = ET.parse(svg).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    titled = {t.text: el for el in root.iter() for t in el.findall(f"{ns}title")}
    for lp in alexnet.layer_params:
        assert f"layer:{lp.name}" in titled, lp.name
    assert titled["layer:conv3_1"].get("fill") == "#FF5050" and titled["layer:pool5_0"].get("fill") == "#FF9900"
    assert titled["layer:conv3_0"].get("stroke") != titled["layer:conv3_1"].get("stroke")   # two devices
    w, h = _png_size(png)
    # a readable page, not the 493x5873 strip a single column makes
    assert w <= 2000 and h <= 2000 and max(w, h) / min(w, h) < 2, (w, h)


def test_long_left_to_right_net_is_wrapped(tmp_path, capsys):
    out = tmp_path / "toy.png"
    assert main(["draw", str(ROOT / "models" / "caffenet" / "toy_train_val.prototxt"), str(out),
                 "--rankdir", "LR", "-phase", "TRAIN"]) == 0
    w, h = _png_size(out)
    assert w <= 2000 and max(w, h) / min(w, h) < 2.5, (w, h)


def test_layout_ranks_point_every_edge_forward(alexnet):
    from netspec.diagram_layout import layout

    scene = layout(draw.net_graph(alexnet), "TB")
    box = {b.node.id: b for b in scene.boxes}
    for (points, _), e in zip(scene.paths, draw.net_graph(alexnet).edges):
        src, dst = box[e.src], box[e.dst]
        assert points[0][1] == pytest.approx(src.y + src.h) and points[-1][1] == pytest.approx(dst.y), e
    columns = {b.node.device: set() for b in scene.boxes}
    for b in scene.boxes:
        columns[b.node.device].add(round(b.x + b.w / 2))
    assert not columns["gpu0"] & columns["gpu1"]        # the devices never share a column


def test_phase_all_and_lr_mults_as_draw_net(tmp_path, capsys):
    out = tmp_path / "caffenet.dot"
    assert main(["draw", str(CAFFENET_TRAIN_VAL), str(out), "--phase", "ALL", "--display_lrm"]) == 0
    dot = out.read_text()
    # the TRAIN and TEST Data layers share a name: one node, as in draw_net
    assert len(re.findall(r'^  "layer:data" \[', dot, re.M)) == 1 and 'label="data\\nData' in dot
    assert "lr mult: 1.0, 2.0" in dot and "does not exist" not in capsys.readouterr().err


def test_png_leaves_the_matplotlib_backend_alone(tmp_path, alexnet):
    import matplotlib

    before = matplotlib.get_backend()
    draw.write_drawing(alexnet, tmp_path / "a.png")
    assert matplotlib.get_backend() == before
