"""ArgMax, Reduction and MVN (netspec/layers/reduce.py): real Caffe's fixtures, the cases of Caffe's
test_argmax_layer.cpp / test_reduction_layer.cpp / test_mvn_layer.cpp, float64 references and
numerical gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradcheck import check_gradients
from layer_runner import make_layer
from layers2_runner import mismatches
from netspec.errors import NetspecError


@pytest.mark.parametrize("name", ["argmax_noaxis", "reduction_default", "mvn_default"])
def test_matches_caffe_fixture(name):
    assert mismatches(name) == []


# ---- ArgMax ----------------------------------------------------------------------------------------

def _argmax_ref(x: np.ndarray, k: int, axis):
    """Caffe's order by a plain loop: sort (value, index) pairs descending, so ties go to the larger index."""
    rows = np.moveaxis(x, axis, -1) if axis is not None else x.reshape(x.shape[0], -1)
    flat = rows.reshape(-1, rows.shape[-1])
    idx = np.zeros((flat.shape[0], k))
    val = np.zeros((flat.shape[0], k))
    for r, row in enumerate(flat):
        pairs = sorted(((v, j) for j, v in enumerate(row)), reverse=True)[:k]
        val[r], idx[r] = [p[0] for p in pairs], [p[1] for p in pairs]
    shape = rows.shape[:-1] + (k,)
    return idx.reshape(shape), val.reshape(shape)


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("out_max_val", [False, True])
def test_argmax_top_k_matches_a_loop_with_caffes_tie_rule(axis, out_max_val):
    x = torch.randint(0, 4, (3, 4, 5)).float()   # many ties
    text = f"argmax_param {{ top_k: 3 out_max_val: {str(out_max_val).lower()} " + (
        f"axis: {axis} }}" if axis is not None else "}")
    layer = make_layer(f'type: "ArgMax" {text}', [x.shape])
    top = layer(x).numpy()
    idx, val = _argmax_ref(x.numpy(), 3, axis)
    assert top.shape == layer.top_shapes[0]
    if axis is None:   # (N, 1 or 2, top_k, 1): indices, then values
        assert top.shape == (3, 2 if out_max_val else 1, 3)
        np.testing.assert_array_equal(top[:, 0], idx)
        if out_max_val:
            np.testing.assert_array_equal(top[:, 1], val)
    else:
        want = val if out_max_val else idx
        np.testing.assert_array_equal(top, np.moveaxis(want, -1, axis))


def test_argmax_setup_shapes_of_caffes_test():
    shape = (10, 10, 20, 20)   # test_argmax_layer.cpp's bottom; top_k_ 5 there
    assert make_layer('type: "ArgMax"', [shape]).top_shapes == [(10, 1, 1, 1)]
    assert make_layer('type: "ArgMax" argmax_param { out_max_val: true }', [shape]).top_shapes == [(10, 2, 1, 1)]
    assert make_layer('type: "ArgMax" argmax_param { axis: 0 }', [shape]).top_shapes == [(1, 10, 20, 20)]
    assert make_layer('type: "ArgMax" argmax_param { axis: -2 top_k: 5 }', [shape]).top_shapes == [(10, 10, 5, 20)]
    assert make_layer('type: "ArgMax" argmax_param { axis: 2 out_max_val: true top_k: 5 }',
                      [shape]).top_shapes == [(10, 10, 5, 20)]
    assert make_layer('type: "ArgMax" argmax_param { top_k: 5 }', [(2, 6)]).top_shapes == [(2, 1, 5)]


def test_argmax_has_no_gradient():
    x = torch.randn(2, 5, requires_grad=True)
    assert not make_layer('type: "ArgMax"', [x.shape])(x).requires_grad


@pytest.mark.parametrize("text, words", [
    ("argmax_param { top_k: 0 }", "top_k must be at least 1"),
    ("argmax_param { top_k: 13 }", "top_k 13 is more than the 12 values"),
    ("argmax_param { top_k: 4 axis: 1 }", "top_k 4 is more than the 3 values of axis 1"),
])
def test_argmax_bad_parameters(text, words):
    with pytest.raises(NetspecError, match=words):
        make_layer(f'type: "ArgMax" {text}', [(2, 3, 4)])


# ---- Reduction -------------------------------------------------------------------------------------

_NUMPY_OP = {"SUM": lambda r: r.sum(-1), "ASUM": lambda r: np.abs(r).sum(-1),
             "SUMSQ": lambda r: (r * r).sum(-1), "MEAN": lambda r: r.mean(-1)}


@pytest.mark.parametrize("op", sorted(_NUMPY_OP))
@pytest.mark.parametrize("coeff, axis", [(1.0, 0), (2.25, 0), (2.25, 1), (-0.5, 2)])  # coeffs exact in float32
def test_reduction_as_caffes_test_computes_it(op, coeff, axis):
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)   # test_reduction_layer.cpp's bottom shape
    layer = make_layer(f'type: "Reduction" reduction_param {{ operation: {op} coeff: {coeff} axis: {axis} }}',
                       [x.shape])
    rows = x.numpy().reshape(x.shape[:axis] + (-1,))
    np.testing.assert_allclose(layer.double()(x).numpy(), coeff * _NUMPY_OP[op](rows), rtol=1e-12)
    assert layer.top_shapes == [tuple(x.shape[:axis])]


@pytest.mark.parametrize("op", sorted(_NUMPY_OP))
def test_reduction_gradient(op):
    layer = make_layer(f'type: "Reduction" reduction_param {{ operation: {op} coeff: 1.7 axis: 1 }}', [(2, 3, 4)])
    check_gradients(layer, [torch.randn(2, 3, 4) + 0.1])


def test_reduction_axis_out_of_range_is_an_error():
    with pytest.raises(NetspecError, match="axis 3 is out of range for a 3-axis blob"):
        make_layer('type: "Reduction" reduction_param { axis: 3 }', [(2, 3, 4)])


# ---- MVN -------------------------------------------------------------------------------------------

def _mvn_ref(x, across, normalize, eps):
    rows = x.reshape(x.shape[0] if across else x.shape[0] * x.shape[1], -1)
    centred = rows - rows.mean(1, keepdims=True)
    if normalize:
        centred = centred / (np.sqrt((centred ** 2).mean(1, keepdims=True)) + eps)
    return centred.reshape(x.shape)


@pytest.mark.parametrize("across", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_mvn_means_and_variances_as_caffes_test(across, normalize):
    """test_mvn_layer.cpp: every (sample, channel) — every sample across channels — has mean 0 and,
    normalising the variance, variance 1, within 1e-3."""
    x = torch.randn(2, 3, 4, 5) * 3 + 1
    p = f"mvn_param {{ across_channels: {str(across).lower()} normalize_variance: {str(normalize).lower()} }}"
    top = make_layer(f'type: "MVN" {p}', [x.shape])(x).numpy()
    rows = top.reshape(2 if across else 6, -1)
    np.testing.assert_allclose(rows.mean(1), 0, atol=1e-3)
    if normalize:
        np.testing.assert_allclose((rows ** 2).mean(1), 1, atol=1e-3)
    np.testing.assert_allclose(top, _mvn_ref(x.double().numpy(), across, normalize, 1e-9), rtol=1e-4, atol=1e-5)


def test_mvn_adds_eps_to_the_deviation_not_the_variance():
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    layer = make_layer('type: "MVN" mvn_param { eps: 0.5 }', [x.shape]).double()
    np.testing.assert_allclose(layer(x).numpy(), _mvn_ref(x.numpy(), False, True, 0.5), rtol=1e-12)


def test_mvn_backward_is_caffes_formula_for_a_large_eps():
    """MVNLayer::Backward_cpu: dx = (dy - mean(dy) - y·mean(y·dy)) / (std + eps), not the exact
    derivative once eps matters."""
    x = torch.randn(2, 3, 6, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(2, 3, 6, dtype=torch.float64)
    layer = make_layer('type: "MVN" mvn_param { eps: 0.5 }', [x.shape]).double()
    y = layer(x)
    y.backward(dy)
    yr, dyr, xr = (t.detach().numpy().reshape(6, 6) for t in (y, dy, x))
    std = np.sqrt(((xr - xr.mean(1, keepdims=True)) ** 2).mean(1, keepdims=True))
    want = (dyr - dyr.mean(1, keepdims=True) - yr * (yr * dyr).mean(1, keepdims=True)) / (std + 0.5)
    np.testing.assert_allclose(x.grad.numpy().reshape(6, 6), want, rtol=1e-10)


@pytest.mark.parametrize("p", ["", "mvn_param { normalize_variance: false }", "mvn_param { across_channels: true }"])
def test_mvn_gradient(p):
    check_gradients(make_layer(f'type: "MVN" {p}', [(2, 3, 2, 3)]), [torch.randn(2, 3, 2, 3)], tol=1e-5)


def test_mvn_more_than_four_axes_is_an_error():
    with pytest.raises(NetspecError, match="MVN takes at most 4 axes"):
        make_layer('type: "MVN"', [(1, 2, 3, 4, 5)])


def test_the_gradient_checker_catches_a_backward_that_is_not_the_derivative():
    """The checker can fail: with eps 0.5 Caffe's MVN backward is no longer the exact derivative."""
    with pytest.raises(AssertionError, match="MVN bottom 0: element"):
        check_gradients(make_layer('type: "MVN" mvn_param { eps: 0.5 }', [(1, 2, 4)]), [torch.randn(1, 2, 4)])
