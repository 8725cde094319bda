"""Caffe's update rules against a plain-numpy transcription of SGDSolver::ApplyUpdate and the
ComputeUpdateValue of every solver type, on small random blobs with synthetic gradients."""
from collections import namedtuple

import numpy as np
import pytest
import torch

from netspec.errors import NetspecError
from netspec.proto import pb
from netspec.solver import make_update_rule, solver_type

f32 = np.float32
P = namedtuple("P", "tensor lr_mult decay_mult")
SHAPES = [(3, 4), (5,), (2, 3, 2, 2)]
LR_MULTS, DECAY_MULTS = [1.0, 2.0, 0.5], [1.0, 0.0, 2.0]
SOLVERS = {
    "SGD": dict(momentum=0.9),
    "Nesterov": dict(momentum=0.9),
    "AdaGrad": dict(delta=1e-6),
    "RMSProp": dict(rms_decay=0.95, delta=1e-6),
    "AdaDelta": dict(momentum=0.95, delta=1e-6),
    "Adam": dict(momentum=0.9, momentum2=0.999, delta=1e-8),
}


def reference_step(sp, ws, gs, hist, rate, it, lr_mults, decay_mults):
    """One Caffe update in numpy float32; returns new weights, mutates `hist` (Caffe's layout)."""
    gs = [g.astype(f32) for g in gs]
    n = len(ws)
    if sp.clip_gradients >= 0:
        norm = f32(np.sqrt(sum(f32(np.sum(g * g)) for g in gs)))
        if norm > f32(sp.clip_gradients):
            gs = [g * (f32(sp.clip_gradients) / norm) for g in gs]
    out = []
    for i, (w, g) in enumerate(zip(ws, gs)):
        if sp.iter_size > 1:
            g = g * (f32(1) / f32(sp.iter_size))
        decay = f32(sp.weight_decay) * f32(decay_mults[i])
        if decay:
            g = g + decay * (w if sp.regularization_type == "L2" else np.sign(w))
        lr = f32(rate) * f32(lr_mults[i])
        g = reference_value(sp, hist, i, n, g, lr, it)
        out.append(w - g)
    return out


def reference_value(sp, hist, i, n, g, lr, it):
    """ComputeUpdateValue of each solver type, straight from the Caffe formulas."""
    mom, delta = f32(sp.momentum), f32(sp.delta)
    kind = sp.type
    if kind == "SGD":
        hist[i] = mom * hist[i] + lr * g
        return hist[i].copy()
    if kind == "Nesterov":
        prev = hist[i].copy()
        hist[i] = mom * hist[i] + lr * g
        return (f32(1) + mom) * hist[i] - mom * prev
    if kind == "AdaGrad":
        hist[i] = hist[i] + g * g
        return lr * (g / (np.sqrt(hist[i]) + delta))
    if kind == "RMSProp":
        d = f32(sp.rms_decay)
        hist[i] = d * hist[i] + (f32(1) - d) * g * g
        return lr * (g / (np.sqrt(hist[i]) + delta))
    if kind == "AdaDelta":
        hist[i] = mom * hist[i] + (f32(1) - mom) * g * g
        g = g * np.sqrt((hist[n + i] + delta) / (hist[i] + delta))
        hist[n + i] = mom * hist[n + i] + (f32(1) - mom) * g * g
        return lr * g
    if kind == "Adam":
        b2, t = f32(sp.momentum2), it + 1
        hist[i] = mom * hist[i] + (f32(1) - mom) * g
        hist[n + i] = b2 * hist[n + i] + (f32(1) - b2) * g * g
        corr = f32(np.sqrt(1 - np.float64(b2) ** t) / (1 - np.float64(mom) ** t))
        return (lr * corr) * (hist[i] / (np.sqrt(hist[n + i]) + delta))
    raise AssertionError(kind)


def _rel_err(got, want):
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def _params(ws, lr_mults, decay_mults):
    return [P(torch.tensor(w, requires_grad=lr != 0), lr, dm) for w, lr, dm in zip(ws, lr_mults, decay_mults)]


def run_both(sp, iters=12, lr_mults=LR_MULTS, decay_mults=DECAY_MULTS, seed=0, grad_scale=1.0):
    """Run netspec and the numpy reference side by side; assert parity after every iteration."""
    rng = np.random.default_rng(seed)
    ws = [rng.normal(0, 1, s).astype(f32) for s in SHAPES]
    params = _params(ws, lr_mults, decay_mults)
    rule = make_update_rule(sp)
    rule.init(params)
    hist = [np.zeros(s, f32) for _ in range(rule.states_per_param) for s in SHAPES]
    for it in range(iters):
        rate = float(f32(0.1 * 0.5 ** (it // 4)))           # a step schedule: the rate changes twice
        gs = [(grad_scale * rng.normal(0, 1, s)).astype(f32) for s in SHAPES]
        for p, g, lr in zip(params, gs, lr_mults):
            p.tensor.grad = torch.tensor(g) if lr != 0 else None
        rule.apply(params, rate, it)
        ws = reference_step(sp, ws, [g if lr != 0 else np.zeros_like(g) for g, lr in zip(gs, lr_mults)],
                            hist, rate, it, lr_mults, decay_mults)
        for i, (p, w) in enumerate(zip(params, ws)):
            err = _rel_err(p.tensor.detach().numpy(), w)
            assert err < 1e-6, f"{sp.type} iter {it}: blob {i} weights, worst relative error {err:.3g}"
        for i, (h, want) in enumerate(zip(rule.history_to_arrays(), hist)):
            err = _rel_err(h, want)
            assert err < 1e-6, f"{sp.type} iter {it}: history {i}, worst relative error {err:.3g}"
    return params, rule, ws


@pytest.mark.parametrize("kind", SOLVERS)
def test_solver_matches_caffe_formulas(kind):
    sp = pb.SolverParameter(type=kind, weight_decay=0.01, **SOLVERS[kind])
    params, _, _ = run_both(sp)
    moved = [np.abs(p.tensor.detach().numpy()).sum() for p in params]
    assert all(np.isfinite(moved)), f"{kind}: non-finite weights"


def test_iter_size_normalizes_accumulated_diff():
    sp = pb.SolverParameter(type="SGD", momentum=0.9, weight_decay=0.01, iter_size=2)
    run_both(sp)


def test_clip_gradients_scales_by_global_norm():
    sp = pb.SolverParameter(type="SGD", momentum=0.9, weight_decay=0.01, clip_gradients=1.0)
    run_both(sp, grad_scale=5.0)             # norm ~ 30, far above the clip


def test_clip_gradients_changes_the_update():
    sp = pb.SolverParameter(type="SGD", momentum=0.9, clip_gradients=1.0)
    _, _, clipped = run_both(sp, iters=1, grad_scale=5.0)
    _, _, free = run_both(pb.SolverParameter(type="SGD", momentum=0.9), iters=1, grad_scale=5.0)
    assert _rel_err(clipped[0], free[0]) > 1e-3, "clip_gradients had no effect"


def test_l1_regularization():
    sp = pb.SolverParameter(type="SGD", momentum=0.9, weight_decay=0.05, regularization_type="L1")
    run_both(sp)


def test_lr_mult_and_decay_mult_zero_freeze_a_blob():
    sp = pb.SolverParameter(type="Adam", momentum=0.9, momentum2=0.999, weight_decay=0.01)
    params, rule, _ = run_both(sp, lr_mults=[1.0, 0.0, 1.0], decay_mults=[1.0, 0.0, 1.0])
    n = len(SHAPES)
    # the frozen blob is the second one run_both draws from its generator; compare with that start
    rng = np.random.default_rng(0)
    rng.normal(0, 1, SHAPES[0])
    start = rng.normal(0, 1, SHAPES[1]).astype(f32)
    assert np.array_equal(params[1].tensor.detach().numpy(), start), "lr_mult 0 blob moved"
    assert len(rule.history) == 2 * n and rule.history[1].shape == SHAPES[1]


def test_frozen_blob_with_decay_still_fills_adagrad_history():
    # Caffe regularizes and accumulates history for lr_mult 0 blobs; only the step itself is zero.
    sp = pb.SolverParameter(type="AdaGrad", weight_decay=0.1, delta=1e-6)
    params, rule, _ = run_both(sp, iters=3, lr_mults=[1.0, 0.0, 1.0], decay_mults=[1.0, 1.0, 1.0])
    assert rule.history[1].abs().sum() > 0


@pytest.mark.parametrize("kind", ["AdaDelta", "Adam"])
def test_second_history_set_follows_the_first(kind):
    sp = pb.SolverParameter(type=kind, **SOLVERS[kind])
    _, rule, _ = run_both(sp, iters=2)
    n = len(SHAPES)
    assert [tuple(h.shape) for h in rule.history] == SHAPES + SHAPES
    # Adam: history[i] is m (signed), history[n + i] is v (non-negative); AdaDelta: both non-negative
    assert all((rule.history[n + i] >= 0).all() for i in range(n))
    if kind == "Adam":
        assert any((rule.history[i] < 0).any() for i in range(n)), "first Adam set is not m"


@pytest.mark.parametrize("kind", SOLVERS)
def test_history_round_trip_resumes_identically(kind):
    sp = pb.SolverParameter(type=kind, weight_decay=0.01, **SOLVERS[kind])
    params, rule, _ = run_both(sp, iters=3)
    resumed = make_update_rule(sp)
    resumed.init(params)
    resumed.history_from_arrays([a.reshape(-1) for a in rule.history_to_arrays()])
    twin = [P(p.tensor.detach().clone(), p.lr_mult, p.decay_mult) for p in params]
    for group, r in ((params, rule), (twin, resumed)):
        for p, s in zip(group, SHAPES):
            p.tensor.grad = torch.full(s, 0.3)
        r.apply(group, 0.05, 3)
    for i, (a, b) in enumerate(zip(params, twin)):
        assert torch.equal(a.tensor, b.tensor), f"{kind}: blob {i} differs after resuming"


def test_history_from_arrays_checks_count_and_size():
    sp = pb.SolverParameter(type="Adam")
    rule = make_update_rule(sp, file="s.solverstate")
    rule.init(_params([np.zeros(s, f32) for s in SHAPES], LR_MULTS, DECAY_MULTS))
    with pytest.raises(NetspecError, match=r"^s\.solverstate: .*expected 6 history blobs.*found 3"):
        rule.history_from_arrays([np.zeros(s, f32) for s in SHAPES])
    with pytest.raises(NetspecError, match="history blob 0 expected 12 values"):
        rule.history_from_arrays([np.zeros(7, f32)] + [np.zeros(s, f32) for s in SHAPES[1:] + SHAPES])


def test_update_is_left_in_grad_like_caffe_diff():
    sp = pb.SolverParameter(type="SGD", momentum=0.9)
    w = torch.ones(3, requires_grad=True)
    rule = make_update_rule(sp)
    rule.init([P(w, 1.0, 1.0)])
    w.grad = torch.full((3,), 2.0)
    rule.apply([P(w, 1.0, 1.0)], 0.1, 0)
    assert torch.allclose(w.grad, torch.full((3,), 0.2)) and torch.allclose(w.detach(), torch.full((3,), 0.8))


def test_deprecated_solver_type_enum():
    assert solver_type(pb.SolverParameter(solver_type=pb.SolverParameter.ADAM)) == "Adam"
    assert make_update_rule(pb.SolverParameter(solver_type=pb.SolverParameter.NESTEROV)).type == "Nesterov"
    assert solver_type(pb.SolverParameter()) == "SGD"
    with pytest.raises(NetspecError, match="found both"):
        solver_type(pb.SolverParameter(type="SGD", solver_type=pb.SolverParameter.ADAM), file="s.prototxt")


def test_unknown_solver_type_lists_known_ones():
    with pytest.raises(NetspecError, match=r"^s\.prototxt: unknown solver type: .*AdaDelta.*found 'Adamax'"):
        make_update_rule(pb.SolverParameter(type="Adamax"), file="s.prototxt")


@pytest.mark.parametrize("kind", ["AdaGrad", "RMSProp"])
def test_momentum_is_refused_where_caffe_refuses_it(kind):
    with pytest.raises(NetspecError, match="momentum 0"):
        make_update_rule(pb.SolverParameter(type=kind, momentum=0.9))


def test_unknown_regularization_type():
    with pytest.raises(NetspecError, match="regularization_type.*'L3'"):
        make_update_rule(pb.SolverParameter(weight_decay=0.1, regularization_type="L3"))
