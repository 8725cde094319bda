"""LSTM, RNN and LSTMUnit (netspec/layers/recurrent.py): real Caffe's fixtures, the cases of Caffe's
test_lstm_layer.cpp and test_rnn_layer.cpp, a numpy float64 reference of the unrolled nets, float64
central-difference gradients (bottoms and parameters), expose_hidden, caffemodel loading and errors."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from fixture_net import LAYERS2, assert_matches_caffe
from layer_runner import make_layer
from layers2_runner import mismatches

from netspec.errors import NetspecError, ShapeError
from netspec.formats.caffemodel import load_weights
from netspec.frontend import load_net
from netspec.graph import compile_net
from netspec.proto import pb

RNG = np.random.default_rng(7)
FILLERS = 'weight_filler { type: "gaussian" std: 0.2 } bias_filler { type: "gaussian" std: 0.1 }'


@pytest.mark.parametrize("name", ["lstm", "rnn", "lstm_unit"])
def test_matches_caffe_fixture(name):
    assert_matches_caffe(name)


@pytest.mark.parametrize("name", ["lstm", "rnn", "lstm_unit"])
def test_matches_caffe_fixture_through_pycaffe_net(name):
    """The same fixtures through the front end, the compiler and pycaffe's Net with Caffe's caffemodel."""
    assert mismatches(name) == []


def recurrent(kind, shapes, num_output=7, extra="", tops=1, seed=1701):
    """A filled LSTM/RNN layer as Caffe's tests configure it (gaussian 0.2 weights, 0.1 biases)."""
    layer = make_layer(f'type: "{kind}" recurrent_param {{ num_output: {num_output} {FILLERS} {extra} }}',
                       shapes, tops=tops)
    layer.fill(torch.Generator().manual_seed(seed))
    return layer


# ---- numpy reference: Caffe's unrolled nets, step by step ------------------------------------------------
def _sig(v):
    return 1 / (1 + np.exp(-v))


def lstm_ref(blobs, x, cont, static=None, h0=None, c0=None):
    w_xc, b_c, *rest = [b.detach().double().numpy() for b in blobs]
    w_static, w_hc = (rest if static is not None else [None] + rest)
    t_, n = x.shape[:2]
    hidden = w_hc.shape[1]
    gx = x.reshape(t_, n, -1) @ w_xc.T + b_c
    if static is not None:
        gx = gx + (static.reshape(n, -1) @ w_static.T)[None]
    h = np.zeros((n, hidden)) if h0 is None else h0.reshape(n, hidden)
    c = np.zeros((n, hidden)) if c0 is None else c0.reshape(n, hidden)
    hs = []
    for t in range(t_):
        g = gx[t] + (cont[t][:, None] * h) @ w_hc.T
        i, f, o, gg = _sig(g[:, :hidden]), _sig(g[:, hidden:2 * hidden]), _sig(g[:, 2 * hidden:3 * hidden]), \
            np.tanh(g[:, 3 * hidden:])
        c = cont[t][:, None] * f * c + i * gg
        h = o * np.tanh(c)
        hs.append(h)
    return np.stack(hs), h, c


def rnn_ref(blobs, x, cont, static=None, h0=None):
    w_xh, b_h, *rest = [b.detach().double().numpy() for b in blobs]
    w_static, w_hh, w_ho, b_o = (rest if static is not None else [None] + rest)
    t_, n = x.shape[:2]
    pre = x.reshape(t_, n, -1) @ w_xh.T + b_h
    if static is not None:
        pre = pre + (static.reshape(n, -1) @ w_static.T)[None]
    h = np.zeros((n, w_hh.shape[0])) if h0 is None else h0.reshape(n, -1)
    hs = []
    for t in range(t_):
        h = np.tanh(pre[t] + (cont[t][:, None] * h) @ w_hh.T)
        hs.append(h)
    return np.tanh(np.stack(hs) @ w_ho.T + b_o), h


# ---- Caffe's TestSetUp / TestForward -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_setup_top_shape(kind):
    assert recurrent(kind, [(1, 3, 3, 2), (1, 3)]).top_shapes == [(1, 3, 7)]


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_forward_full_sequence_equals_one_step_at_a_time(kind):
    """Caffe's TestForward: T=3 in one batch = three T=1 forwards, the state carried between them;
    with every cont 0 only the first step agrees."""
    x = torch.tensor(RNG.normal(size=(3, 3, 3, 2)), dtype=torch.float32)
    cont = torch.tensor([[0.0] * 3, [1.0] * 3, [1.0] * 3])
    full = recurrent(kind, [x.shape, cont.shape])(x, cont)
    step = recurrent(kind, [(1, 3, 3, 2), (1, 3)])
    for t in range(3):
        out = step(x[t:t + 1], cont[t:t + 1])
        assert (out - full[t:t + 1]).abs().max() < 1e-5, f"t = {t}"
    reset = recurrent(kind, [(1, 3, 3, 2), (1, 3)])
    for t in range(3):
        out = reset(x[t:t + 1], torch.zeros(1, 3))
        if t == 0:
            assert (out - full[:1]).abs().max() < 1e-5
        else:
            assert (out != full[t:t + 1]).all(), f"t = {t}"


@pytest.mark.parametrize("static", [False, True])
def test_lstm_against_numpy_unrolled_net(static):
    x, cont = RNG.normal(size=(4, 2, 3, 2)), np.array([[0, 0], [1, 1], [1, 0], [1, 1]], float)
    shapes = [x.shape, cont.shape] + ([(2, 2, 3, 4)] if static else [])
    s = RNG.uniform(-1, 1, size=(2, 2, 3, 4)) if static else None
    layer = recurrent("LSTM", shapes).double()
    got = layer(*[torch.tensor(a) for a in ([x, cont] + ([s] if static else []))])
    np.testing.assert_allclose(got.detach().numpy(), lstm_ref(layer.blobs, x, cont, s)[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("static", [False, True])
def test_rnn_against_numpy_unrolled_net(static):
    x, cont = RNG.normal(size=(4, 2, 3)), np.array([[0, 0], [1, 1], [1, 0], [1, 1]], float)
    s = RNG.uniform(-1, 1, size=(2, 5)) if static else None
    layer = recurrent("RNN", [x.shape, cont.shape] + ([s.shape] if static else []), num_output=4).double()
    got = layer(*[torch.tensor(a) for a in ([x, cont] + ([s] if static else []))])
    np.testing.assert_allclose(got.detach().numpy(), rnn_ref(layer.blobs, x, cont, s)[0], rtol=1e-12, atol=1e-14)


def test_state_carries_across_forwards_without_gradient():
    """Without expose_hidden, Caffe copies h_T/c_T into h_0/c_0 before each forward."""
    x, cont = RNG.normal(size=(2, 2, 3)), np.ones((2, 2))
    layer = recurrent("LSTM", [x.shape, cont.shape], num_output=4).double()
    first = layer(torch.tensor(x), torch.tensor(cont))
    _, h, c = lstm_ref(layer.blobs, x, cont)
    xt = torch.tensor(x, requires_grad=True)
    second = layer(xt, torch.tensor(cont))
    np.testing.assert_allclose(second.detach().numpy(), lstm_ref(layer.blobs, x, cont, h0=h, c0=c)[0], rtol=1e-12)
    assert not torch.allclose(first, second)
    second.sum().backward()  # no graph reaches back into the first forward
    assert xt.grad is not None


# ---- expose_hidden -------------------------------------------------------------------------------------
def test_lstm_expose_hidden_chains_two_halves_into_the_whole():
    x, cont = RNG.normal(size=(4, 2, 3)), np.array([[0, 0], [1, 1], [1, 0], [1, 1]], float)
    whole = recurrent("LSTM", [x.shape, cont.shape], num_output=5).double()
    full = whole(torch.tensor(x), torch.tensor(cont))
    state = (1, 2, 5)
    half = recurrent("LSTM", [(2, 2, 3), (2, 2), state, state], num_output=5, extra="expose_hidden: true",
                     tops=3).double()
    half.load_state_dict(whole.state_dict())
    assert half.top_shapes == [(2, 2, 5), state, state]
    zeros = torch.zeros(state, dtype=torch.float64)
    h_a, h_t, c_t = half(torch.tensor(x[:2]), torch.tensor(cont[:2]), zeros, zeros)
    h_b, _, _ = half(torch.tensor(x[2:]), torch.tensor(cont[2:]), h_t, c_t)
    assert torch.allclose(torch.cat([h_a, h_b]), full, rtol=1e-12)
    _, h_ref, c_ref = lstm_ref(half.blobs, x[:2], cont[:2])
    np.testing.assert_allclose(h_t.detach().numpy()[0], h_ref, rtol=1e-12)
    np.testing.assert_allclose(c_t.detach().numpy()[0], c_ref, rtol=1e-12)


def test_rnn_expose_hidden_tops_and_gradient_to_h0():
    x, cont = RNG.normal(size=(3, 2, 3)), np.array([[1, 1], [1, 0], [1, 1]], float)
    h0 = RNG.normal(size=(1, 2, 4))
    layer = recurrent("RNN", [x.shape, cont.shape, h0.shape], num_output=4, extra="expose_hidden: true",
                      tops=2).double()
    o, h_t = layer(torch.tensor(x), torch.tensor(cont), torch.tensor(h0))
    want_o, want_h = rnn_ref(layer.blobs, x, cont, h0=h0)
    np.testing.assert_allclose(o.detach().numpy(), want_o, rtol=1e-12)
    np.testing.assert_allclose(h_t.detach().numpy()[0], want_h, rtol=1e-12)
    f = lambda h: layer(torch.tensor(x), torch.tensor(cont), h)[0]
    assert torch.autograd.gradcheck(f, (torch.tensor(h0, requires_grad=True),), eps=1e-6, atol=1e-7)


# ---- gradients (Caffe's TestGradient* cases, float64) ---------------------------------------------------------
def _gradcheck_layer(layer, inputs, wrt):
    """Central differences on the bottoms in `wrt` and on every parameter blob of the layer."""
    layer.double()
    xs = [torch.tensor(a) for a in inputs]
    params = list(layer.blobs)
    names = layer.blob_names

    def f(*args):
        bottoms = list(xs)
        for i, a in zip(wrt, args[: len(wrt)]):
            bottoms[i] = a
        out = torch.func.functional_call(layer, dict(zip(names, args[len(wrt):])), tuple(bottoms))
        return out[0] if isinstance(out, tuple) else out

    leaves = [xs[i].clone().requires_grad_() for i in wrt] + [p.detach().clone().requires_grad_() for p in params]
    assert torch.autograd.gradcheck(f, tuple(leaves), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
@pytest.mark.parametrize("case", ["T1", "NonZeroCont", "BufferSize2", "BufferSize2WithStaticInput"])
def test_gradient_cases_of_caffe(kind, case):
    t_, n = (1, 3) if case in ("T1", "NonZeroCont") else (2, 2)
    x = RNG.uniform(-1, 1, size=(t_, n, 3, 2))
    cont = np.zeros((t_, n)) if case == "T1" else (np.arange(t_ * n) > 2).astype(float).reshape(t_, n)
    inputs, wrt = [x, cont], (0,)
    if case.endswith("StaticInput"):
        inputs, wrt = inputs + [RNG.uniform(-1, 1, size=(n, 2, 3, 4))], (0, 2)
    layer = recurrent(kind, [a.shape for a in inputs], num_output=3)
    _gradcheck_layer(layer, inputs, wrt)


@pytest.mark.parametrize("cont", [[0, 0, 0], [1, 0, 1]])
def test_lstm_unit_setup_and_gradient(cont):
    c_prev, x = RNG.uniform(-1, 1, size=(1, 3, 7)), RNG.uniform(-1, 1, size=(1, 3, 28))
    layer = make_layer('type: "LSTMUnit"', [c_prev.shape, x.shape, (1, 3)], tops=2)
    assert layer.top_shapes == [(1, 3, 7), (1, 3, 7)]
    for top in (0, 1):
        f = lambda cp, xx, top=top: layer(cp, xx, torch.tensor([cont], dtype=torch.float64))[top]
        leaves = (torch.tensor(c_prev, requires_grad=True), torch.tensor(x, requires_grad=True))
        assert torch.autograd.gradcheck(f, leaves, eps=1e-6, atol=1e-7)


def test_lstm_unit_against_caffes_formulas():
    c_prev, x = RNG.normal(size=(1, 2, 3)), RNG.normal(size=(1, 2, 12))
    cont = np.array([[1.0, 0.0]])
    c, h = make_layer('type: "LSTMUnit"', [c_prev.shape, x.shape, cont.shape], tops=2)(
        *(torch.tensor(a) for a in (c_prev, x, cont)))
    i, f, o, g = _sig(x[..., :3]), _sig(x[..., 3:6]), _sig(x[..., 6:9]), np.tanh(x[..., 9:])
    want_c = cont[..., None] * f * c_prev + i * g
    np.testing.assert_allclose(c.numpy(), want_c, rtol=1e-12)
    np.testing.assert_allclose(h.numpy(), o * np.tanh(want_c), rtol=1e-12)


# ---- Caffe's blob order: a real caffemodel loads into a compiled net ------------------------------------
@pytest.mark.parametrize("name, layer, shapes", [
    ("lstm", "lstm", [(20, 3), (20,), (20, 5)]),
    ("rnn", "rnn", [(4, 3), (4,), (4, 4), (4, 4), (4,)]),
])
def test_caffemodel_loads_in_caffes_blob_order(name, layer, shapes):
    net = compile_net(load_net(str(LAYERS2 / f"{name}.prototxt"), pb.TRAIN))
    assert [tuple(b.shape) for b in net.params()[layer]] == shapes
    load_weights(net.params(), LAYERS2 / f"{name}.caffemodel")
    with np.load(LAYERS2 / f"{name}.npz") as d:
        ref = {k: d[k] for k in d.files}
        inputs = {k[len("input/"):]: torch.tensor(v) for k, v in ref.items() if k.startswith("input/")}
    blobs = net(**inputs)
    top = net.layer_params[2].top[0]
    err = float((blobs[top].detach() - torch.tensor(ref[f"blob/{top}"])).abs().max())
    assert err < 1e-5, f"{name}: top '{top}' differs from Caffe's by {err}"


def test_static_blob_shape_in_caffes_order():
    layer = recurrent("LSTM", [(2, 2, 3), (2, 2), (2, 2, 3, 4)], num_output=5)
    assert layer.blob_names == ("W_xc", "b_c", "W_xc_static", "W_hc")
    assert [tuple(b.shape) for b in layer.blobs] == [(20, 3), (20,), (20, 24), (20, 5)]
    layer = recurrent("RNN", [(2, 2, 3), (2, 2), (2, 6)], num_output=5)
    assert [tuple(b.shape) for b in layer.blobs] == [(5, 3), (5,), (5, 6), (5, 5), (5, 5), (5,)]


def test_debug_info_logs_each_step(caplog):
    layer = recurrent("RNN", [(2, 1, 3), (2, 1)], num_output=2, extra="debug_info: true")
    with caplog.at_level(logging.INFO, logger="netspec"):
        layer(torch.ones(2, 1, 3), torch.ones(2, 1))
    lines = [r.getMessage() for r in caplog.records]
    assert any("Layer test_unit_2, top blob h_2 data:" in m for m in lines), lines


# ---- errors -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, shapes, tops, message", [
    ("", [(3, 2, 4), (3, 1)], 1, r"bottom 1 'b1' \(cont\) has shape \(3, 1\); it must be T×N = \(3, 2\)"),
    ("", [(3, 2, 4), (3, 2, 1)], 1, r"\(cont\) has shape \(3, 2, 1\)"),
    ("", [(3,), (3,)], 1, r"bottom 0 'b0' has shape \(3,\); it must be T×N×"),
    ("", [(3, 2, 4), (3, 2), (5, 4)], 1, r"\(x_static\) has shape \(5, 4\); its first axis must be N = 2"),
    ("expose_hidden: true", [(3, 2, 4), (3, 2), (1, 2, 5), (1, 2, 4)], 3,
     r"bottom 3 'b3' has shape \(1, 2, 4\); the initial state must be \(1, 2, 5\)"),
    ("expose_hidden: true", [(3, 2, 4), (3, 2), (1, 2, 5), (1, 2, 5)], 1, r"LSTM has 3 top\(s\)"),
    ("", [(3, 2, 4), (3, 2), (2, 4), (1, 2, 5)], 1, r"found 4 bottoms"),
])
def test_recurrent_errors(text, shapes, tops, message):
    with pytest.raises(NetspecError, match=r"layer 'test': .*" + message):
        make_layer(f'type: "LSTM" recurrent_param {{ num_output: 5 {text} }}', shapes, tops=tops)


def test_num_output_and_lstm_unit_errors():
    with pytest.raises(NetspecError, match="num_output must be positive"):
        make_layer('type: "RNN"', [(3, 2, 4), (3, 2)])
    with pytest.raises(ShapeError, match=r"4 × 3 \(the cell size of c_prev\)"):
        make_layer('type: "LSTMUnit"', [(1, 2, 3), (1, 2, 8), (1, 2)], tops=2)
    with pytest.raises(ShapeError, match=r"bottom 2 'b2' has shape \(1, 3\)"):
        make_layer('type: "LSTMUnit"', [(1, 2, 3), (1, 2, 12), (1, 3)], tops=2)
