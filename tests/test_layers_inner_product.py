"""InnerProduct against numpy matrix products (netspec/layers/inner_product.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layer_runner import make_layer
from netspec.errors import ShapeError


def _random_blobs(layer):
    with torch.no_grad():
        for b in layer.blobs:
            b.normal_()
    return [b.detach().numpy() for b in layer.blobs]


def test_flattens_from_axis_one():
    x = np.random.default_rng(0).normal(size=(2, 3, 2, 2)).astype(np.float32)
    layer = make_layer('type: "InnerProduct" inner_product_param { num_output: 5 }', [x.shape])
    w, b = _random_blobs(layer)
    assert w.shape == (5, 12) and layer.top_shapes == [(2, 5)]
    np.testing.assert_allclose(
        layer(torch.from_numpy(x)).detach().numpy(), x.reshape(2, 12) @ w.T + b, rtol=1e-5, atol=1e-5
    )


def test_transpose_stores_k_by_n():
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    layer = make_layer(
        'type: "InnerProduct" inner_product_param { num_output: 2 transpose: true bias_term: false }',
        [x.shape],
    )
    (w,) = _random_blobs(layer)
    assert w.shape == (4, 2) and layer.blob_names == ("weight",)
    np.testing.assert_allclose(layer(torch.from_numpy(x)).detach().numpy(), x @ w, rtol=1e-5, atol=1e-5)


def test_axis_two_keeps_leading_axes():
    x = np.random.default_rng(2).normal(size=(2, 3, 4, 5)).astype(np.float32)
    layer = make_layer('type: "InnerProduct" inner_product_param { num_output: 6 axis: 2 }', [x.shape])
    w, b = _random_blobs(layer)
    assert layer.top_shapes == [(2, 3, 6)]
    np.testing.assert_allclose(
        layer(torch.from_numpy(x)).detach().numpy(), x.reshape(2, 3, 20) @ w.T + b, rtol=1e-5, atol=1e-5
    )


def test_input_size_must_match_weights():
    layer = make_layer('type: "InnerProduct" inner_product_param { num_output: 2 }', [(2, 8)])
    with pytest.raises(ShapeError, match=r"\(2, 9\).*9 inputs.*take 8"):
        layer.infer_top_shapes([(2, 9)])
