"""netspec.draw, pycaffe's caffe.draw (netspec/pycaffe/draw.py): the pydot graph of a small net node by
node and edge by edge as pycaffe's draw.py builds it (labels, styles, colours, phase filter, lr mults),
the label helpers, and rendering (PNG through Graphviz's dot, DOT text with '.raw')."""
import shutil
import sys

import pytest
from google.protobuf import text_format

import netspec
import netspec.draw
from netspec.errors import NetspecError
from netspec.proto import caffe_pb2

pydot = pytest.importorskip("pydot")

NET = '''name: "small"
layer { name: "data" type: "Data" top: "data" top: "label" data_param { batch_size: 64 } include { phase: TRAIN } }
layer { name: "data" type: "Input" top: "data" top: "label" include { phase: TEST } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 20 kernel_size: 5 stride: 2 pad: 1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: AVE kernel_size: 2 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "pool1" top: "pool1" }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1" inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
'''
CONV = r'"conv1\n(Convolution)\nkernel size: 5\nstride: 2\npad: 1\nlr mult: 1.0, 2.0"'
POOL = r'"pool1\n(Pooling AVE)\nkernel size: 2\nstride: 2\npad: 0"'
IP = r'"ip1\n(InnerProduct)\nlr mult: 1.0, 1.0"'
LOSS = r'"loss\n(SoftmaxWithLoss)"'
RECORD = {"shape": "record", "style": "filled"}
BLOB = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}


def net():
    return text_format.Parse(NET, caffe_pb2.NetParameter())


def test_graph_nodes_edges_and_labels_as_pycaffe():
    g = netspec.draw.get_pydot_graph(net(), "LR", phase=caffe_pb2.TRAIN, display_lrm=True)
    assert g.get_name() == "small" and g.get_rankdir() == "LR"
    nodes = {n.get_name(): n.get_attributes() for n in g.get_nodes()}
    assert nodes == {
        r'"data\n(Data)"': {**RECORD, "fillcolor": "#6495ED"}, "data": BLOB, "label": BLOB,
        CONV: {**RECORD, "fillcolor": "#FF5050"}, "conv1": BLOB,
        POOL: {**RECORD, "fillcolor": "#FF9900"}, "pool1": BLOB,
        r'"relu1\n(ReLU)"': {**RECORD, "fillcolor": "#90EE90"},      # in place: a neuron layer
        IP: {**RECORD, "fillcolor": "#CC33FF"}, "ip1": BLOB,
        LOSS: {**RECORD, "fillcolor": "#6495ED"}, "loss": {},        # a top nothing reads: unstyled
    }
    edges = [(e.get_source(), e.get_destination(), e.get_attributes()["label"]) for e in g.get_edges()]
    assert edges == [
        (r'"data\n(Data)"', "data", "Batch 64"), (r'"data\n(Data)"', "label", "Batch 64"),
        ("data", CONV, '""'), (CONV, "conv1", "20"), ("conv1", POOL, '""'), (POOL, "pool1", '""'),
        ("pool1", r'"relu1\n(ReLU)"', '""'), (r'"relu1\n(ReLU)"', "pool1", '""'),
        ("pool1", IP, '""'), (IP, "ip1", "10"), ("ip1", LOSS, '""'), ("label", LOSS, '""'), (LOSS, "loss", '""')]


def test_phase_none_keeps_every_layer_and_test_phase_drops_train_layers():
    names = lambda g: {n.get_name() for n in g.get_nodes()}
    assert {'"data (Input)"', '"data (Data)"'} <= names(netspec.draw.get_pydot_graph(net(), "TB"))
    test = names(netspec.draw.get_pydot_graph(net(), "TB", phase=caffe_pb2.TEST, label_edges=False))
    assert '"data (Input)"' in test and '"data (Data)"' not in test


def test_label_helpers():
    layers = {lp.name: lp for lp in net().layer}
    assert netspec.draw.get_layer_label(layers["conv1"], "TB") == '"conv1 (Convolution) kernel size: 5 stride: 2 pad: 1"'
    assert netspec.draw.get_edge_label(layers["ip1"]) == "10"
    assert netspec.draw.get_edge_label(layers["relu1"]) == '""'
    assert netspec.draw.get_layer_lr_mult(layers["conv1"]) == (1.0, 2.0)
    assert netspec.draw.get_layer_lr_mult(layers["ip1"]) == (1.0, 1.0)
    with pytest.raises(ValueError, match="ReLU layers do not have a learning rate multiplier"):
        netspec.draw.get_layer_lr_mult(layers["relu1"])
    assert netspec.draw.get_pooling_types_dict() == {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}
    assert [netspec.draw.choose_color_by_layertype(t) for t in ("Deconvolution", "Pooling", "Eltwise")] == [
        "#FF5050", "#FF9900", "#6495ED"]


def test_draw_net_to_file_raw_writes_the_dot_text(tmp_path):
    out = tmp_path / "net.raw"
    netspec.draw.draw_net_to_file(net(), str(out), "LR", caffe_pb2.TRAIN)
    text = out.read_text()
    assert text.startswith("digraph small {") and "rankdir=LR" in text and '"data\\n(Data)" -> data' in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_draw_net_renders_png(tmp_path):
    png = netspec.draw.draw_net(net(), "LR")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    netspec.draw.draw_net_to_file(net(), str(tmp_path / "n.png"))
    assert (tmp_path / "n.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_pydot_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydot", None)
    with pytest.raises(NetspecError, match=r"needs pydot: pip install 'netspec\[draw\]'"):
        netspec.draw.get_pydot_graph(net(), "LR")
