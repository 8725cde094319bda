"""BatchReindex, Filter, Embed, Crop, Tile (netspec/layers/indexing.py) and Parameter
(netspec/layers/parameter.py): real Caffe's fixtures, the cases of Caffe's C++ layer tests, numerical
gradients, and bad input as one line naming the file:line and layer."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import netspec
from gradcheck import check_gradients
from layer_runner import make_layer
from layers2_runner import mismatches
from netspec.errors import NetspecError
from netspec.formats.caffemodel import read_weights


@pytest.mark.parametrize("name", ["batch_reindex", "filter", "embed", "crop_axis2_offset", "tile_axis1",
                                  "parameter"])
def test_matches_caffe_fixture(name):
    assert mismatches(name) == []


# ---- BatchReindex ----------------------------------------------------------------------------------

def test_batch_reindex_as_caffes_test():
    """test_batch_reindex_layer.cpp: bottom (5,4,3,2) holding 0..119, permutation {4,0,4,0,1,2}."""
    x = torch.arange(120, dtype=torch.float32).reshape(5, 4, 3, 2)
    perm = torch.tensor([4.0, 0, 4, 0, 1, 2])
    layer = make_layer('type: "BatchReindex"', [x.shape, perm.shape])
    assert layer.top_shapes == [(6, 4, 3, 2)]
    top = layer(x, perm).numpy().reshape(6, -1)
    for n, p in enumerate([4, 0, 4, 0, 1, 2]):
        np.testing.assert_array_equal(top[n], np.arange(24) + 24 * p)


def test_batch_reindex_gradient_sums_repeated_rows():
    perm = torch.tensor([4.0, 0, 4, 0, 1, 2])
    layer = make_layer('type: "BatchReindex"', [(5, 3), perm.shape])
    check_gradients(layer, [torch.randn(5, 3), perm], check=[0])


# ---- Filter ----------------------------------------------------------------------------------------

def test_filter_as_caffes_test():
    """test_filter_layer.cpp: selector {0, 1, 1, 0} forwards items 1 and 2 of data and labels."""
    data, labels = torch.randn(4, 3, 6, 4), torch.tensor([3.0, 1, 4, 2])
    sel = torch.tensor([0.0, 1, 1, 0])
    layer = make_layer('type: "Filter"', [data.shape, labels.shape, sel.shape], tops=2)
    assert layer.top_shapes == [(4, 3, 6, 4), (4,)]   # Caffe's first Reshape keeps the batch
    top_data, top_labels = layer(data, labels, sel)
    assert top_data.shape == (2, 3, 6, 4)
    np.testing.assert_array_equal(top_labels.numpy(), [1, 4])
    np.testing.assert_array_equal(top_data.numpy(), data.numpy()[[1, 2]])


def test_filter_gradient_is_zero_for_items_not_forwarded():
    sel = torch.tensor([0.0, 1, 1, 0])
    layer = make_layer('type: "Filter"', [(4, 3), (4, 1)])
    check_gradients(layer, [torch.randn(4, 3), sel.reshape(4, 1)], check=[0])
    x = torch.randn(4, 3, requires_grad=True)
    layer(x, sel.reshape(4, 1)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy()[:, 0], [0, 1, 1, 0])


def test_filter_selector_shape_is_checked():
    with pytest.raises(NetspecError, match=r"selector 'b1' has shape \(4, 2\); it must be"):
        make_layer('type: "Filter"', [(4, 3), (4, 2)])
    with pytest.raises(NetspecError, match="its first axis must be the selector's 5"):
        make_layer('type: "Filter"', [(4, 3), (5,)])


# ---- Embed -----------------------------------------------------------------------------------------

def test_embed_setup_as_caffes_test():
    layer = make_layer('type: "Embed" embed_param { num_output: 10 input_dim: 5 }', [(4, 1, 1, 1)])
    assert layer.top_shapes == [(4, 1, 1, 1, 10)]
    assert [tuple(b.shape) for b in layer.blobs] == [(5, 10), (10,)]


@pytest.mark.parametrize("bias", [False, True])
def test_embed_forward_as_caffes_test(bias):
    """test_embed_layer.cpp: each top row is the weight row of its id (plus the bias)."""
    text = (f'type: "Embed" embed_param {{ num_output: 10 input_dim: 10 bias_term: {str(bias).lower()} '
            'weight_filler { type: "uniform" min: -10 max: 10 } bias_filler { type: "uniform" min: -10 max: 10 } }')
    layer = make_layer(text, [(4, 1, 1, 1)])
    layer.fill(torch.Generator().manual_seed(1))
    assert len(layer.blobs) == (2 if bias else 1)
    ids = torch.tensor([3.0, 0, 9, 3]).reshape(4, 1, 1, 1)
    top = layer(ids).detach().numpy().reshape(4, 10)
    w = layer.weight.detach().numpy()
    want = w[[3, 0, 9, 3]] + (layer.bias.detach().numpy() if bias else 0)
    np.testing.assert_array_equal(top, want)


def test_embed_gradient_of_weight_and_bias():
    layer = make_layer('type: "Embed" embed_param { num_output: 3 input_dim: 4 '
                       'weight_filler { type: "gaussian" } }', [(2, 3)])
    layer.fill(torch.Generator().manual_seed(0))
    check_gradients(layer, [torch.tensor([[0.0, 3, 3], [1, 0, 2]])], check=[])


@pytest.mark.parametrize("text, words", [
    ("embed_param { input_dim: 5 }", "num_output must be given and positive"),
    ("embed_param { num_output: 5 }", "input_dim must be given and positive"),
])
def test_embed_bad_parameters(text, words):
    with pytest.raises(NetspecError, match=words):
        make_layer(f'type: "Embed" {text}', [(2,)])


# ---- Crop ------------------------------------------------------------------------------------------

def test_crop_setup_shapes_as_caffes_test():
    """test_crop_layer.cpp: bottoms (2,4,5,4) and (2,3,4,2)."""
    a, b = (2, 4, 5, 4), (2, 3, 4, 2)
    assert make_layer('type: "Crop" crop_param { axis: 0 }', [a, b]).top_shapes == [b]
    assert make_layer('type: "Crop"', [a, b]).top_shapes == [(2, 4, 4, 2)]
    assert make_layer('type: "Crop" crop_param { axis: -1 }', [a, b]).top_shapes == [(2, 4, 5, 2)]
    # TestDimensionsCheck: a size blob of other sizes on the uncropped axes
    assert make_layer('type: "Crop"', [a, (2, 5, 4, 2)]).top_shapes == [(2, 4, 4, 2)]


@pytest.mark.parametrize("text, a, b, starts", [
    ("crop_param { axis: 0 }", (2, 4, 5, 4), (2, 3, 4, 2), (0, 0, 0, 0)),                          # TestCropAll
    ("crop_param { axis: 0 offset: 0 offset: 1 offset: 1 offset: 2 }", (2, 4, 5, 4), (2, 3, 4, 2),
     (0, 1, 1, 2)),                                                                                   # ...Offset
    ("crop_param { axis: 2 offset: 1 offset: 2 }", (2, 4, 5, 4), (2, 3, 4, 2), (0, 0, 1, 2)),      # TestCropHW
    ("crop_param { axis: 2 offset: 1 offset: 2 offset: 0 }", (2, 4, 5, 4, 5), (2, 4, 3, 2, 5),
     (0, 0, 1, 2, 0)),                                                                                # TestCrop5D
])
def test_crop_forward_as_caffes_test(text, a, b, starts):
    x = torch.randn(a)
    layer = make_layer(f'type: "Crop" {text}', [a, b])
    top = layer(x, torch.zeros(b)).numpy()
    axis = layer.axis
    want_shape = a[:axis] + b[axis:]
    index = tuple(slice(s, s + n) for s, n in zip(starts, want_shape))
    np.testing.assert_array_equal(top, x.numpy()[index])


def test_crop_gradient_reaches_only_the_cropped_bottom():
    layer = make_layer('type: "Crop" crop_param { offset: 1 }', [(2, 2, 4, 4), (1, 1, 2, 3)])
    check_gradients(layer, [torch.randn(2, 2, 4, 4), torch.randn(1, 1, 2, 3)], check=[0])
    ref = torch.randn(1, 1, 2, 3, requires_grad=True)
    layer(torch.randn(2, 2, 4, 4, requires_grad=True), ref).sum().backward()
    assert ref.grad is None


@pytest.mark.parametrize("text, b, words", [
    ("crop_param { offset: 2 }", (2, 3, 3, 2), r"crop of axis 2 to size 3 at offset 2 goes past bottom 'b0'"),
    ("crop_param { offset: 1 offset: 1 offset: 1 }", (2, 3, 2, 2), "3 offsets for the 2 axes from axis 2"),
    ("crop_param { axis: 4 }", (2, 3, 2, 2), "axis 4 is out of range"),
])
def test_crop_bad_parameters(text, b, words):
    with pytest.raises(NetspecError, match=words):
        make_layer(f'type: "Crop" {text}', [(2, 4, 4, 4), b])


# ---- Tile ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_tile_as_caffes_test(axis):
    """test_tile_layer.cpp: top[.., t·d + i, ..] = bottom[.., i, ..] for each of `tiles` copies."""
    x = torch.randn(2, 3, 4, 5)
    layer = make_layer(f'type: "Tile" tile_param {{ axis: {axis} tiles: 3 }}', [x.shape])
    top = layer(x).numpy()
    d = x.shape[axis]
    assert top.shape == layer.top_shapes[0] and top.shape[axis] == 3 * d
    for t in range(3):
        np.testing.assert_array_equal(np.take(top, range(t * d, (t + 1) * d), axis=axis), x.numpy())


def test_tile_gradient():
    check_gradients(make_layer('type: "Tile" tile_param { tiles: 3 }', [(2, 3, 2)]), [torch.randn(2, 3, 2)])


@pytest.mark.parametrize("text", ["", "tile_param { tiles: 0 }", "tile_param { tiles: -2 }"])
def test_tile_needs_positive_tiles(text):
    with pytest.raises(NetspecError, match="layer 'test': tile_param tiles must be given and positive"):
        make_layer(f'type: "Tile" {text}', [(2, 3)])


# ---- Parameter -------------------------------------------------------------------------------------

def test_parameter_top_is_its_blob_and_learns():
    layer = make_layer('type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }', [])
    layer.fill(torch.Generator().manual_seed(0))
    assert layer.top_shapes == [(2, 3)] and float(layer.value.detach().abs().sum()) == 0   # Caffe: no filler, zeros
    with torch.no_grad():
        layer.value.copy_(torch.arange(6.0).reshape(2, 3))
    top = layer()
    np.testing.assert_array_equal(top.detach().numpy(), np.arange(6.0).reshape(2, 3))
    (top * 2).sum().backward()
    np.testing.assert_array_equal(layer.value.grad.numpy(), np.full((2, 3), 2.0))
    check_gradients(layer, [])


# ---- errors found in the data, at the layer's file:line ------------------------------------------

NET = """name: "bad"
layer { name: "x" type: "Input" top: "x" top: "ids" top: "sel" input_param { shape { dim: 4 dim: 2 } shape { dim: 4 } shape { dim: 4 } } }
layer { name: "embed" type: "Embed" bottom: "ids" top: "e" embed_param { input_dim: 3 num_output: 2 } }
layer { name: "filter" type: "Filter" bottom: "x" bottom: "sel" top: "xf" }
layer { name: "reindex" type: "BatchReindex" bottom: "x" bottom: "ids" top: "xr" }
"""


@pytest.mark.parametrize("ids, sel, line, layer, words", [
    ([0, 1, 3, 2], [0, 1, 1, 0], 3, "embed", r"id \(bottom 'ids', input_dim 3\) 3 at position 2 is out of range \[0, 3\)"),
    ([0, 1, -1, 2], [0, 1, 1, 0], 3, "embed", "id .* -1 at position 2 is out of range"),
    ([0, 1, 2, 2], [0, 1, 2, 0], 4, "filter", "selector 'sel' holds 2 at item 2; it must be 0 or 1"),
    ([0, 1, 2, 2], [0, 0.5, 1, 0], 4, "filter", "selector 'sel' holds 0.5 at item 1"),
])
def test_bad_indices_name_the_file_line_and_layer(tmp_path, ids, sel, line, layer, words):
    path = tmp_path / "bad.prototxt"
    path.write_text(NET)
    net = netspec.Net(str(path), netspec.TEST)
    with pytest.raises(NetspecError) as e:
        net.forward(x=np.zeros((4, 2)), ids=np.array(ids, float), sel=np.array(sel, float))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}:{line}: layer '{layer}': "), msg
    assert re.search(words, msg), msg


def test_batch_reindex_index_past_the_batch_is_an_error(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text(NET.replace('bottom: "ids" top: "e" embed_param { input_dim: 3', 'bottom: "ids" top: "e" '
                                'embed_param { input_dim: 9'))
    net = netspec.Net(str(path), netspec.TEST)
    with pytest.raises(NetspecError, match=rf"^{path}:5: layer 'reindex': index \(bottom 'ids'\) 4 at position 3 "
                                           r"is out of range \[0, 4\)$"):
        net.forward(x=np.zeros((4, 2)), ids=np.array([0, 1, 2, 4.0]), sel=np.ones(4))


def test_parameter_blob_is_learned_by_the_solver_and_snapshotted(tmp_path, monkeypatch):
    """SGD on ½N⁻¹Σ(p - 3)² (EuclideanLoss, N = 2) from p = 0: p_k = 3·(1 - (1 - lr/N)^k) exactly."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "net.prototxt").write_text(
        'layer { name: "p" type: "Parameter" top: "p" parameter_param { shape { dim: 2 dim: 3 } } }\n'
        'layer { name: "t" type: "DummyData" top: "t" dummy_data_param { shape { dim: 2 dim: 3 } '
        'data_filler { type: "constant" value: 3 } } }\n'
        'layer { name: "loss" type: "EuclideanLoss" bottom: "p" bottom: "t" top: "loss" }\n')
    (tmp_path / "solver.prototxt").write_text('net: "net.prototxt" base_lr: 0.1 lr_policy: "fixed" max_iter: 5 '
                                              'snapshot_prefix: "p" random_seed: 1 solver_mode: CPU\n')
    solver = netspec.get_solver("solver.prototxt")
    solver.step(5)
    want = 3 * (1 - (1 - 0.1 / 2) ** 5)
    np.testing.assert_allclose(solver.net.params["p"][0].data, np.full((2, 3), want), rtol=1e-6)
    solver.snapshot()
    np.testing.assert_allclose(read_weights(tmp_path / "p_iter_5.caffemodel")["p"][1][0], np.full((2, 3), want),
                               rtol=1e-6)
