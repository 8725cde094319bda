"""`netspec draw` and netspec/draw.py: DOT text naming every layer and blob with shapes, AlexNet's
devices coloured with a legend and its copies marked, rendering through Graphviz when installed."""
from __future__ import annotations

import re
import shutil
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


def test_devices_are_coloured_with_a_legend(alexnet_dot):
    nodes = _nodes(alexnet_dot)
    fill = {d: re.search(r'fillcolor="([^"]+)"', nodes[f"legend:{d}"]).group(1) for d in ("gpu0", "gpu1")}
    assert fill["gpu0"] != fill["gpu1"]
    assert f'fillcolor="{fill["gpu0"]}"' in nodes["layer:conv2_0"]
    assert f'fillcolor="{fill["gpu1"]}"' in nodes["layer:conv2_1"]
    assert f'fillcolor="{fill["gpu1"]}"' in nodes["blob:pool2_1:0"]
    assert 'fillcolor="white"' in nodes["layer:data"]
    assert "subgraph cluster_legend" in alexnet_dot


def test_copies_between_devices_are_marked(alexnet, alexnet_dot):
    copies = re.findall(r'"blob:(\w+):\d+" -> "layer:(\w+)" \[[^]]*label="copy (\w+) → (\w+)"', alexnet_dot)
    expected = sorted((b, step.layer.name, s, d) for step in alexnet.steps for b, s, d in step.transfers)
    assert sorted(copies) == expected and len(copies) == 7


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


def test_cli_without_graphviz_writes_dot_and_fails(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(draw.shutil, "which", lambda name: None)
    out = tmp_path / "alexnet.png"
    assert main(["draw", str(ALEXNET_DEPLOY), str(out)]) == 1
    err = capsys.readouterr().err
    assert not out.exists() and (tmp_path / "alexnet.dot").is_file()
    assert "not installed" in err and str(tmp_path / "alexnet.dot") in err


def test_cli_rejects_unknown_formats(tmp_path, capsys):
    assert main(["draw", str(ALEXNET_DEPLOY), str(tmp_path / "alexnet.jpeg")]) == 1
    assert ".png, .svg, .pdf or .dot" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG\r\n\x1a\n"), (".svg", b"<?xml")])
def test_cli_renders_with_graphviz(tmp_path, capsys, suffix, magic):
    out = tmp_path / f"alexnet{suffix}"
    assert main(["draw", str(ALEXNET_DEPLOY), str(out)]) == 0
    data = out.read_bytes()
    assert data.startswith(magic) and len(data) > 10_000
    if suffix == ".svg":
        assert b"conv3_1" in data and b"gpu1" in data
