"""Im2col and SPP (netspec/layers/spatial.py): real Caffe's fixtures, the cases of Caffe's
test_im2col_layer.cpp and test_spp_layer.cpp, loop references and numerical gradients."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from gradcheck import check_gradients
from layer_runner import make_layer
from layers2_runner import mismatches
from netspec.errors import NetspecError


@pytest.mark.parametrize("name", ["im2col_k3", "spp_max_h2"])
def test_matches_caffe_fixture(name):
    assert mismatches(name) == []


# ---- Im2col ----------------------------------------------------------------------------------------

def _im2col_ref(x: np.ndarray, k, p, s, d) -> np.ndarray:
    """Caffe's im2col_nd_cpu as loops: row (c, k₁, k₂, ...), column (o₁, o₂, ...); padding reads 0."""
    n, c, *size = x.shape
    out = [(i + 2 * pp - (dd * (kk - 1) + 1)) // ss + 1 for i, kk, pp, ss, dd in zip(size, k, p, s, d)]
    top = np.zeros((n, c * math.prod(k), *out))
    for b, ch in itertools.product(range(n), range(c)):
        for r, offs in enumerate(itertools.product(*[range(kk) for kk in k])):
            for o in itertools.product(*[range(oo) for oo in out]):
                pos = [oi * ss - pp + oj * dd for oi, ss, pp, oj, dd in zip(o, s, p, offs, d)]
                inside = all(0 <= q < lim for q, lim in zip(pos, size))
                top[(b, ch * math.prod(k) + r) + o] = x[(b, ch) + tuple(pos)] if inside else 0.0
    return top


def test_im2col_setup_as_caffes_test():
    layer = make_layer('type: "Im2col" convolution_param { kernel_size: 3 stride: 2 dilation: 3 }', [(2, 3, 10, 11)])
    assert layer.top_shapes == [(2, 27, 2, 3)]


@pytest.mark.parametrize("text, row", [
    ("kernel_size: 3 stride: 2", lambda c: (c // 9, (c // 3) % 3, c % 3)),         # TestForward
    ("kernel_h: 5 kernel_w: 3 stride: 2", lambda c: (c // 15, (c // 3) % 5, c % 3)),  # TestRect
])
def test_im2col_top_left_block_as_caffes_test(text, row):
    x = torch.randn(2, 3, 6, 5)   # test_im2col_layer.cpp's bottom
    top = make_layer(f'type: "Im2col" convolution_param {{ {text} }}', [x.shape])(x)
    for c in range(top.shape[1]):
        assert top[0, c, 0, 0] == x[(0,) + row(c)]


@pytest.mark.parametrize("shape, text, k, p, s, d", [
    ((2, 3, 6, 7), "kernel_size: 3 pad: 1 stride: 2 dilation: 2", (3, 3), (1, 1), (2, 2), (2, 2)),
    ((1, 2, 5, 6), "kernel_h: 2 kernel_w: 3 pad_h: 1 pad_w: 0 stride_h: 1 stride_w: 2", (2, 3), (1, 0), (1, 2), (1, 1)),
    ((1, 2, 4, 5, 3), "kernel_size: 2 kernel_size: 3 kernel_size: 1 pad: 1 stride: 2", (2, 3, 1), (1,) * 3,
     (2,) * 3, (1,) * 3),
    ((2, 3, 7), "kernel_size: 3 dilation: 2 pad: 2", (3,), (2,), (1,), (2,)),
])
def test_im2col_matches_a_loop(shape, text, k, p, s, d):
    x = torch.randn(shape, dtype=torch.float64)
    layer = make_layer(f'type: "Im2col" convolution_param {{ {text} }}', [shape]).double()
    top = layer(x).numpy()
    assert top.shape == layer.top_shapes[0]
    np.testing.assert_array_equal(top, _im2col_ref(x.numpy(), k, p, s, d))


def test_im2col_axes_before_the_channel_axis_are_batch_axes():
    x = torch.randn(2, 2, 3, 5, 5, dtype=torch.float64)
    layer = make_layer('type: "Im2col" convolution_param { axis: 2 kernel_size: 2 stride: 2 }', [x.shape]).double()
    top = layer(x).numpy()
    assert top.shape == layer.top_shapes[0] == (2, 2, 12, 2, 2)
    want = _im2col_ref(x.numpy().reshape(4, 3, 5, 5), (2, 2), (0, 0), (2, 2), (1, 1))
    np.testing.assert_array_equal(top.reshape(4, 12, 2, 2), want)


def test_im2col_gradient():
    layer = make_layer('type: "Im2col" convolution_param { kernel_size: 3 stride: 2 dilation: 2 pad: 1 }',
                       [(1, 2, 5, 6)])
    check_gradients(layer, [torch.randn(1, 2, 5, 6)])


@pytest.mark.parametrize("text, shape, words", [
    ("", (1, 2, 5, 5), "kernel_size .* is required"),
    ("kernel_size: 6", (1, 2, 5, 5), "smaller than kernel"),
    ("kernel_size: 3 stride: 0", (1, 2, 5, 5), r"stride \(0, 0\) must be positive"),
    ("kernel_size: 3 kernel_size: 3 kernel_size: 3", (1, 2, 5, 5), "kernel_size has 3 values"),
])
def test_im2col_bad_parameters(text, shape, words):
    with pytest.raises(NetspecError, match=words):
        make_layer(f'type: "Im2col" convolution_param {{ {text} }}', [shape])


# ---- SPP -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, height, channels", [
    ((2, 3, 9, 8), 3, 63),          # TestSetup
    ((4, 3, 1024, 765), 5, 1023),   # TestEqualOutputDims
    ((10, 3, 7, 7), 3, 63),         # TestEqualOutputDims2
])
def test_spp_shapes_as_caffes_test(shape, height, channels):
    layer = make_layer(f'type: "SPP" spp_param {{ pyramid_height: {height} }}', [shape])
    assert layer.top_shapes == [(shape[0], channels)]


def _spp_ref(x: np.ndarray, height: int, ave: bool) -> np.ndarray:
    """Each level's bins by a loop over Caffe's pooling windows (kernel ceil(H/bins), pad
    (kernel·bins - H + 1) // 2, stride = kernel); AVE divides by the window clipped to the padded size."""
    n, c, h, w = x.shape
    levels = []
    for level in range(height):
        bins = 2 ** level
        kh, kw = math.ceil(h / bins), math.ceil(w / bins)
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        out = np.zeros((n, c, bins, bins))
        for i, j in itertools.product(range(bins), range(bins)):
            h0, w0 = i * kh - ph, j * kw - pw
            h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, w + pw)
            win = x[:, :, max(h0, 0):min(h1, h), max(w0, 0):min(w1, w)]
            out[:, :, i, j] = win.sum((2, 3)) / ((h1 - h0) * (w1 - w0)) if ave else win.max((2, 3))
        levels.append(out.reshape(n, -1))
    return np.concatenate(levels, 1)


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("size", [(7, 9), (8, 7), (8, 6)])
def test_spp_matches_a_loop(pool, size):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    layer = make_layer(f'type: "SPP" spp_param {{ pyramid_height: 3 pool: {pool} }}', [x.shape]).double()
    np.testing.assert_allclose(layer(x).numpy(), _spp_ref(x.numpy(), 3, pool == "AVE"), rtol=1e-12)


def test_spp_one_level_is_a_single_pooling():
    x = torch.randn(2, 3, 5, 4)
    layer = make_layer('type: "SPP" spp_param { pyramid_height: 1 }', [x.shape])
    assert layer.top_shapes == [(2, 3, 1, 1)]
    np.testing.assert_array_equal(layer(x).numpy(), x.numpy().max((2, 3), keepdims=True))


def test_spp_follows_a_new_bottom_size():
    layer = make_layer('type: "SPP" spp_param { pyramid_height: 2 }', [(1, 2, 6, 6)])
    x = torch.randn(1, 2, 9, 5, dtype=torch.float64)
    np.testing.assert_allclose(layer.double()(x).numpy(), _spp_ref(x.numpy(), 2, False))


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_spp_gradient(pool):
    layer = make_layer(f'type: "SPP" spp_param {{ pyramid_height: 2 pool: {pool} }}', [(1, 2, 5, 4)])
    check_gradients(layer, [torch.randn(1, 2, 5, 4)])


@pytest.mark.parametrize("text, shape, words", [
    ("", (1, 2, 5, 5), "pyramid_height must be given and at least 1"),
    ("spp_param { pyramid_height: 2 }", (2, 5, 5), "SPP needs 4 axes"),
    ("spp_param { pyramid_height: 3 }", (1, 2, 5, 5),
     r"pyramid level 2 \(4x4 bins\) of a 5x5 bottom needs pad \(2, 2\) not smaller than kernel \(2, 2\)"),
])
def test_spp_bad_parameters(text, shape, words):
    with pytest.raises(NetspecError, match=words):
        make_layer(f'type: "SPP" {text}', [shape])
