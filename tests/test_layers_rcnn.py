"""Faster R-CNN's layers (netspec/layers/rcnn.py): ROIPooling against a loop-by-loop numpy port of
the fork's forward (float32 bins, C's round), the fork's own gradient-test fixture, its backward's
rules (first maximum, regions that are malformed), SmoothL1Loss against numpy, and a Faster
R-CNN-style ROI head compiled from a prototxt."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gradcheck import check_gradients
from layer_runner import make_layer

import netspec
from netspec.errors import NetspecError


def roi_pool_ref(x, rois, ph_n, pw_n, scale):
    """The fork's ROIPoolingLayer::Forward_cpu, loop for loop, in float32."""
    f = np.float32
    _, c, h, w = x.shape
    top = np.zeros((len(rois), c, ph_n, pw_n), np.float32)
    for r, roi in enumerate(rois.astype(f)):
        def rnd(v):
            return int(math.copysign(math.floor(abs(float(v)) + 0.5), float(v)))
        x1, y1, x2, y2 = (rnd(roi[i] * f(scale)) for i in range(1, 5))
        bh, bw = f(max(y2 - y1 + 1, 1)) / f(ph_n), f(max(x2 - x1 + 1, 1)) / f(pw_n)
        for ph in range(ph_n):
            for pw in range(pw_n):
                hs = min(max(math.floor(f(ph) * bh) + y1, 0), h)
                he = min(max(math.ceil(f(ph + 1) * bh) + y1, 0), h)
                ws = min(max(math.floor(f(pw) * bw) + x1, 0), w)
                we = min(max(math.ceil(f(pw + 1) * bw) + x1, 0), w)
                if he > hs and we > ws:
                    top[r, :, ph, pw] = x[int(roi[0]), :, hs:he, ws:we].reshape(c, -1).max(1)
    return top


FORK_ROIS = [[0, 1, 1, 6, 6], [2, 6, 2, 7, 11], [1, 3, 1, 5, 10], [0, 3, 3, 3, 3]]  # test_roi_pooling_layer.cpp


def roi_layer(text, shapes):
    return make_layer(f'type: "ROIPooling" roi_pooling_param {{ {text} }}', shapes)


@pytest.mark.parametrize("pooled, scale, rois", [
    ((6, 6), 1.0, FORK_ROIS), ((2, 3), 0.5, [[0, 5, 3, 13, 21], [1, -3, -1, 30, 9], [3, 1, 1, 2, 2]]),
    ((3, 3), 0.0625, [[0, 8, 8, 120, 183], [2, 40, 0, 127, 40]]),
])
def test_roi_pooling_matches_the_forks_loops(pooled, scale, rois):
    x = np.random.default_rng(0).normal(0, 10, (4, 3, 12, 8)).astype(np.float32)
    rois = np.asarray(rois, np.float32)
    layer = roi_layer(f"pooled_h: {pooled[0]} pooled_w: {pooled[1]} spatial_scale: {scale}", [x.shape, rois.shape])
    got = layer(torch.from_numpy(x), torch.from_numpy(rois)).numpy()
    assert got.shape == layer.top_shapes[0] == (len(rois), 3) + pooled
    np.testing.assert_array_equal(got, roi_pool_ref(x, rois, *pooled, scale))


def test_roi_pooling_rounds_halves_away_from_zero_as_c():
    # x1 = 5 · 0.5 = 2.5 rounds to 3 (torch.round would give 2): the region is column 3 alone
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    top = roi_layer("pooled_h: 1 pooled_w: 1 spatial_scale: 0.5", [(1, 1, 4, 4), (1, 5)])(x, torch.tensor([[0, 5, 0, 6, 0]]))
    assert top.item() == 3.0


def test_roi_pooling_gradient_as_the_forks_test():
    x = torch.from_numpy(np.random.default_rng(1).normal(0, 10, (4, 1, 12, 8)))
    rois = torch.tensor(FORK_ROIS, dtype=torch.float64)
    layer = roi_layer("pooled_h: 6 pooled_w: 6", [tuple(x.shape), (4, 5)])
    assert check_gradients(layer, [x, rois], check=[0]) == 384


def test_roi_pooling_diff_goes_to_the_first_maximum_and_skips_empty_bins():
    x = torch.zeros(1, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    layer = roi_layer("pooled_h: 2 pooled_w: 2", [(1, 1, 4, 4), (2, 5)])
    # region 0: the whole map in 2×2 bins, all ties; region 1 starts at (2, 2) and runs past the map,
    # so its bins on row/column 4.. are empty (0, no diff)
    top = layer(x, torch.tensor([[0, 0, 0, 3, 3], [0, 2, 2, 7, 7]], dtype=torch.float64))
    top.backward(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[10.0, 20.0], [30.0, 40.0]]]], dtype=torch.float64))
    want = np.zeros((4, 4))
    want[0, 0], want[0, 2], want[2, 0], want[2, 2] = 1, 2, 3, 4 + 10
    np.testing.assert_array_equal(x.grad[0, 0].numpy(), want)
    assert top[1].detach().abs().sum() == 0


def test_roi_pooling_malformed_region_pools_one_cell_but_sends_no_diff():
    # x2 < x1: the fork pools the 1-wide region at x1, and its GPU backward finds x1 outside [x1, x2]
    x = torch.arange(16.0, dtype=torch.float64).reshape(1, 1, 4, 4).requires_grad_(True)
    top = roi_layer("pooled_h: 1 pooled_w: 1", [(1, 1, 4, 4), (1, 5)])(
        x, torch.tensor([[0, 2, 1, 1, 1]], dtype=torch.float64))
    assert top.item() == 6.0
    top.sum().backward()
    assert x.grad.abs().sum() == 0


@pytest.mark.parametrize("text, shapes, rois, message", [
    ("pooled_h: 0 pooled_w: 2", [(1, 1, 4, 4), (1, 5)], None, "pooled_h and pooled_w must be > 0"),
    ("pooled_h: 2 pooled_w: 2", [(1, 1, 4, 4), (1, 4)], None, "regions are R×5"),
    ("pooled_h: 2 pooled_w: 2", [(1, 1, 4, 4), (1, 5)], [[1, 0, 0, 1, 1]], "batch index 1, outside the 1 images"),
])
def test_roi_pooling_errors_are_one_line(text, shapes, rois, message):
    with pytest.raises(NetspecError, match=message) as e:
        layer = roi_layer(text, shapes)
        layer(torch.zeros(shapes[0]), torch.tensor(rois, dtype=torch.float32))
    assert "\n" not in str(e.value)


# ---- SmoothL1Loss ----------------------------------------------------------------------------------
def smooth_l1_ref(a, b, sigma, w_in=None, w_out=None):
    d = (a - b) * (1 if w_in is None else w_in)
    s2 = float(np.float32(sigma) * np.float32(sigma))  # the fork squares the float sigma in float
    err = np.where(np.abs(d) < 1 / s2, 0.5 * s2 * d * d, np.abs(d) - 0.5 / s2)
    return (err * (1 if w_out is None else w_out)).sum() / a.shape[0]


def test_smooth_l1_by_hand():
    layer = make_layer('type: "SmoothL1Loss"', [(1, 2), (1, 2)])
    loss = layer(torch.tensor([[0.5, -2.0]]), torch.zeros(1, 2))
    assert loss.shape == () and loss.item() == pytest.approx(0.125 + 1.5)
    assert layer.default_loss_weight == 1.0


@pytest.mark.parametrize("weights", [False, True])
def test_smooth_l1_matches_numpy_and_gradients_as_the_forks_test(weights):
    rng = np.random.default_rng(2)
    shapes = [(4, 6, 2, 2)] * (4 if weights else 2)
    bottoms = [torch.from_numpy(rng.normal(0, 1, s)) for s in shapes]
    if weights:
        bottoms[2], bottoms[3] = bottoms[2].abs(), bottoms[3].abs()
    layer = make_layer('type: "SmoothL1Loss" smooth_l1_loss_param { sigma: 2.4 }', shapes).double()
    got = layer(*bottoms).item()
    assert got == pytest.approx(smooth_l1_ref(*[b.numpy() for b in bottoms[:2]], np.float32(2.4),
                                              *[b.numpy() for b in bottoms[2:]]), rel=1e-12)
    assert check_gradients(layer, bottoms, check=[0, 1]) == 2 * 96
    ws = [b.clone().requires_grad_(True) for b in bottoms[2:]]
    layer(bottoms[0].clone().requires_grad_(True), bottoms[1], *ws).backward()
    assert all(w.grad is None or not w.grad.any() for w in ws), "the fork gives the weights no diff"


def test_smooth_l1_three_bottoms_is_one_line():
    with pytest.raises(NetspecError, match="inside and outside weights") as e:
        make_layer('type: "SmoothL1Loss"', [(2, 3)] * 3)
    assert "\n" not in str(e.value)


# ---- a Faster R-CNN-style ROI head ---------------------------------------------------------------
ROI_HEAD = """
name: "roi_head"
force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 32 dim: 32 } } }
layer { name: "rois" type: "Input" top: "rois" input_param { shape { dim: 3 dim: 5 } } }
layer { name: "labels" type: "Input" top: "labels" input_param { shape { dim: 3 } } }
layer { name: "targets" type: "Input" top: "bbox_targets" top: "bbox_inside_weights" top: "bbox_outside_weights"
  input_param { shape { dim: 3 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "roi_pool" type: "ROIPooling" bottom: "conv1" bottom: "rois" top: "roi_pool"
  roi_pooling_param { pooled_w: 3 pooled_h: 3 spatial_scale: 0.5 } }
layer { name: "fc" type: "InnerProduct" bottom: "roi_pool" top: "fc"
  inner_product_param { num_output: 8 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "cls_score" type: "InnerProduct" bottom: "fc" top: "cls_score"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "bbox_pred" type: "InnerProduct" bottom: "fc" top: "bbox_pred"
  inner_product_param { num_output: 8 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss_cls" type: "SoftmaxWithLoss" bottom: "cls_score" bottom: "labels" top: "loss_cls" }
layer { name: "loss_bbox" type: "SmoothL1Loss" bottom: "bbox_pred" bottom: "bbox_targets"
  bottom: "bbox_inside_weights" bottom: "bbox_outside_weights" top: "loss_bbox" loss_weight: 1 }
"""


def test_roi_head_compiles_runs_and_back_propagates(tmp_path):
    (tmp_path / "train.prototxt").write_text(ROI_HEAD)
    net = netspec.Net(str(tmp_path / "train.prototxt"), netspec.TRAIN)
    rng = np.random.default_rng(3)
    net.blobs["data"].data[...] = rng.uniform(-1, 1, (2, 3, 32, 32))
    net.blobs["rois"].data[...] = [[0, 0, 0, 31, 31], [1, 4, 6, 20, 27], [1, 10, 2, 13, 5]]
    net.blobs["labels"].data[...] = [1, 0, 1]
    net.blobs["bbox_targets"].data[...] = rng.normal(0, 1, (3, 8))
    net.blobs["bbox_inside_weights"].data[...] = np.repeat([[1], [0], [1]], 8, 1)
    net.blobs["bbox_outside_weights"].data[...] = 1.0
    out = net.forward()
    pooled = roi_pool_ref(net.blobs["conv1"].data, net.blobs["rois"].data, 3, 3, 0.5)
    np.testing.assert_allclose(net.blobs["roi_pool"].data, pooled, rtol=1e-6)
    b = net.blobs
    want = smooth_l1_ref(b["bbox_pred"].data.astype(np.float64), b["bbox_targets"].data, 1.0,
                         b["bbox_inside_weights"].data, b["bbox_outside_weights"].data)
    assert float(out["loss_bbox"]) == pytest.approx(want, rel=1e-5)
    net.backward()
    assert np.abs(net.params["conv1"][0].diff).sum() > 0 and np.abs(net.blobs["data"].diff).sum() > 0
    # region 1's bbox rows carry inside weight 0: bbox_pred's diff there is 0
    assert not net.blobs["bbox_pred"].diff[1].any() and net.blobs["bbox_pred"].diff[0].any()
