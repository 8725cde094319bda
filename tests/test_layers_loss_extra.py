"""ContrastiveLoss, HingeLoss, InfogainLoss, MultinomialLogisticLoss and SigmoidCrossEntropyLoss
(netspec/layers/loss_extra.py): real Caffe's fixtures, the cases of Caffe's own C++ tests, numpy
references, float64 central-difference gradients, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixture_net import assert_matches_caffe
from layer_runner import make_layer
from layers2_runner import mismatches

from netspec.errors import NetspecError, ShapeError
from netspec.formats.binaryproto import write_binaryproto
from netspec.frontend import load_net
from netspec.graph import compile_net
from netspec.proto import pb

RNG = np.random.default_rng(1701)


@pytest.mark.parametrize("name", ["contrastive_loss", "hinge_loss_l1", "infogain_loss",
                                  "multinomial_logistic_loss", "sigmoid_ce_default"])
def test_matches_caffe_fixture(name):
    assert_matches_caffe(name)


@pytest.mark.parametrize("name", ["contrastive_loss", "hinge_loss_l1", "infogain_loss",
                                  "multinomial_logistic_loss", "sigmoid_ce_default"])
def test_matches_caffe_fixture_through_pycaffe_net(name):
    """The same fixtures through the front end, the compiler and pycaffe's Net with Caffe's caffemodel."""
    assert mismatches(name) == []


def gradcheck(layer, inputs, wrt=(0,), atol=1e-6, rtol=1e-4):
    """float64 central differences (Caffe's GradientChecker) on the bottoms listed in `wrt`."""
    xs = [torch.tensor(np.asarray(a, np.float64), requires_grad=i in wrt) for i, a in enumerate(inputs)]

    def f(*diff_args):
        args = list(xs)
        for i, a in zip(wrt, diff_args):
            args[i] = a
        out = layer(*args)
        return out[0] if isinstance(out, tuple) else out

    assert torch.autograd.gradcheck(f, tuple(xs[i] for i in wrt), eps=1e-6, atol=atol, rtol=rtol)


# ---- ContrastiveLoss (test_contrastive_loss_layer.cpp) ----------------------------------------------
PAIRS_A = RNG.uniform(-1, 1, size=(512, 2, 1, 1))  # distances ≈ 1: both sides of the margin
PAIRS_B = RNG.uniform(-1, 1, size=(512, 2, 1, 1))
SIMILAR = RNG.integers(0, 2, size=(512, 1, 1, 1)).astype(np.float64)


def _contrastive_ref(legacy, margin=1.0):
    d2 = ((PAIRS_A - PAIRS_B) ** 2).reshape(512, 2).sum(1)
    apart = np.maximum(margin - d2, 0) if legacy else np.maximum(margin - np.sqrt(d2), 0) ** 2
    return np.where(SIMILAR.ravel() != 0, d2, apart).sum() / 512 / 2


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_forward_as_caffe_test(legacy):
    layer = make_layer(f'type: "ContrastiveLoss" contrastive_loss_param {{ legacy_version: {str(legacy).lower()} }}',
                       [PAIRS_A.shape, PAIRS_B.shape, SIMILAR.shape])
    got = layer(*(torch.tensor(a, dtype=torch.float32) for a in (PAIRS_A, PAIRS_B, SIMILAR)))
    assert abs(got.item() - _contrastive_ref(legacy)) < 1e-6


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_gradient(legacy):
    # Caffe's backward divides by (distance + 1e-4): an exact derivative differs by that much
    shapes = [(16, 2, 1, 1), (16, 2, 1, 1), (16, 1, 1, 1)]
    layer = make_layer(f'type: "ContrastiveLoss" contrastive_loss_param {{ legacy_version: {str(legacy).lower()} }}',
                       shapes)
    gradcheck(layer, [PAIRS_A[:16], PAIRS_B[:16], SIMILAR[:16]], wrt=(0, 1), rtol=2e-3)


def test_contrastive_backward_uses_caffes_epsilon_and_stays_finite_at_zero_distance():
    a = torch.tensor([[[[0.3]], [[0.1]]], [[[0.2]], [[0.2]]]], requires_grad=True)
    b = torch.tensor([[[[0.0]], [[0.5]]], [[[0.2]], [[0.2]]]])  # pair 1: distance 0
    layer = make_layer('type: "ContrastiveLoss" contrastive_loss_param { margin: 2 }', [a.shape, b.shape, (2, 1, 1, 1)])
    layer(a, b, torch.zeros(2, 1, 1, 1)).backward()
    diff = (a - b).detach().reshape(2, 2)
    dist = diff.norm(dim=1)
    want = -(2 - dist)[:, None] * diff / (dist[:, None] + 1e-4) / 2  # alpha = 1/N, N = 2
    assert torch.isfinite(a.grad).all()
    assert torch.allclose(a.grad.reshape(2, 2), want, atol=1e-7)


# ---- HingeLoss (test_hinge_loss_layer.cpp) ------------------------------------------------------------
HINGE_X = RNG.normal(0, 10, size=(10, 5, 1, 1))
HINGE_Y = RNG.integers(0, 5, size=(10, 1, 1, 1)).astype(np.float64)


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_value_and_gradient(norm):
    layer = make_layer(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}', [HINGE_X.shape, HINGE_Y.shape])
    sign = np.ones((10, 5))
    sign[np.arange(10), HINGE_Y.ravel().astype(int)] = -1
    t = np.maximum(0, 1 + HINGE_X.reshape(10, 5) * sign)
    want = (t if norm == "L1" else t**2).sum() / 10
    got = layer(torch.tensor(HINGE_X), torch.tensor(HINGE_Y))
    assert got.item() == pytest.approx(want, rel=1e-12)
    gradcheck(layer, [HINGE_X, HINGE_Y])


# ---- MultinomialLogisticLoss (test_multinomial_logistic_loss_layer.cpp) ----------------------------------
def test_multinomial_value_gradient_and_floor():
    prob = RNG.uniform(0.05, 1, size=(10, 5, 1, 1))
    prob /= prob.sum(1, keepdims=True)
    label = RNG.integers(0, 5, size=(10, 1, 1, 1)).astype(np.float64)
    layer = make_layer('type: "MultinomialLogisticLoss"', [prob.shape, label.shape])
    want = -np.log(prob.reshape(10, 5)[np.arange(10), label.ravel().astype(int)]).mean()
    assert layer(torch.tensor(prob), torch.tensor(label)).item() == pytest.approx(want, rel=1e-12)
    gradcheck(layer, [prob, label])
    # a zero probability: the log is floored at 1e-20, and the gradient is -1/(N·1e-20), as Caffe's
    p = torch.tensor([[0.0, 1.0]], requires_grad=True)
    loss = make_layer('type: "MultinomialLogisticLoss"', [(1, 2), (1,)])(p, torch.zeros(1))
    loss.backward()
    assert loss.item() == pytest.approx(-np.log(np.float32(1e-20)), rel=1e-6)
    assert p.grad[0, 0].item() == pytest.approx(-1e20, rel=1e-6) and p.grad[0, 1].item() == 0


# ---- SigmoidCrossEntropyLoss (test_sigmoid_cross_entropy_loss_layer.cpp) ---------------------------------
def _sigmoid_ce_ref(x, t):
    """Caffe's test reference, per element, without the normalization."""
    p = 1 / (1 + np.exp(-x))
    return -(t * np.log(p + (t == 0)) + (1 - t) * np.log(1 - p + (t == 1)))


def test_sigmoid_ce_forward_with_loss_weight_as_caffe_test():
    # Caffe's TestForward: loss_weight 3.7, reference / num, 100 trials within 2e-2 (here far tighter)
    net = compile_net(load_net('''
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 10 dim: 5 dim: 1 dim: 1 } } }
        layer { name: "t" type: "Input" top: "t" input_param { shape { dim: 10 dim: 5 dim: 1 dim: 1 } } }
        layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "x" bottom: "t" top: "loss"
                loss_weight: 3.7 }''', pb.TRAIN))
    for _ in range(5):
        x, t = RNG.normal(size=(10, 5, 1, 1)), RNG.uniform(0, 1, size=(10, 5, 1, 1))
        xt = torch.tensor(x, dtype=torch.float32, requires_grad=True)
        total = net.total_loss(net(x=xt, t=torch.tensor(t, dtype=torch.float32)))
        assert total.item() == pytest.approx(3.7 * _sigmoid_ce_ref(x, t).sum() / 10, rel=1e-5)
        total.backward()  # the loss weight scales the diff too: 3.7 (sigmoid(x) - t) / N
        np.testing.assert_allclose(xt.grad.numpy(), 3.7 * (1 / (1 + np.exp(-x)) - t) / 10, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss_param, normalizer", [
    ("", lambda v: 4),                          # no loss_param: BATCH_SIZE, this layer's default
    ("normalization: FULL", lambda v: 12),
    ("normalization: VALID", lambda v: v.sum()),
    ("normalization: BATCH_SIZE", lambda v: 4),
    ("normalization: NONE", lambda v: 1),
    ("normalize: true", lambda v: v.sum()),     # the legacy flag: VALID
    ("normalize: false", lambda v: 4),          # ... and BATCH_SIZE
])
def test_sigmoid_ce_normalization_and_ignore_label(loss_param, normalizer):
    x = RNG.normal(size=(4, 3))
    t = RNG.uniform(0, 1, size=(4, 3))
    t[0, :2] = t[3, 1] = -1
    layer = make_layer(f'type: "SigmoidCrossEntropyLoss" loss_param {{ ignore_label: -1 {loss_param} }}',
                       [x.shape, t.shape])
    valid = t != -1
    want = (_sigmoid_ce_ref(x, t) * valid).sum() / normalizer(valid)
    xt = torch.tensor(x, requires_grad=True)
    got = layer(xt, torch.tensor(t))
    assert got.item() == pytest.approx(want, rel=1e-10)
    got.backward()
    want_grad = (1 / (1 + np.exp(-x)) - t) * valid / normalizer(valid)
    np.testing.assert_allclose(xt.grad.numpy(), want_grad, rtol=1e-10, atol=1e-15)


def test_sigmoid_ce_ignore_gradient_as_caffe_test():
    # Caffe's TestIgnoreGradient: the first half of the targets is -1 (ignored): zero diff there only
    x = torch.tensor(RNG.normal(size=(10, 5, 1, 1)), requires_grad=True)
    t = torch.tensor(RNG.uniform(0, 1, size=(10, 5, 1, 1)))
    t.view(-1)[:25] = -1
    make_layer('type: "SigmoidCrossEntropyLoss" loss_param { ignore_label: -1 }', [x.shape, t.shape])(x, t).backward()
    assert (x.grad.view(-1)[:25] == 0).all() and (x.grad.view(-1)[25:] != 0).all()


def test_sigmoid_ce_gradient():
    x, t = RNG.normal(size=(10, 5, 1, 1)), RNG.uniform(0, 1, size=(10, 5, 1, 1))
    gradcheck(make_layer('type: "SigmoidCrossEntropyLoss"', [x.shape, t.shape]), [x, t])


def test_sigmoid_ce_float32_under_autocast():
    layer = make_layer('type: "SigmoidCrossEntropyLoss"', [(2, 3), (2, 3)])
    x = torch.randn(2, 3, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x, torch.rand(2, 3))
    assert got.dtype == torch.float32


# ---- InfogainLoss (test_infogain_loss_layer.cpp) -----------------------------------------------------
INFO_X = RNG.uniform(-0.5, 2.0, size=(4, 2, 5, 2))
INFO_Y = RNG.integers(0, 5, size=(4, 2, 1, 2)).astype(np.float64)
INFO_H = RNG.uniform(0.1, 2.0, size=(1, 1, 5, 5))


def _infogain_ref(x, y, h, ignore=None):
    """Caffe's TestInfogainLoss reference with axis 2: outer 8, inner 2, 5 labels."""
    e = np.exp(x)
    prob = e / e.sum(axis=2, keepdims=True)
    p = prob.reshape(8, 5, 2)
    labels = y.reshape(8, 2).astype(int)
    hm = h.reshape(5, 5)
    valid = labels != ignore
    loss = 0.0
    for i in range(8):
        for j in range(2):
            if valid[i, j]:
                loss -= (hm[labels[i, j]] * np.log(np.maximum(p[i, :, j], 1e-20))).sum()
    return loss, prob, valid


def test_infogain_as_caffe_test_with_prob_top():
    layer = make_layer('type: "InfogainLoss" infogain_loss_param { axis: 2 } loss_weight: 1 loss_weight: 0',
                       [INFO_X.shape, INFO_Y.shape, INFO_H.shape], tops=2)
    x = torch.tensor(INFO_X, dtype=torch.float32, requires_grad=True)
    loss, prob = layer(x, *(torch.tensor(a, dtype=torch.float32) for a in (INFO_Y, INFO_H)))
    want, want_prob, _ = _infogain_ref(INFO_X, INFO_Y, INFO_H)
    assert layer.top_shapes == [(), INFO_X.shape]
    np.testing.assert_allclose(prob.numpy(), want_prob, atol=1e-6)
    assert abs(loss.item() - want / 16) < 1e-6 * max(1, abs(want / 16))
    assert not prob.requires_grad  # as Caffe's Backward_cpu, which reads the loss top's diff only


def test_infogain_gradient():
    layer = make_layer('type: "InfogainLoss" infogain_loss_param { axis: 2 }',
                       [INFO_X.shape, INFO_Y.shape, INFO_H.shape])
    gradcheck(layer, [INFO_X, INFO_Y, INFO_H])


@pytest.mark.parametrize("mode, normalizer", [("FULL", lambda v: 16), ("VALID", lambda v: v.sum()),
                                              ("BATCH_SIZE", lambda v: 8), ("NONE", lambda v: 1)])
def test_infogain_normalization_ignore_label_and_source_file(tmp_path, mode, normalizer):
    write_binaryproto(tmp_path / "H.binaryproto", INFO_H.astype(np.float32))
    y = INFO_Y.copy()
    y.reshape(-1)[[0, 5, 6]] = 7  # ignored; out of range, as ignore labels often are
    layer = make_layer(f'type: "InfogainLoss" infogain_loss_param {{ axis: 2 source: "{tmp_path}/H.binaryproto" }} '
                       f'loss_param {{ ignore_label: 7 normalization: {mode} }}', [INFO_X.shape, y.shape])
    x = torch.tensor(INFO_X, requires_grad=True)
    loss = layer(x, torch.tensor(y))
    want, prob, valid = _infogain_ref(INFO_X, y, INFO_H.astype(np.float32).astype(np.float64), ignore=7)
    assert loss.item() == pytest.approx(want / normalizer(valid), rel=1e-6)
    loss.backward()
    # Caffe's backward: p_l · Σ_k H[y, k] - H[y, l] at valid positions, 0 at ignored ones
    hm = INFO_H.astype(np.float32).astype(np.float64).reshape(5, 5)
    lab = y.reshape(8, 2).astype(int).clip(0, 4)
    p = prob.reshape(8, 5, 2)
    g = (p * hm.sum(1)[lab][:, None, :] - hm[lab].transpose(0, 2, 1)) * valid[:, None, :] / normalizer(valid)
    np.testing.assert_allclose(x.grad.numpy().reshape(8, 5, 2), g, rtol=1e-6, atol=1e-12)


# ---- errors -------------------------------------------------------------------------------------------
def test_infogain_errors(tmp_path):
    with pytest.raises(NetspecError, match=r"layer 'test'.*needs infogain_loss_param.source or a third bottom"):
        make_layer('type: "InfogainLoss"', [(4, 3), (4,)])
    with pytest.raises(NetspecError, match=r"source 'nope.binaryproto' does not exist"):
        make_layer('type: "InfogainLoss" infogain_loss_param { source: "nope.binaryproto" }', [(4, 3), (4,)])
    write_binaryproto(tmp_path / "H.binaryproto", np.ones((1, 1, 2, 2), np.float32))
    with pytest.raises(ShapeError, match=r"source .* has shape \(1, 1, 2, 2\); H must hold 3×3"):
        make_layer(f'type: "InfogainLoss" infogain_loss_param {{ source: "{tmp_path}/H.binaryproto" }}',
                   [(4, 3), (4,)])
    with pytest.raises(ShapeError, match=r"bottom 2 'b2' has shape \(2, 2\); H must hold 3×3"):
        make_layer('type: "InfogainLoss"', [(4, 3), (4,), (2, 2)])
    with pytest.raises(NetspecError, match="normalize is deprecated"):
        make_layer('type: "InfogainLoss" loss_param { normalize: true }', [(4, 3), (4,), (3, 3)])
    layer = make_layer('type: "InfogainLoss"', [(2, 3), (2,), (3, 3)])
    with pytest.raises(NetspecError, match=r"layer 'test'.*label 3 is out of range.*\[0, 3\)"):
        layer(torch.zeros(2, 3), torch.tensor([0.0, 3.0]), torch.eye(3))


def test_label_and_shape_errors():
    with pytest.raises(NetspecError, match=r"label -1 is out of range: bottom 'b1'.*\[0, 4\)"):
        make_layer('type: "MultinomialLogisticLoss"', [(2, 4), (2,)])(torch.full((2, 4), 0.25),
                                                                       torch.tensor([0.0, -1.0]))
    with pytest.raises(NetspecError, match=r"label 5 is out of range"):
        make_layer('type: "HingeLoss"', [(2, 5), (2,)])(torch.zeros(2, 5), torch.tensor([5.0, 0.0]))
    with pytest.raises(ShapeError, match="labels\\) must be N×1×1×1"):
        make_layer('type: "MultinomialLogisticLoss"', [(2, 4), (2, 2)])
    with pytest.raises(ShapeError, match="same count"):
        make_layer('type: "SigmoidCrossEntropyLoss"', [(2, 4), (2, 3)])
    with pytest.raises(ShapeError, match="same first axis"):
        make_layer('type: "HingeLoss"', [(2, 4), (3,)])
    with pytest.raises(ShapeError, match=r"N×C×1×1 with the same C"):
        make_layer('type: "ContrastiveLoss"', [(2, 4, 1, 1), (2, 3, 1, 1), (2, 1, 1, 1)])
    with pytest.raises(ShapeError, match=r"bottom 2 \(similarity\) must be N×1×1×1"):
        make_layer('type: "ContrastiveLoss"', [(2, 4, 1, 1), (2, 4, 1, 1), (2, 2, 1, 1)])


def test_errors_in_a_net_name_file_and_line(tmp_path):
    """At compile time (source missing) and at run time (a label out of range): file:line: layer."""
    net = tmp_path / "net.prototxt"
    text = """name: "n"
layer { name: "x" type: "Input" top: "x" top: "y" input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
layer { name: "info" type: "InfogainLoss" bottom: "x" bottom: "y" top: "loss"
        infogain_loss_param { source: "missing.binaryproto" } }
"""
    net.write_text(text)
    with pytest.raises(NetspecError) as e:
        compile_net(load_net(str(net), pb.TRAIN), source=str(net))
    assert str(e.value).startswith(f"{net}:3") and "layer 'info'" in str(e.value), str(e.value)
    net.write_text(text.replace('InfogainLoss"', 'MultinomialLogisticLoss"').replace(
        'infogain_loss_param { source: "missing.binaryproto" }', ""))
    compiled = compile_net(load_net(str(net), pb.TRAIN), source=str(net))
    with pytest.raises(NetspecError) as e:
        compiled(x=torch.full((2, 3), 1 / 3), y=torch.tensor([0.0, 3.0]))
    assert str(e.value).startswith(f"{net}:3") and "layer 'info': label 3 is out of range" in str(e.value)


def test_infogain_source_relative_to_the_prototxt(tmp_path, monkeypatch):
    """Caffe opens the source from the current directory; netspec also tries the prototxt's folder."""
    (tmp_path / "net").mkdir()
    write_binaryproto(tmp_path / "net" / "H.binaryproto", INFO_H.astype(np.float32))
    path = tmp_path / "net" / "net.prototxt"
    path.write_text("""layer { name: "x" type: "Input" top: "x" top: "y"
                         input_param { shape { dim: 4 dim: 2 dim: 5 dim: 2 } shape { dim: 4 dim: 2 dim: 1 dim: 2 } } }
                       layer { name: "info" type: "InfogainLoss" bottom: "x" bottom: "y" top: "loss"
                         infogain_loss_param { source: "H.binaryproto" axis: 2 } }""")
    monkeypatch.chdir(tmp_path)
    net = compile_net(load_net(str(path), pb.TRAIN), source=str(path))
    blobs = net(x=torch.tensor(INFO_X, dtype=torch.float32), y=torch.tensor(INFO_Y, dtype=torch.float32))
    want = _infogain_ref(INFO_X, INFO_Y, INFO_H.astype(np.float32).astype(np.float64))[0] / 16
    assert blobs["loss"].item() == pytest.approx(want, rel=1e-5)
