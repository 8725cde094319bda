"""SoftmaxWithLoss, EuclideanLoss and Accuracy against numpy formulas (netspec/layers/loss.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layer_runner import make_layer
from netspec.errors import ShapeError

RNG = np.random.default_rng(0)
SCORES = RNG.normal(size=(2, 3, 2, 2))  # classes on axis 1, 2x2 positions
LABELS = np.array([[0, 2, 1, 1], [2, 2, 0, 1]], dtype=np.float64).reshape(2, 1, 2, 2)


def _softmax_loss_ref(normalizer, ignore=None):
    p = np.exp(SCORES) / np.exp(SCORES).sum(axis=1, keepdims=True)
    lab = LABELS.reshape(2, 2, 2).astype(int)
    valid = np.ones_like(lab, bool) if ignore is None else lab != ignore
    logp = np.log(np.take_along_axis(p, lab[:, None], axis=1)[:, 0])
    onehot = np.stack([lab == c for c in range(3)], axis=1)
    grad = (p - onehot) * valid[:, None] / normalizer(valid)
    return -(logp * valid).sum() / normalizer(valid), grad


@pytest.mark.parametrize(
    "loss_param, ignore, normalizer",
    [
        ("", None, lambda v: v.sum()),  # VALID is the default
        ("normalization: FULL", 1, lambda v: v.size),
        ("normalization: VALID", 1, lambda v: v.sum()),
        ("normalization: BATCH_SIZE", 1, lambda v: 2),
        ("normalization: NONE", 1, lambda v: 1),
        ("normalize: false", None, lambda v: 2),  # legacy flag -> BATCH_SIZE
        ("normalize: true", 2, lambda v: v.sum()),  # legacy flag -> VALID
    ],
)
def test_softmax_loss_and_gradient(loss_param, ignore, normalizer):
    if ignore is not None:
        loss_param += f" ignore_label: {ignore}"
    layer = make_layer(f'type: "SoftmaxWithLoss" loss_param {{ {loss_param} }}', [SCORES.shape, LABELS.shape])
    x = torch.tensor(SCORES, requires_grad=True)
    loss = layer(x, torch.tensor(LABELS))
    want, grad = _softmax_loss_ref(normalizer, ignore)
    assert loss.shape == () and layer.top_shapes == [()] and layer.default_loss_weight == 1.0
    np.testing.assert_allclose(loss.item(), want, rtol=1e-6)
    loss.backward()
    np.testing.assert_allclose(x.grad.numpy(), grad, rtol=1e-6, atol=1e-9)


def test_softmax_loss_all_ignored_gives_zero_not_nan():
    layer = make_layer('type: "SoftmaxWithLoss" loss_param { ignore_label: 0 }', [(2, 3), (2,)])
    assert layer(torch.randn(2, 3), torch.zeros(2)).item() == 0.0


def test_softmax_loss_prob_top_and_axis():
    x = torch.randn(4, 2, 3)
    layer = make_layer('type: "SoftmaxWithLoss" softmax_param { axis: 2 }', [x.shape, (4, 2)], tops=2)
    label = torch.tensor([[0, 2], [1, 1], [2, 0], [0, 0]], dtype=torch.float32)
    loss, prob = layer(x, label)
    assert layer.top_shapes == [(), (4, 2, 3)]
    assert torch.allclose(prob, torch.softmax(x, 2))
    want = -torch.log(prob.gather(2, label.long().unsqueeze(2))).mean()
    assert torch.allclose(loss, want)


def test_softmax_loss_prob_top_sends_no_gradient():
    """softmax_loss_layer.cpp's Backward uses top[0]'s diff only: a loss taken on the prob top adds
    to the objective but not to the scores' gradient."""
    x = torch.randn(4, 3, requires_grad=True)
    label = torch.tensor([0.0, 2.0, 1.0, 1.0])
    layer = make_layer('type: "SoftmaxWithLoss"', [x.shape, (4,)], tops=2)
    loss, prob = layer(x, label)
    (loss + 5.0 * (prob ** 2).sum()).backward()
    want = (torch.softmax(x.detach(), 1) - torch.nn.functional.one_hot(label.long(), 3)) / 4
    assert torch.allclose(x.grad, want, atol=1e-7)


def test_softmax_loss_label_count_must_match():
    with pytest.raises(ShapeError, match=r"\(5,\).*need 4"):
        make_layer('type: "SoftmaxWithLoss"', [(4, 3), (5,)])


def test_euclidean_loss():
    a, b = torch.randn(3, 4), torch.randn(3, 2, 2)
    layer = make_layer('type: "EuclideanLoss"', [a.shape, b.shape])
    assert torch.allclose(layer(a, b), ((a - b.reshape(3, 4)) ** 2).sum() / 6)


def _accuracy(text, scores, labels, tops=1):
    layer = make_layer(f'type: "Accuracy" {text}', [scores.shape, labels.shape], tops=tops)
    return layer(torch.tensor(scores, dtype=torch.float32), torch.tensor(labels, dtype=torch.float32))


def test_accuracy_ties_count_against_the_label():
    """Right when fewer than top_k scores other than the label's are >= it: both tied labels lose."""
    scores = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    labels = np.array([0, 1, 1, 2])
    assert _accuracy("", scores, labels).item() == pytest.approx(1 / 4)
    # top_k 2: the tied pair and row 2 are right; row 3's label is third
    assert _accuracy("accuracy_param { top_k: 2 }", scores, labels).item() == pytest.approx(3 / 4)


def test_accuracy_ignore_label_and_per_class():
    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.5, 0.1]])
    labels = np.array([1, 1, 0, 0, 5])
    acc, per_class = _accuracy("accuracy_param { ignore_label: 5 }", scores, labels, tops=2)
    assert acc.item() == pytest.approx(2 / 4)
    np.testing.assert_allclose(per_class.numpy(), [1 / 2, 1 / 2])
    _, per_class = _accuracy("", scores[:2], labels[:2], tops=2)
    np.testing.assert_allclose(per_class.numpy(), [0.0, 1 / 2])  # a class never seen reads 0


def test_accuracy_spatial_and_no_gradient():
    x = torch.tensor(SCORES, dtype=torch.float32, requires_grad=True)
    layer = make_layer('type: "Accuracy"', [SCORES.shape, LABELS.shape])
    acc = layer(x, torch.tensor(LABELS, dtype=torch.float32))
    want = (SCORES.argmax(axis=1) == LABELS[:, 0]).mean()
    assert acc.item() == pytest.approx(want) and not acc.requires_grad


def test_accuracy_top_k_at_most_classes():
    with pytest.raises(ShapeError, match="top_k 4"):
        make_layer('type: "Accuracy" accuracy_param { top_k: 4 }', [(2, 3), (2,)])


def test_batch_size_may_change_after_setup():
    """Caffe reshapes every forward: a layer set up for 4 items runs on 2."""
    loss = make_layer('type: "SoftmaxWithLoss" loss_param { normalization: BATCH_SIZE }', [(4, 3), (4,)])
    acc = make_layer('type: "Accuracy"', [(4, 3), (4,)], tops=2)
    x, label = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]]), torch.tensor([0.0, 1.0])
    assert loss.infer_top_shapes([(2, 3), (2,)]) == [()]
    want = -(torch.log_softmax(x, 1)[0, 0] + torch.log_softmax(x, 1)[1, 1]) / 2
    assert torch.allclose(loss(x, label), want)
    top, per_class = acc(x, label)
    assert top.item() == 0.5 and per_class.tolist() == [1.0, 0.0, 0.0]
