"""Convolution and Deconvolution against loop-by-loop numpy references (netspec/layers/conv.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layer_runner import make_layer
from netspec.errors import ShapeError


def conv_ref(x, w, b, stride, pad, dilation, group):
    """Caffe's convolution written out: top[n, o, y, x] = Σ bottom · weight over the group's channels."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (wd + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph : ph + h, pw : pw + wd] = x
    out = np.zeros((n, o, oh, ow))
    og = o // group
    for oc in range(o):
        g = oc // og
        for i in range(oh):
            for j in range(ow):
                patch = xp[
                    :,
                    g * cg : (g + 1) * cg,
                    i * sh : i * sh + dh * (kh - 1) + 1 : dh,
                    j * sw : j * sw + dw * (kw - 1) + 1 : dw,
                ]
                out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3)) + (b[oc] if b is not None else 0)
    return out


def _run(text, x, seed=0):
    layer = make_layer(text, [x.shape])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.blobs:
            p.copy_(torch.randn(p.shape, generator=g))
    return layer, layer(torch.from_numpy(x)).detach().numpy()


CASES = [
    ("num_output: 3 kernel_size: 3", (1, 1), (0, 0), (1, 1), 1),
    ("num_output: 4 kernel_size: 3 stride: 2 pad: 1", (2, 2), (1, 1), (1, 1), 1),
    ("num_output: 4 kernel_size: 3 pad: 2 dilation: 2 group: 2", (1, 1), (2, 2), (2, 2), 2),
    (
        "num_output: 2 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
        (2, 1),
        (1, 0),
        (1, 1),
        1,
    ),
    (
        "num_output: 2 kernel_size: 3 kernel_size: 2 stride: 1 stride: 2 pad: 0 pad: 1",
        (1, 2),
        (0, 1),
        (1, 1),
        1,
    ),
]


@pytest.mark.parametrize("param, stride, pad, dilation, group", CASES)
def test_convolution_matches_reference(param, stride, pad, dilation, group):
    x = np.random.default_rng(1).normal(size=(2, 4, 7, 6)).astype(np.float32)
    layer, got = _run(f'type: "Convolution" convolution_param {{ {param} }}', x)
    w, b = (p.detach().numpy().astype(np.float64) for p in layer.blobs)
    want = conv_ref(x.astype(np.float64), w, b, stride, pad, dilation, group)
    assert got.shape == want.shape == layer.top_shapes[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_blob_shapes_and_no_bias():
    layer = make_layer(
        'type: "Convolution" convolution_param { num_output: 6 kernel_size: 3 group: 2 }', [(1, 4, 5, 5)]
    )
    assert [tuple(p.shape) for p in layer.blobs] == [(6, 2, 3, 3), (6,)]
    layer = make_layer(
        'type: "Convolution" convolution_param { num_output: 6 kernel_size: 1 bias_term: false }',
        [(1, 4, 5, 5)],
    )
    assert layer.blob_names == ("weight",) and tuple(layer.weight.shape) == (6, 4, 1, 1)


def test_group_must_divide_channels():
    with pytest.raises(
        ShapeError, match=r"layer 'test'.*\(1, 96, 27, 27\).*group 5 does not divide channels 96"
    ):
        make_layer(
            'type: "Convolution" convolution_param { num_output: 10 kernel_size: 3 group: 5 }',
            [(1, 96, 27, 27)],
        )


def test_one_and_three_spatial_axes():
    layer = make_layer(
        'type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 stride: 2 }', [(2, 3, 9)]
    )
    assert layer.top_shapes == [(2, 2, 4)]
    assert tuple(layer(torch.zeros(2, 3, 9)).shape) == (2, 2, 4)
    layer = make_layer(
        'type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 pad: 1 }', [(1, 3, 4, 5, 6)]
    )
    assert layer.top_shapes == [(1, 2, 4, 5, 6)]


def test_axis_two_flattens_leading_axes():
    """With axis 2 the first two axes are both 'num': each (a, b) item is convolved alone."""
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 6, 6)).astype(np.float32)
    layer, got = _run('type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 axis: 2 }', x)
    w, b = (p.detach().numpy().astype(np.float64) for p in layer.blobs)
    want = conv_ref(x.reshape(6, 4, 6, 6), w, b, (1, 1), (0, 0), (1, 1), 1).reshape(2, 3, 2, 4, 4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_deconvolution_is_the_transpose_of_convolution():
    """<deconv(x), y> = <x, conv(y)> with the same weights: Caffe's deconv is conv's backward."""
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    deconv = make_layer(
        'type: "Deconvolution" convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 '
        "group: 2 bias_term: false }",
        [x.shape],
    ).double()
    assert deconv.top_shapes == [(1, 6, 10, 10)] and tuple(deconv.weight.shape) == (4, 3, 4, 4)
    conv = make_layer(
        'type: "Convolution" convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 '
        "group: 2 bias_term: false }",
        [(1, 6, 10, 10)],
    ).double()
    with torch.no_grad():
        deconv.weight.normal_()
        conv.weight.copy_(deconv.weight)
        y = torch.randn(1, 6, 10, 10, dtype=torch.float64)
        lhs, rhs = (deconv(x) * y).sum(), (x * conv(y)).sum()
    assert torch.allclose(lhs, rhs), (lhs, rhs)


def _group_device_case(devices):
    x = torch.randn(2, 4, 6, 6)
    layer = make_layer(
        'type: "Convolution" convolution_param { num_output: 6 kernel_size: 3 group: 2 }', [x.shape]
    )
    with torch.no_grad():
        for p in layer.blobs:
            p.normal_()
    want = layer(x)
    layer.group_devices = devices
    got = layer(x.to(devices[0]))
    got.sum().backward()
    assert got.device == torch.device(devices[0])
    assert torch.allclose(got.cpu(), want, atol=1e-5)
    assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_group_devices_split_the_groups():
    _group_device_case([torch.device("cpu"), torch.device("cpu")])


@pytest.mark.cuda
def test_group_devices_on_gpu_and_cpu():
    _group_device_case([torch.device("cuda:0"), torch.device("cpu")])


def test_fillers_come_from_the_param():
    layer = make_layer(
        'type: "Convolution" convolution_param { num_output: 2 kernel_size: 1 '
        'weight_filler { type: "xavier" } }',
        [(1, 1, 2, 2)],
    )
    assert layer.filler("weight").type == "xavier" and layer.filler("bias") is None
