"""Pooling against Caffe's pooling loops written out in numpy (netspec/layers/pooling.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from layer_runner import make_layer
from netspec.errors import NetspecError
from netspec.proto import pb


FLT_MAX = float(np.finfo(np.float32).max)  # Caffe's MAX starts every window at -FLT_MAX


def out_size(size, k, s, p, ceil=True):
    out = (math.ceil if ceil else math.floor)((size + 2 * p - k) / s) + 1
    return out - 1 if p and (out - 1) * s >= size + p else out


def pool_ref(x, method, k, s, p, ceil=True):
    """Caffe's Forward_cpu loops: MAX over the window clipped to the image; AVE sums the clipped
    window and divides by the window clipped to [-p, size + p)."""
    n, c, h, w = x.shape
    oh, ow = out_size(h, k[0], s[0], p[0], ceil), out_size(w, k[1], s[1], p[1], ceil)
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s[0] - p[0], j * s[1] - p[1]
            he, we = min(hs + k[0], h + p[0]), min(ws + k[1], w + p[1])
            pool_size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, :, hs:he, ws:we]
            if method == "MAX":
                out[:, :, i, j] = win.max(axis=(2, 3), initial=-FLT_MAX)
            else:
                with np.errstate(divide="ignore", invalid="ignore"):  # Caffe's 0/0 on empty windows
                    out[:, :, i, j] = win.sum(axis=(2, 3)) / pool_size
    return out


CASES = [  # (H, W), kernel, stride, pad: chosen so ceil mode, the pad rule and clipping all matter
    ((16, 16), (3, 3), (2, 2), (0, 0)),
    ((8, 8), (3, 3), (2, 2), (1, 1)),
    ((7, 6), (3, 2), (2, 2), (1, 1)),
    ((6, 6), (2, 2), (2, 2), (1, 1)),
    ((5, 9), (3, 4), (3, 2), (2, 1)),
    ((5, 5), (2, 2), (2, 2), (0, 0)),
]


def _param(k, s, p, extra=""):
    return (
        f"kernel_h: {k[0]} kernel_w: {k[1]} stride_h: {s[0]} stride_w: {s[1]} "
        f"pad_h: {p[0]} pad_w: {p[1]} {extra}"
    )


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("size, k, s, p", CASES)
def test_pooling_matches_caffe_loops(method, size, k, s, p):
    x = np.random.default_rng(0).normal(size=(2, 3) + size).astype(np.float32)
    layer = make_layer(f'type: "Pooling" pooling_param {{ pool: {method} {_param(k, s, p)} }}', [x.shape])
    got = layer(torch.from_numpy(x)).numpy()
    want = pool_ref(x.astype(np.float64), method, k, s, p)
    assert got.shape == want.shape == layer.top_shapes[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("size, k, s, p", CASES)
def test_explicit_padding_path_matches_caffe_loops(method, size, k, s, p):
    """The fallback used where torch's own padding/ceil_mode would differ, on every case."""
    x = np.random.default_rng(0).normal(size=(2, 3) + size)
    layer = make_layer(f'type: "Pooling" pooling_param {{ pool: {method} {_param(k, s, p)} }}', [x.shape])
    out = layer.top_shapes[0][2:]
    explicit = layer._max_explicit if method == "MAX" else layer._ave_explicit
    np.testing.assert_allclose(
        explicit(torch.from_numpy(x), out).numpy(), pool_ref(x, method, k, s, p), rtol=1e-12
    )


def test_sweep_of_small_configurations_matches_caffe_loops():
    """Every size 1..7, kernel 1..4, stride 1..4, pad < kernel, both round modes, including Caffe's
    odd corners: windows wholly past the image (MAX gives -FLT_MAX, AVE 0/0 or -0)."""
    checked = 0
    for size, k, s, p, method, mode in itertools.product(
        range(1, 8), range(1, 5), range(1, 5), range(4), ["MAX", "AVE"], ["CEIL", "FLOOR"]
    ):
        if p >= k or size + 2 * p < k:
            continue
        x = torch.randn(1, 1, size, size + 1, dtype=torch.float64)
        layer = make_layer(
            f'type: "Pooling" pooling_param {{ pool: {method} kernel_size: {k} stride: {s} pad: {p} '
            f"round_mode: {mode} }}",
            [x.shape],
        )
        want = pool_ref(x.numpy(), method, (k, k), (s, s), (p, p), ceil=mode == "CEIL")
        got = layer(x).numpy()
        assert got.shape == want.shape, (size, k, s, p, method, mode)
        assert np.allclose(got, want, rtol=1e-12, equal_nan=True), (size, k, s, p, method, mode)
        checked += 1
    assert checked > 500


def test_caffe_output_size_differs_from_floor():
    layer = make_layer(
        'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 }', [(1, 1, 16, 16)]
    )
    assert layer.top_shapes == [(1, 1, 8, 8)]  # ceil(13/2)+1 = 8; torch's default floor gives 7
    layer = make_layer(
        'type: "Pooling" pooling_param { pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR }',
        [(1, 1, 16, 16)],
    )
    assert layer.top_shapes == [(1, 1, 7, 7)]
    x = torch.randn(1, 1, 16, 16)
    np.testing.assert_allclose(
        layer(x).numpy(), pool_ref(x.double().numpy(), "MAX", (3, 3), (2, 2), (0, 0), ceil=False), rtol=1e-6
    )


def test_global_pooling():
    x = torch.randn(2, 3, 5, 4)
    ave = make_layer('type: "Pooling" pooling_param { pool: AVE global_pooling: true }', [x.shape])
    mx = make_layer('type: "Pooling" pooling_param { pool: MAX global_pooling: true }', [x.shape])
    assert torch.allclose(ave(x), x.mean(dim=(2, 3), keepdim=True), atol=1e-6)
    assert torch.equal(mx(x), x.amax(dim=(2, 3), keepdim=True))


def test_max_mask_top_holds_flat_indices():
    x = torch.randn(1, 2, 5, 5)
    layer = make_layer(
        'type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 pad: 1 }', [x.shape], tops=2
    )
    top, mask = layer(x)
    flat = x.reshape(1, 2, 25)
    assert torch.equal(flat.gather(2, mask.long().reshape(1, 2, -1)).reshape(top.shape), top)


def test_max_gradient_goes_to_one_element_per_window():
    x = torch.tensor([[[[1.0, 3.0, 3.0], [0.0, 2.0, 1.0], [5.0, 0.0, 0.0]]]], requires_grad=True)
    layer = make_layer('type: "Pooling" pooling_param { pool: MAX kernel_size: 2 stride: 2 }', [x.shape])
    y = layer(x)
    assert y.tolist() == [[[[3.0, 3.0], [5.0, 0.0]]]]
    y.sum().backward()
    # Ties go to the first maximum in scan order, as Caffe's strict '>' does.
    assert x.grad.tolist() == [[[[0, 1, 1], [0, 0, 0], [1, 0, 1]]]]


def test_stochastic_test_phase_is_the_weighted_mean():
    x = torch.rand(1, 2, 4, 4)
    layer = make_layer(
        'type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 }', [x.shape]
    )
    win = x.reshape(1, 2, 2, 2, 2, 2).permute(0, 1, 2, 4, 3, 5).reshape(1, 2, 2, 2, 4)
    assert torch.allclose(layer(x), (win**2).sum(-1) / win.sum(-1), atol=1e-6)


def test_stochastic_train_picks_a_window_element():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 6, 6, requires_grad=True)
    layer = make_layer(
        'type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 3 stride: 3 }',
        [x.shape],
        phase=pb.TRAIN,
    )
    y = layer(x)
    win = x.detach().reshape(2, 3, 2, 3, 2, 3).permute(0, 1, 2, 4, 3, 5).reshape(2, 3, 2, 2, 9)
    assert ((win == y.detach().unsqueeze(-1)).any(-1)).all()
    y.sum().backward()
    assert x.grad.sum() == y.numel() and set(x.grad.unique().tolist()) <= {0.0, 1.0}


def test_stochastic_train_follows_the_values():
    """An element holding 90% of its window's sum is picked about 90% of the time."""
    torch.manual_seed(1)
    x = torch.tensor([0.9, 0.05, 0.05, 0.0]).reshape(1, 1, 2, 2).repeat(4000, 1, 1, 1)
    layer = make_layer(
        'type: "Pooling" pooling_param { pool: STOCHASTIC kernel_size: 2 }', [x.shape], phase=pb.TRAIN
    )
    frac = (layer(x) == 0.9).float().mean().item()
    assert 0.87 < frac < 0.93, frac


@pytest.mark.parametrize(
    "param, message",
    [
        ("pool: MAX kernel_size: 2 pad: 2", "pad"),
        ("pool: STOCHASTIC kernel_size: 3 pad: 1", "only for MAX and AVE"),
        ("pool: AVE global_pooling: true kernel_size: 2", "global_pooling"),
        ("pool: MAX stride: 2", "kernel_size"),
        ("pool: MAX kernel_size: 2 kernel_h: 3 kernel_w: 3", "not both"),
    ],
)
def test_bad_parameters(param, message):
    with pytest.raises(NetspecError, match=message):
        make_layer(f'type: "Pooling" pooling_param {{ {param} }}', [(1, 1, 8, 8)])


def test_needs_four_axes():
    with pytest.raises(NetspecError, match=r"\(2, 8\).*4 axes"):
        make_layer('type: "Pooling" pooling_param { kernel_size: 2 }', [(2, 8)])


def test_global_pooling_follows_a_new_bottom_size():
    layer = make_layer('type: "Pooling" pooling_param { pool: AVE global_pooling: true }', [(1, 2, 4, 4)])
    x = torch.randn(3, 2, 6, 5)
    assert layer.infer_top_shapes([x.shape]) == [(3, 2, 1, 1)]
    assert torch.allclose(layer(x), x.mean(dim=(2, 3), keepdim=True), atol=1e-6)


@pytest.mark.parametrize("k, s, p", [(2, 2, 0), (3, 2, 0), (3, 2, 1), (3, 1, 1)])
def test_max_with_gradient_on_large_cpu_blobs_routes_ties_as_caffe(k, s, p):
    """Blobs of 64K values or more take the channels-last forward + NCHW backward pair
    (_MaxPoolChannelsLast); its values and gradients equal Caffe's loops and first-maximum routing,
    on integer values full of ties."""
    from netspec.layers.pooling import _MaxPoolChannelsLast

    x = torch.randint(0, 4, (4, 8, 47, 45)).float().requires_grad_()
    assert x.numel() >= 1 << 16
    layer = make_layer(f'type: "Pooling" pooling_param {{ pool: MAX {_param((k, k), (s, s), (p, p))} }}', [x.shape])
    y = layer(x)
    assert y.grad_fn._forward_cls is _MaxPoolChannelsLast
    np.testing.assert_array_equal(y.detach().numpy(), pool_ref(x.detach().numpy(), "MAX", (k, k), (s, s), (p, p)))
    weights = torch.arange(y.numel(), dtype=torch.float32).reshape(y.shape)
    y.backward(weights)
    # Caffe's backward: each window's weight to the first maximum in scan order (strict '>')
    want = np.zeros(x.shape, np.float32)
    xs, ws = x.detach().numpy(), weights.numpy()
    for i in range(y.shape[2]):
        for j in range(y.shape[3]):
            hs, he = max(i * s - p, 0), min(i * s - p + k, x.shape[2])
            vs, ve = max(j * s - p, 0), min(j * s - p + k, x.shape[3])
            win = xs[:, :, hs:he, vs:ve].reshape(x.shape[0], x.shape[1], -1)
            first = win.argmax(axis=2)          # numpy's argmax: the first maximum in scan order
            hh, vv = hs + first // (ve - vs), vs + first % (ve - vs)
            for n in range(x.shape[0]):
                np.add.at(want[n], (np.arange(x.shape[1]), hh[n], vv[n]), ws[n, :, i, j])
    np.testing.assert_array_equal(x.grad.numpy(), want)
