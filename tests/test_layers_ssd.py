"""SSD's layers (netspec/layers/ssd.py) against the expectations of SSD's own C++ tests
(weiliu89/caffe branch ssd: test_prior_box_layer.cpp, test_detection_output_layer.cpp, ported as
facts), float64 numpy references, gradient checks, an SSD-style head compiled from a prototxt, and
one-line errors for bad parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gradcheck import check_gradients
from layer_runner import make_layer

import netspec
from netspec.errors import NetspecError

S2 = math.sqrt(2.0)


# ---- Permute -----------------------------------------------------------------------------------
def test_permute_lists_the_unnamed_axes_after_the_named_ones():
    layer = make_layer('type: "Permute" permute_param { order: 0 order: 2 }', [(2, 3, 4, 5)])
    assert layer.order == (0, 2, 1, 3) and layer.top_shapes == [(2, 4, 3, 5)]
    x = torch.arange(120.0).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy().transpose(0, 2, 1, 3))


def test_permute_nhwc_gradient():
    layer = make_layer('type: "Permute" permute_param { order: 0 order: 2 order: 3 order: 1 }', [(2, 3, 2, 2)])
    assert check_gradients(layer, [torch.randn(2, 3, 2, 2)]) == 24


@pytest.mark.parametrize("orders, message", [("order: 4", "past the 4 axes"), ("order: 1 order: 1", "twice")])
def test_permute_bad_order_is_one_line(orders, message):
    with pytest.raises(NetspecError, match=message) as e:
        make_layer(f'type: "Permute" permute_param {{ {orders} }}', [(2, 3, 4, 5)])
    assert "\n" not in str(e.value)


# ---- PriorBox (test_prior_box_layer.cpp: feature 10×10, image 100×100, min_size 4, max_size 9) ----
def prior_box(params: str, feat=(10, 10, 10, 10), image=(10, 3, 100, 100)):
    layer = make_layer(f'type: "PriorBox" prior_box_param {{ {params} }}', [feat, image])
    top = layer(torch.zeros(feat), torch.zeros(image))
    assert tuple(top.shape) == layer.top_shapes[0]
    return layer, top[0, 0].double().numpy(), top[0, 1].double().numpy()


@pytest.mark.parametrize("params, priors", [
    ("min_size: 4 max_size: 9", 2), ("min_size: 4 min_size: 14 max_size: 9 max_size: 19", 4),
    ("min_size: 4", 1), ("min_size: 4 min_size: 14", 2),
    ("min_size: 4 max_size: 9 aspect_ratio: 1 aspect_ratio: 2 flip: false", 3),
    ("min_size: 4 max_size: 9 aspect_ratio: 2 aspect_ratio: 3 flip: false", 4),
    ("min_size: 4 max_size: 9 aspect_ratio: 2 aspect_ratio: 3", 6),
    ("min_size: 4 min_size: 14 max_size: 9 max_size: 19 aspect_ratio: 2 aspect_ratio: 3", 12),
])
def test_prior_box_counts_as_ssd_setup_tests(params, priors):
    layer, boxes, _ = prior_box(params)
    assert layer.top_shapes == [(1, 2, 100 * priors * 4)] and boxes.size == 100 * priors * 4


def test_prior_box_values_as_ssd_test_cpu_aspect_ratio():
    _, b, var = prior_box("min_size: 4 max_size: 9 aspect_ratio: 2")
    np.testing.assert_allclose(b[:16], [0.03, 0.03, 0.07, 0.07, 0.02, 0.02, 0.08, 0.08,
                                        0.05 - 0.02 * S2, 0.05 - 0.01 * S2, 0.05 + 0.02 * S2, 0.05 + 0.01 * S2,
                                        0.05 - 0.01 * S2, 0.05 - 0.02 * S2, 0.05 + 0.01 * S2, 0.05 + 0.02 * S2],
                               atol=1e-6)
    at = 4 * 10 * 4 * 4 + 4 * 4 * 4   # 5th row, 5th column
    np.testing.assert_allclose(b[at:at + 4], [0.43, 0.43, 0.47, 0.47], atol=1e-6)
    np.testing.assert_allclose(b[at + 8:at + 12], [0.45 - 0.02 * S2, 0.45 - 0.01 * S2,
                                                   0.45 + 0.02 * S2, 0.45 + 0.01 * S2], atol=1e-6)
    np.testing.assert_allclose(var, 0.1, atol=1e-6)


def test_prior_box_clip_and_second_size_as_ssd_multi_size():
    _, b, _ = prior_box("min_size: 4 min_size: 8 max_size: 9 max_size: 18 aspect_ratio: 2 clip: true")
    np.testing.assert_allclose(b[16:32], [0.01, 0.01, 0.09, 0.09, 0.0, 0.0, 0.11, 0.11,
                                          0.0, 0.05 - 0.04 / S2, 0.05 + 0.04 * S2, 0.05 + 0.04 / S2,
                                          0.05 - 0.04 / S2, 0.0, 0.05 + 0.04 / S2, 0.05 + 0.04 * S2], atol=1e-6)


def test_prior_box_fixed_step_and_image_size_as_ssd_fix_step():
    _, b, _ = prior_box("min_size: 4 max_size: 9 aspect_ratio: 2 img_size: 100 step: 10",
                        feat=(10, 10, 20, 10), image=(10, 3, 200, 100))
    at = 14 * 10 * 4 * 4 + 4 * 4 * 4   # 15th row, 5th column
    np.testing.assert_allclose(b[at:at + 4], [0.43, 1.43, 0.47, 1.47], atol=1e-6)
    np.testing.assert_allclose(b[at + 12:at + 16], [0.45 - 0.01 * S2, 1.45 - 0.02 * S2,
                                                    0.45 + 0.01 * S2, 1.45 + 0.02 * S2], atol=1e-6)


def test_prior_box_four_variances_repeat_per_box():
    _, _, var = prior_box("min_size: 4 variance: 0.1 variance: 0.2 variance: 0.3 variance: 0.4")
    np.testing.assert_allclose(var.reshape(-1, 4), np.tile([0.1, 0.2, 0.3, 0.4], (100, 1)), atol=1e-7)


@pytest.mark.parametrize("params, message", [
    ("", "needs min_size"), ("min_size: 4 max_size: 3", "larger than its min_size"),
    ("min_size: 4 variance: 0.1 variance: 0.2", "1 or 4 positive"),
    ("min_size: 4 img_size: 10 img_h: 5 img_w: 5", "either img_size or img_h/img_w"),
    ("min_size: 4 step: 0", "must be positive"),
])
def test_prior_box_bad_parameters_are_one_line(params, message):
    with pytest.raises(NetspecError, match=message) as e:
        make_layer(f'type: "PriorBox" prior_box_param {{ {params} }}', [(1, 2, 3, 3), (1, 3, 30, 30)])
    assert "\n" not in str(e.value)


# ---- Normalize ---------------------------------------------------------------------------------
def normalize_ref(x, scale, across_spatial, eps):
    rows = x.reshape(x.shape[0], x.shape[1], -1)
    axes = (1, 2) if across_spatial else (1,)
    norm = np.sqrt((rows ** 2).sum(axes, keepdims=True) + eps)
    return (rows / norm * np.reshape(scale, (1, -1, 1))).reshape(x.shape)


@pytest.mark.parametrize("across, shared", [(True, True), (False, True), (False, False), (True, False)])
def test_normalize_matches_numpy_and_its_gradient(across, shared):
    text = (f'type: "Normalize" norm_param {{ across_spatial: {str(across).lower()} '
            f'channel_shared: {str(shared).lower()} eps: 0.01 scale_filler {{ type: "constant" value: 20 }} }}')
    layer = make_layer(text, [(2, 3, 2, 2)])
    layer.fill(torch.Generator().manual_seed(0))
    assert tuple(layer.scale.shape) == (() if shared else (3,))
    with torch.no_grad():
        layer.scale.copy_(torch.tensor(20.0) if shared else torch.tensor([20.0, 10.0, 5.0]))
    x = torch.randn(2, 3, 2, 2, dtype=torch.float64)
    want = normalize_ref(x.numpy(), layer.scale.detach().double().numpy(), across, layer.eps)  # eps as float32
    np.testing.assert_allclose(layer.double()(x).detach().numpy(), want, rtol=1e-12)
    assert check_gradients(layer, [x]) == 24 + (1 if shared else 3)


def test_normalize_default_scale_is_one_and_eps_inside_the_root():
    layer = make_layer('type: "Normalize"', [(1, 2, 1, 1)])
    layer.fill(torch.Generator().manual_seed(0))
    y = layer(torch.tensor([[[[3.0]], [[4.0]]]]))
    np.testing.assert_allclose(y.detach().numpy().ravel(), [3 / math.sqrt(25 + 1e-10), 4 / math.sqrt(25 + 1e-10)])


# ---- DetectionOutput (test_detection_output_layer.cpp's fixture and expectations) -------------------
def ssd_fixture(share_location: bool):
    """SSD's test: 2 images, 4 priors (0.3 boxes on a 2×2 grid of step 0.5), 2 classes."""
    priors = []
    for h in range(2):
        for w in range(2):
            cx, cy = (w + 0.5) * 0.5, (h + 0.5) * 0.5
            priors.append([cx - 0.15, cy - 0.15, cx + 0.15, cy + 0.15])
    prior = np.stack([np.asarray(priors).ravel(), np.full(16, 0.1)])[None].repeat(2, 0)  # 2×2×16, as SSD's
    conf = np.asarray([[[j * 0.2 if i % 2 == c % 2 else 1 - j * 0.2 for c in range(2)] for j in range(4)]
                       for i in range(2)]).reshape(2, 8)
    loc_classes = 1 if share_location else 2
    loc = np.asarray([[[(1 if s % 2 == 0 else -1) * (i + c / 2 + 0.5) for s in (w, h, w, h)]
                       for h in range(2) for w in range(2) for c in range(loc_classes)] for i in range(2)])
    return [torch.tensor(a, dtype=torch.float32) for a in (loc.reshape(2, -1), conf, prior[..., None])]


SHARE = ["0 1 1.0 0.15 0.15 0.45 0.45", "0 1 0.8 0.55 0.15 0.85 0.45", "0 1 0.6 0.15 0.55 0.45 0.85",
         "0 1 0.4 0.55 0.55 0.85 0.85", "1 1 0.6 0.45 0.45 0.75 0.75", "1 1 0.0 0.25 0.25 0.55 0.55"]
NO_SHARE = ["0 0 0.6 0.55 0.55 0.85 0.85", "0 0 0.4 0.15 0.55 0.45 0.85", "0 0 0.2 0.55 0.15 0.85 0.45",
            "0 0 0.0 0.15 0.15 0.45 0.45", "0 1 1.0 0.20 0.20 0.50 0.50", "0 1 0.8 0.50 0.20 0.80 0.50",
            "0 1 0.6 0.20 0.50 0.50 0.80", "0 1 0.4 0.50 0.50 0.80 0.80", "1 0 1.0 0.25 0.25 0.55 0.55",
            "1 0 0.4 0.45 0.45 0.75 0.75", "1 1 0.6 0.40 0.40 0.70 0.70"]


@pytest.mark.parametrize("share, params, rows", [
    (True, "background_label_id: 0", SHARE),
    (True, "background_label_id: 0 top_k: 2", [SHARE[i] for i in (0, 1, 4)]),
    (False, "background_label_id: -1", NO_SHARE),
    (False, "background_label_id: -1 top_k: 2", [NO_SHARE[i] for i in (0, 1, 4, 5, 8, 10)]),
    (False, "background_label_id: 0", [NO_SHARE[i] for i in (4, 5, 6, 7, 10)]),
    (False, "background_label_id: 0 top_k: 2", [NO_SHARE[i] for i in (4, 5, 10)]),
])
def test_detection_output_rows_as_ssds_tests(share, params, rows):
    background, nms = params.split()[1], " ".join(params.split()[2:])  # top_k goes in nms_param
    bottoms = ssd_fixture(share)
    text = (f'type: "DetectionOutput" detection_output_param {{ num_classes: 2 share_location: '
            f'{str(share).lower()} background_label_id: {background} nms_param {{ nms_threshold: 0.1 {nms} }} }}')
    got = make_layer(text, [tuple(b.shape) for b in bottoms])(*bottoms)[0, 0].numpy()
    want = np.asarray([[float(v) for v in r.split()] for r in rows])
    assert got.shape == want.shape, f"{params}: {got.shape[0]} rows, SSD's test expects {want.shape[0]}"
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_detection_output_keep_top_k_and_threshold_and_nothing_found():
    bottoms = ssd_fixture(True)
    shapes = [tuple(b.shape) for b in bottoms]
    base = 'type: "DetectionOutput" detection_output_param { num_classes: 2 nms_param { nms_threshold: 0.1 } '
    top3 = make_layer(base + "keep_top_k: 3 }", shapes)(*bottoms)[0, 0].numpy()
    # per image: image 0's 4 survivors cut to its best 3, image 1's 2 kept
    np.testing.assert_allclose(top3, np.asarray([[float(v) for v in SHARE[i].split()] for i in (0, 1, 2, 4, 5)]),
                               atol=1e-6)
    above = make_layer(base + "confidence_threshold: 0.7 }", shapes)(*bottoms)[0, 0].numpy()
    np.testing.assert_allclose(above[:, 2], [1.0, 0.8], atol=1e-6)
    none = make_layer(base + "confidence_threshold: 1.5 }", shapes)(*bottoms)
    np.testing.assert_array_equal(none.numpy(), [[[[0, -1, -1, -1, -1, -1, -1], [1, -1, -1, -1, -1, -1, -1]]]])


def test_detection_output_center_size_decoding_by_hand():
    # one prior [0.2, 0.2, 0.6, 0.6] (centre 0.4, size 0.4), variances 0.1 0.1 0.2 0.2
    prior = torch.tensor([[[0.2, 0.2, 0.6, 0.6], [0.1, 0.1, 0.2, 0.2]]]).reshape(1, 2, 4)
    loc = torch.tensor([[1.0, -2.0, math.log(2.0) / 0.2, 0.0]])
    conf = torch.tensor([[0.1, 0.9]])
    layer = make_layer('type: "DetectionOutput" detection_output_param { num_classes: 2 code_type: CENTER_SIZE }',
                       [(1, 4), (1, 2), (1, 2, 4)])
    row = layer(loc, conf, prior)[0, 0, 0].numpy()
    cx, cy, w, h = 0.4 + 0.1 * 1 * 0.4, 0.4 - 0.1 * 2 * 0.4, 0.8, 0.4
    np.testing.assert_allclose(row, [0, 1, 0.9, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], atol=1e-6)


@pytest.mark.parametrize("params, shapes, message", [
    ("", [(1, 4), (1, 2), (1, 2, 4)], "needs num_classes"),
    ("num_classes: 3", [(1, 4), (1, 2), (1, 2, 4)], "1 priors need N×3"),
    ("num_classes: 2 nms_param { eta: 0 }", [(1, 4), (1, 2), (1, 2, 4)], "eta"),
    ("num_classes: 2 save_output_param { output_directory: 'out' }", [(1, 4), (1, 2), (1, 2, 4)],
     "writes no detection files"),
])
def test_detection_output_bad_parameters_are_one_line(params, shapes, message):
    with pytest.raises(NetspecError, match=message) as e:
        make_layer(f'type: "DetectionOutput" detection_output_param {{ {params} }}', shapes)
    assert "\n" not in str(e.value)


# ---- an SSD-style head, compiled from a prototxt -------------------------------------------------
SSD_HEAD = """
name: "ssd_head"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 32 dim: 32 } } }
layer { name: "feat" type: "Convolution" bottom: "data" top: "feat"
  convolution_param { num_output: 8 kernel_size: 3 stride: 8 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "feat_norm" type: "Normalize" bottom: "feat" top: "feat_norm"
  norm_param { across_spatial: false channel_shared: false scale_filler { type: "constant" value: 20 } } }
layer { name: "loc" type: "Convolution" bottom: "feat_norm" top: "loc"
  convolution_param { num_output: 12 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "loc_perm" type: "Permute" bottom: "loc" top: "loc_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "loc_flat" type: "Flatten" bottom: "loc_perm" top: "loc_flat" }
layer { name: "conf" type: "Convolution" bottom: "feat_norm" top: "conf"
  convolution_param { num_output: 9 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "conf_perm" type: "Permute" bottom: "conf" top: "conf_perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "conf_flat" type: "Flatten" bottom: "conf_perm" top: "conf_flat" }
layer { name: "prior" type: "PriorBox" bottom: "feat_norm" bottom: "data" top: "prior"
  prior_box_param { min_size: 8 max_size: 16 aspect_ratio: 2 flip: false clip: true variance: 0.1 variance: 0.1
                    variance: 0.2 variance: 0.2 } }
layer { name: "mbox_loc" type: "Concat" bottom: "loc_flat" top: "mbox_loc" concat_param { axis: 1 } }
layer { name: "mbox_conf" type: "Concat" bottom: "conf_flat" top: "mbox_conf" concat_param { axis: 1 } }
layer { name: "mbox_prior" type: "Concat" bottom: "prior" top: "mbox_prior" concat_param { axis: 2 } }
layer { name: "conf_reshape" type: "Reshape" bottom: "mbox_conf" top: "conf_reshape"
  reshape_param { shape { dim: 0 dim: -1 dim: 3 } } }
layer { name: "conf_softmax" type: "Softmax" bottom: "conf_reshape" top: "conf_softmax" softmax_param { axis: 2 } }
layer { name: "conf_flatten" type: "Flatten" bottom: "conf_softmax" top: "conf_flatten" }
layer { name: "detection_out" type: "DetectionOutput" bottom: "mbox_loc" bottom: "conf_flatten"
  bottom: "mbox_prior" top: "detection_out"
  detection_output_param { num_classes: 3 share_location: true background_label_id: 0
    nms_param { nms_threshold: 0.45 top_k: 400 } save_output_param { label_map_file: "labelmap.prototxt" }
    code_type: CENTER_SIZE keep_top_k: 20 confidence_threshold: 0.01 } }
"""


def _decode_center_size(prior, variance, loc):
    """float64 reference of SSD's CENTER_SIZE decoding."""
    size = prior[:, 2:] - prior[:, :2]
    centre = (prior[:, :2] + prior[:, 2:]) / 2 + variance[:, :2] * loc[:, :2] * size
    half = np.exp(variance[:, 2:] * loc[:, 2:]) * size / 2
    return np.concatenate([centre - half, centre + half], 1)


def _greedy_nms(boxes, scores, threshold, overlap, top_k):
    """float64 reference: best first (ties by index), drop a box overlapping a kept one by > overlap."""
    order = sorted((j for j in range(len(scores)) if scores[j] > threshold), key=lambda j: -scores[j])[:top_k]
    kept = []
    for j in order:
        ious = []
        for k in kept:
            w = min(boxes[j, 2], boxes[k, 2]) - max(boxes[j, 0], boxes[k, 0])
            h = min(boxes[j, 3], boxes[k, 3]) - max(boxes[j, 1], boxes[k, 1])
            area = [(b[2] - b[0]) * (b[3] - b[1]) for b in (boxes[j], boxes[k])]
            ious.append(w * h / (sum(area) - w * h) if w > 0 and h > 0 else 0.0)
        if all(iou <= overlap for iou in ious):
            kept.append(j)
    return kept


def test_ssd_head_compiles_and_detects_as_a_numpy_reference(tmp_path):
    (tmp_path / "deploy.prototxt").write_text(SSD_HEAD)
    net = netspec.Net(str(tmp_path / "deploy.prototxt"), netspec.TEST)
    net.blobs["data"].data[...] = np.random.default_rng(0).uniform(-1, 1, (2, 3, 32, 32))
    out = net.forward()["detection_out"]
    assert net.blobs["mbox_prior"].data.shape == (1, 2, 4 * 4 * 3 * 4)
    loc = net.blobs["mbox_loc"].data.reshape(2, -1, 4).astype(np.float64)
    conf = net.blobs["conf_flatten"].data.reshape(2, -1, 3).astype(np.float64)
    prior = net.blobs["mbox_prior"].data[0].reshape(2, -1, 4).astype(np.float64)
    want = []
    for i in range(2):   # per image: decode, NMS per class, the best 20 over classes, by class
        boxes = _decode_center_size(prior[0], prior[1], loc[i])
        rows = [(i, c, conf[i, j, c], *boxes[j]) for c in (1, 2)
                for j in _greedy_nms(boxes, conf[i, :, c], 0.01, 0.45, 400)]
        best = sorted(rows, key=lambda r: -r[2])[:20]
        want += sorted(best, key=lambda r: (r[1], -r[2]))
    assert len(want) > 2 and out.shape == (1, 1, len(want), 7)
    np.testing.assert_allclose(out[0, 0], np.asarray(want), rtol=1e-5, atol=1e-6)


def test_normalize_and_depthwise_weights_round_trip_through_a_caffemodel(tmp_path):
    """A channel-shared scale is a 0-axis blob: written without a shape, as Caffe's ToProto does."""
    from netspec.proto import pb
    (tmp_path / "net.prototxt").write_text(
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 dim: 5 dim: 5 } } }\n'
        'layer { name: "dw" type: "ConvolutionDepthwise" bottom: "data" top: "dw" convolution_param { kernel_size: 3 '
        'pad: 1 weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } } }\n'
        'layer { name: "n1" type: "Normalize" bottom: "dw" top: "n1" norm_param { scale_filler { type: "gaussian" } } }\n'
        'layer { name: "n2" type: "Normalize" bottom: "n1" top: "n2" norm_param { channel_shared: false '
        'across_spatial: false scale_filler { type: "gaussian" } } }\n')
    net = netspec.Net(str(tmp_path / "net.prototxt"), netspec.TEST)
    net.blobs["data"].data[...] = np.random.default_rng(0).uniform(size=(1, 4, 5, 5))
    want = net.forward()["n2"].copy()
    net.save(str(tmp_path / "w.caffemodel"))
    saved = {lp.name: lp.blobs for lp in pb.NetParameter.FromString((tmp_path / "w.caffemodel").read_bytes()).layer}
    assert not saved["n1"][0].HasField("shape") and len(saved["n1"][0].data) == 1
    assert [list(b.shape.dim) for b in saved["dw"]] == [[4, 1, 3, 3], [4]]
    again = netspec.Net(str(tmp_path / "net.prototxt"), netspec.TEST, weights=str(tmp_path / "w.caffemodel"))
    again.blobs["data"].data[...] = net.blobs["data"].data
    np.testing.assert_array_equal(again.forward()["n2"], want)


def test_prior_box_and_detection_output_have_no_backward_as_in_ssd():
    feat = torch.rand(1, 2, 3, 3, requires_grad=True)
    prior = make_layer('type: "PriorBox" prior_box_param { min_size: 4 }', [(1, 2, 3, 3), (1, 3, 12, 12)])
    assert prior(feat, torch.rand(1, 3, 12, 12)).grad_fn is None
    loc, conf = torch.rand(1, 4, requires_grad=True), torch.rand(1, 2, requires_grad=True)
    det = make_layer('type: "DetectionOutput" detection_output_param { num_classes: 2 }', [(1, 4), (1, 2), (1, 2, 4)])
    assert det(loc, conf, torch.tensor([[[0.1, 0.1, 0.5, 0.5], [0.1, 0.1, 0.2, 0.2]]]).reshape(1, 2, 4)).grad_fn is None
