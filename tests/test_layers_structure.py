"""Concat, Slice, Split, Flatten, Reshape, Eltwise, Silence (netspec/layers/structure.py)."""

from __future__ import annotations

import pytest
import torch

from layer_runner import make_layer
from netspec.errors import NetspecError, ShapeError


def test_concat_axis_and_legacy_concat_dim():
    a, b = torch.randn(2, 3, 4), torch.randn(2, 5, 4)
    layer = make_layer('type: "Concat"', [a.shape, b.shape])
    assert layer.top_shapes == [(2, 8, 4)] and torch.equal(layer(a, b), torch.cat([a, b], 1))
    c = torch.randn(2, 3, 1)
    layer = make_layer('type: "Concat" concat_param { axis: -1 }', [a.shape, c.shape])
    assert torch.equal(layer(a, c), torch.cat([a, c], 2))
    layer = make_layer('type: "Concat" concat_param { concat_dim: 0 }', [a.shape, a.shape])
    assert layer.top_shapes == [(4, 3, 4)]


def test_concat_mismatch_names_the_bottom():
    with pytest.raises(ShapeError, match=r"bottom 1 'b1' has shape \(2, 3, 5\).*\(2, 3, 4\).*axis 1"):
        make_layer('type: "Concat"', [(2, 3, 4), (2, 3, 5)])


def test_slice_points_and_equal_split():
    x = torch.arange(24.0).reshape(2, 6, 2)
    layer = make_layer('type: "Slice" slice_param { slice_point: 1 slice_point: 4 }', [x.shape], tops=3)
    parts = layer(x)
    assert [tuple(p.shape) for p in parts] == layer.top_shapes == [(2, 1, 2), (2, 3, 2), (2, 2, 2)]
    assert torch.equal(torch.cat(parts, 1), x)
    layer = make_layer('type: "Slice" slice_param { slice_dim: 0 }', [x.shape], tops=2)
    assert torch.equal(layer(x)[1], x[1:])


@pytest.mark.parametrize(
    "param, tops, message",
    [
        ("slice_point: 2", 3, "give 2"),
        ("slice_point: 3 slice_point: 3", 3, "increase"),
        ("", 4, "evenly"),
    ],
)
def test_slice_errors(param, tops, message):
    with pytest.raises(NetspecError, match=message):
        make_layer(f'type: "Slice" slice_param {{ {param} }}', [(2, 6)], tops=tops)


def test_split_tops_share_gradient():
    x = torch.randn(3, requires_grad=True)
    a, b = make_layer('type: "Split"', [x.shape], tops=2)(x)
    (2 * a + 3 * b).sum().backward()
    assert torch.allclose(x.grad, torch.full((3,), 5.0))


def test_flatten():
    x = torch.randn(2, 3, 4, 5)
    assert make_layer('type: "Flatten"', [x.shape]).top_shapes == [(2, 60)]
    layer = make_layer('type: "Flatten" flatten_param { axis: 1 end_axis: 2 }', [x.shape])
    assert layer.top_shapes == [(2, 12, 5)] and torch.equal(layer(x), x.reshape(2, 12, 5))


@pytest.mark.parametrize(
    "param, want",
    [
        ("shape { dim: 0 dim: -1 }", (2, 60)),
        ("shape { dim: -1 dim: 0 dim: 0 }", (10, 3, 4)),  # 0 copies bottom axes 1 and 2
        ("shape { dim: 12 } axis: 1 num_axes: 2", (2, 12, 5)),
        ("shape { dim: 1 } axis: -1 num_axes: 0", (2, 3, 4, 5, 1)),
        ("shape { dim: 2 dim: 2 } axis: 2 num_axes: 1", (2, 3, 2, 2, 5)),
    ],
)
def test_reshape(param, want):
    x = torch.randn(2, 3, 4, 5)
    layer = make_layer(f'type: "Reshape" reshape_param {{ {param} }}', [x.shape])
    assert layer.top_shapes == [want] and torch.equal(layer(x), x.reshape(want))


@pytest.mark.parametrize(
    "param, message",
    [
        ("shape { dim: -1 dim: -1 }", "more than one -1"),
        ("shape { dim: 7 dim: -1 }", "cannot be reshaped"),
        ("shape { dim: 0 dim: 0 dim: 0 dim: 0 dim: 0 }", "no axis 4"),
    ],
)
def test_reshape_errors(param, message):
    with pytest.raises(NetspecError, match=message):
        make_layer(f'type: "Reshape" reshape_param {{ {param} }}', [(2, 3, 4, 5)])


def test_eltwise_sum_prod_max():
    a, b, c = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    assert torch.allclose(make_layer('type: "Eltwise"', [a.shape] * 3)(a, b, c), a + b + c)
    summed = make_layer('type: "Eltwise" eltwise_param { coeff: 1 coeff: -0.5 }', [a.shape] * 2)
    assert torch.allclose(summed(a, b), a - 0.5 * b)
    prod = make_layer('type: "Eltwise" eltwise_param { operation: PROD }', [a.shape] * 3)
    assert torch.allclose(prod(a, b, c), a * b * c)
    mx = make_layer('type: "Eltwise" eltwise_param { operation: MAX }', [a.shape] * 3)
    assert torch.equal(mx(a, b, c), torch.maximum(torch.maximum(a, b), c))


def test_eltwise_max_gradient_on_ties_follows_caffe():
    """Bottom 1 wins a tie with bottom 0; a later bottom must be strictly greater."""
    a, b, c = (torch.ones(1, requires_grad=True) for _ in range(3))
    make_layer('type: "Eltwise" eltwise_param { operation: MAX }', [(1,)] * 3)(a, b, c).sum().backward()
    assert (a.grad.item(), b.grad.item(), c.grad.item()) == (0.0, 1.0, 0.0)


@pytest.mark.parametrize(
    "param, shapes, error, message",
    [
        ("", [(2, 3), (2, 4)], ShapeError, r"bottom 1 'b1' has shape \(2, 4\), bottom 0 has \(2, 3\)"),
        ("coeff: 1", [(2, 3), (2, 3)], NetspecError, "one per bottom"),
        ("operation: PROD coeff: 1 coeff: 2", [(2, 3), (2, 3)], NetspecError, "only for operation SUM"),
    ],
)
def test_eltwise_errors(param, shapes, error, message):
    with pytest.raises(error, match=message):
        make_layer(f'type: "Eltwise" eltwise_param {{ {param} }}', shapes)


def test_silence_has_no_tops():
    layer = make_layer('type: "Silence"', [(2, 3), (4,)], tops=0)
    assert layer.top_shapes == [] and layer(torch.zeros(2, 3), torch.zeros(4)) == ()
