"""Layer names used twice load as in Caffe's Net::Init (HED's deploy names five layers "crop"):
the net compiles and runs; pycaffe's dicts keep the last layer of a name (Caffe's layer_names_index_,
pycaffe's OrderedDicts); a caffemodel's layer fills the first layer of its name (CopyTrainedLayersFrom)
and round-trips; errors and `netspec shapes` tell the layers apart by their line."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import netspec
from netspec.cli import main
from netspec.errors import NetspecError
from netspec.formats.caffemodel import read_caffemodel
from netspec.frontend import load_net
from netspec.graph import compile_net

# HED-like: two side outputs, each upsampled and cropped to the data by a layer named "crop".
NET = """name: "hed_like"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "score" type: "Convolution" bottom: "conv1" top: "s1"
  convolution_param { num_output: 1 kernel_size: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "score" type: "Convolution" bottom: "pool1" top: "s2"
  convolution_param { num_output: 1 kernel_size: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "up" type: "Deconvolution" bottom: "s2" top: "u2"
  convolution_param { num_output: 1 kernel_size: 4 stride: 2 bias_term: false weight_filler { type: "bilinear" } } }
layer { name: "crop" type: "Crop" bottom: "s1" bottom: "data" top: "c1" }
layer { name: "crop" type: "Crop" bottom: "u2" bottom: "data" top: "c2" crop_param { offset: 1 } }
"""
CROP_LINES = (12, 13)
SCORE_LINES = (6, 8)


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "hed_like.prototxt"
    path.write_text(NET)
    return path


def test_compiles_and_runs_both_layers(net_file):
    net = compile_net(load_net(net_file), device_map="cpu", seed=1, source=str(net_file))
    assert [s.layer.name for s in net.steps].count("crop") == 2
    x = torch.randn(2, 3, 12, 12)
    blobs = net(data=x)
    assert blobs["c1"].shape == blobs["c2"].shape == (2, 1, 12, 12)
    torch.testing.assert_close(blobs["c1"], blobs["s1"])
    torch.testing.assert_close(blobs["c2"], blobs["u2"][:, :, 1:13, 1:13])
    scores = [s.layer for s in net.steps if s.layer.name == "score"]
    assert scores[0] is not scores[1] and scores[0].weight is not scores[1].weight
    assert len(net.learnable_params()) == 7   # conv1 2, score 2 + 2, up 1: no blob lost to the name
    assert {n for n, _ in net.named_parameters()} >= {"score.weight", "score_1.weight"}


def test_pycaffe_keeps_the_last_layer_of_a_name(net_file):
    net = netspec.Net(str(net_file), netspec.TEST)
    assert list(net._layer_names) == ["data", "conv1", "pool1", "score", "score", "up", "crop", "crop"]
    assert len(net.layers) == 8
    assert net.layer_dict["score"] is net.layers[4]
    assert net.params["score"][0].data.shape == (1, 4, 1, 1)
    assert net.params["score"][0].data is net.layers[4].blobs[0].data
    assert list(net.params) == ["conv1", "score", "up"]


def test_caffemodel_round_trip_and_copy_into_the_first_layer_of_a_name(net_file, tmp_path):
    net = netspec.Net(str(net_file), netspec.TEST)
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
    want = {k: v.copy() for k, v in net.forward(data=x).items()}
    first_score = net.layers[3].blobs[0].data.copy()
    path = tmp_path / "w.caffemodel"
    net.save(str(path))
    names = [lp.name for lp in read_caffemodel(path).layer]
    assert names == ["data", "conv1", "pool1", "score", "score", "up", "crop", "crop"]
    other = netspec.Net(str(net_file), str(path), netspec.TEST)
    # CopyTrainedLayersFrom matches the first layer of a name: the first "score" gets the weights
    np.testing.assert_array_equal(other.layers[3].blobs[0].data, first_score)
    got = other.forward(data=x)
    np.testing.assert_array_equal(got["c1"], want["c1"])


def test_errors_tell_same_named_layers_apart_by_line(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text(NET.replace("crop_param { offset: 1 }", "crop_param { offset: 3 }"))
    with pytest.raises(NetspecError) as e:
        compile_net(load_net(path), device_map="cpu", source=str(path))
    assert str(e.value).startswith(f"{path}:{CROP_LINES[1]}: layer 'crop': crop of axis 2 to size 12 at offset 3")


def test_shapes_lists_each_layer_with_its_line(net_file, capsys):
    assert main(["shapes", str(net_file)]) == 0
    out = capsys.readouterr().out
    for line, top in zip(CROP_LINES, ("c1", "c2")):
        assert re.search(rf"^crop \(line {line}\)\s+Crop\s+-\s+{top} 2.1.12.12\s+0$", out, re.M), out
    for line, top, n in zip(SCORE_LINES, ("s1 2.1.12.12", "s2 2.1.6.6"), (5, 5)):
        assert re.search(rf"^score \(line {line}\)\s+Convolution\s+-\s+{top}\s+{n}$", out, re.M), out
    assert re.search(r"^conv1\s+Convolution", out, re.M), out
    assert re.search(r"8 layers\s+138$", out, re.M), out   # 112 + 5 + 5 + 16: both scores counted


def test_drawing_gives_each_same_named_layer_its_node(net_file):
    from netspec.diagram import net_graph

    net = compile_net(load_net(net_file), device_map="cpu", source=str(net_file))
    layers = [n for n in net_graph(net).nodes if n.kind == "layer"]
    assert [n.lines[0] for n in layers] == ["data", "conv1", "pool1", "score", "score", "up", "crop", "crop"]
    assert len({n.id for n in layers}) == 8
    assert [n.lines[-1] for n in layers if n.lines[0] == "score"] == ["5 params", "5 params"]
