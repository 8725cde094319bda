"""netspec.solver.device_side and the solver's hot loop: reductions over blobs on two devices
(tests/placed.py stands in for two GPUs), values read on the host only at display time, the
device-side guard that keeps a non-finite loss's update out, and the multi-tensor update."""
import logging
from collections import namedtuple

import numpy as np
import pytest
import torch
from placed import Placed

from netspec.proto import pb
from netspec.solver import device_side, make_update_rule
from netspec.solver.solver import NonFiniteLoss
from test_solver_solver import make_solver, weights

f32 = np.float32
P = namedtuple("P", "tensor lr_mult decay_mult")


def test_gather_puts_every_tensor_on_one_device():
    a, b = Placed(torch.ones(2), 0), Placed(torch.full((3,), 2.0), 1)
    with pytest.raises(RuntimeError, match="same device"):
        torch.cat([a, b])
    joined = device_side.cat([a, b])
    assert joined.device == torch.device("cuda", 0) and joined.cpu().tolist() == [1, 1, 2, 2, 2]
    assert device_side.stack([b.sum(), a.sum()]).device == torch.device("cuda", 1)
    assert device_side.stack([a.sum(), b.sum()], device="cpu").tolist() == [2.0, 6.0]


def test_sequential_sum_rounds_once_per_term_in_float32():
    values = torch.tensor([1.0, 1e-8, 1e-8, 1e-8], dtype=torch.float32)   # each term alone vanishes
    want = f32(0)
    for v in values.numpy():
        want = f32(want + v)
    assert float(device_side.sequential_sum(values)) == float(want) == 1.0


def _clip_params(slots, rng):
    ws = [rng.normal(0, 1, s).astype(f32) for s in [(3, 4), (5,), (2, 3)]]
    gs = [rng.normal(0, 3, w.shape).astype(f32) for w in ws]
    params = []
    for w, g, slot in zip(ws, gs, slots):
        t = Placed(torch.tensor(w), slot)
        t.grad = Placed(torch.tensor(g), slot)
        params.append(P(t, 1.0, 1.0))
    return ws, gs, params


def test_clip_gradients_over_blobs_on_two_devices(caplog):
    """AlexNet's two columns: blobs on cuda:0 and cuda:1; the norm is gathered, the update is Caffe's."""
    caplog.set_level(logging.INFO, logger="netspec")
    sp = pb.SolverParameter(type="SGD", momentum=0.0, clip_gradients=1.0)
    ws, gs, params = _clip_params([0, 1, 0], np.random.default_rng(0))
    rule = make_update_rule(sp)
    rule.history = [torch.zeros_like(p.tensor) for p in params]   # init's zeros, on each blob's device
    rule.apply(params, 0.1, 0)
    norm = f32(0)
    for g in gs:
        norm = f32(norm + f32(np.dot(g.ravel(), g.ravel())))
    norm = f32(np.sqrt(norm))
    for p, w, g in zip(params, ws, gs):
        want = w - f32(0.1) * (g * (f32(1.0) / norm))
        assert p.tensor.device.index == p.tensor.grad.device.index
        np.testing.assert_allclose(p.tensor.cpu().numpy(), want, rtol=1e-6, atol=1e-7)
    assert f"L2 norm {norm:g} > 1" in caplog.text


def test_clip_log_line_waits_for_the_deferred_read(caplog):
    caplog.set_level(logging.INFO, logger="netspec")
    sp = pb.SolverParameter(type="SGD", clip_gradients=0.5)
    _, _, params = _clip_params([0, 0, 0], np.random.default_rng(1))
    params = [P(torch.Tensor(p.tensor.cpu()), 1.0, 1.0) for p in params]
    for p in params:
        p.tensor.grad = torch.ones_like(p.tensor)
    rule, deferred = make_update_rule(sp), device_side.DeferredReads()
    rule.init(params)
    rule.apply(params, 0.1, 0, defer=deferred)
    assert "Gradient clipping" not in caplog.text and len(deferred) == 1
    deferred.flush()
    assert "Gradient clipping: scaling down gradients (L2 norm 4.79583 > 0.5)" in caplog.text


@pytest.mark.parametrize("kind", ["SGD", "Adam"])
def test_guarded_update_keeps_weights_and_history_when_not_ok(kind):
    sp = pb.SolverParameter(type=kind, momentum=0.9, weight_decay=0.01)
    rng = np.random.default_rng(2)
    params = [P(torch.tensor(rng.normal(0, 1, s).astype(f32)), lr, 1.0) for s, lr in [((3,), 1.0), ((2, 2), 2.0)]]
    twin = [P(p.tensor.clone(), p.lr_mult, p.decay_mult) for p in params]
    rule, plain = make_update_rule(sp), make_update_rule(sp)
    rule.init(params)
    plain.init(twin)
    for it in range(3):
        grads = [torch.tensor(rng.normal(0, 1, p.tensor.shape).astype(f32)) for p in params]
        for p, q, g in zip(params, twin, grads):
            p.tensor.grad, q.tensor.grad = g.clone(), g.clone()
        rule.apply(params, 0.1, it, ok=torch.tensor(True))
        plain.apply(twin, 0.1, it)
        for p, q in zip(params, twin):
            assert torch.equal(p.tensor, q.tensor), f"{kind} iteration {it}: ok=True differs from no guard"
    before = [p.tensor.clone() for p in params], [h.clone() for h in rule.history]
    for p in params:
        p.tensor.grad = torch.full_like(p.tensor, float("nan"))
    rule.apply(params, 0.1, 3, ok=torch.tensor(False))
    assert all(torch.equal(p.tensor, w) for p, w in zip(params, before[0]))
    assert all(torch.equal(h, k) for h, k in zip(rule.history, before[1]))
    # SGD masks its own arithmetic; only the other rules copy the state aside (memory traffic)
    assert (getattr(rule, "_scratch", None) is None) == (kind == "SGD")


def test_multi_tensor_update_calls_are_per_group_not_per_blob(monkeypatch):
    """LeNet-like: 8 blobs in 2 (lr_mult, decay_mult) groups; the SGD momentum step is a few
    multi-tensor calls per group instead of several calls per blob."""
    calls = []
    for name in ("_foreach_mul_", "_foreach_add_", "_foreach_copy_", "_foreach_sub_"):
        real = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, _r=real, _n=name, **k: (calls.append(_n), _r(*a, **k))[1])
    sp = pb.SolverParameter(type="SGD", momentum=0.9, weight_decay=0.0005)
    params = [P(torch.ones(4, 3) if i % 2 == 0 else torch.ones(4), 1.0 + i % 2, 1.0 - i % 2) for i in range(8)]
    for p in params:
        p.tensor.grad = torch.ones_like(p.tensor)
    rule = make_update_rule(sp)
    rule.init(params)
    rule.apply(params, 0.01, 0)
    assert len(calls) <= 9, calls       # regularize (1 group), mul+add+copy (2 groups), one Net::Update
    np.testing.assert_allclose(params[0].tensor.numpy(), 1 - f32(0.01) * (1 + f32(0.0005)), rtol=1e-6)


# ---- the solver's loop ----------------------------------------------------------------------------
class HostReads:
    """Counts the calls that make the host wait for a tensor's value."""

    NAMES = ("item", "__float__", "__bool__", "__int__", "tolist", "numpy", "cpu")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.NAMES:
            real = getattr(torch.Tensor, name)

            def counted(t, *a, _real=real, **k):
                self.count += 1
                return _real(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, counted)


def test_no_host_read_between_displays(tmp_path, monkeypatch):
    """20 iterations displayed every 10: the losses, clip's norm and the guard are read in one
    transfer per display (plus the end of step), not once per iteration."""
    solver = make_solver(tmp_path, "display: 10 test_interval: 1000 test_initialization: false clip_gradients: 100 "
                                   "average_loss: 4")
    solver.test_nets = []
    solver._host_only = False            # the path a GPU run takes (on the CPU the guard reads its flag)
    reads = HostReads(monkeypatch)
    flushes = []
    real_flush = solver.deferred.flush
    monkeypatch.setattr(solver.deferred, "flush", lambda: (flushes.append(len(solver.deferred)), real_flush()))
    solver.step(20)
    # .cpu().numpy() once per flush (iterations 0 and 10, the end of step) and once per display for
    # its 'Train net output' lines; a read per iteration would make at least 20.
    assert len(flushes) == 3 and reads.count <= 2 * (len(flushes) + 2), f"{reads.count} host reads"
    assert flushes[1] >= 2 * 10, flushes    # iterations 1..10: at least the loss and clip's norm each


def test_deferred_losses_give_caffes_smoothed_loss(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="netspec")
    solver = make_solver(tmp_path, "display: 3 average_loss: 2 test_interval: 1000 test_initialization: false")
    solver.test_nets = []
    losses = []
    real = solver.forward_backward
    solver.forward_backward = lambda: (losses.append(float(l := real())), l)[1]
    solver.step(7)
    smoothed = [f32(0)]
    window = []
    for i, loss in enumerate(losses):
        if len(window) < 2:
            window.append(f32(loss))
            smoothed.append(f32((smoothed[-1] * f32(len(window) - 1) + f32(loss)) / f32(len(window))))
        else:
            smoothed.append(f32(smoothed[-1] + (f32(loss) - window[i % 2]) / f32(2)))
            window[i % 2] = f32(loss)
    assert solver.smoothed_loss == smoothed[-1]
    assert f"Iteration 6 (" in caplog.text


@pytest.mark.parametrize("host_only", [True, False])
def test_non_finite_loss_found_at_display_names_its_iteration_and_skips_every_update(tmp_path, host_only):
    solver = make_solver(tmp_path, "display: 10 test_interval: 1000 test_initialization: false")
    solver.test_nets = []
    solver._host_only = host_only        # False: the device-side guard a GPU run uses
    solver.step(2)
    with torch.no_grad():
        solver.net.params()["ip2"][0].fill_(float("nan"))
    before = weights(solver)
    with pytest.raises(NonFiniteLoss, match=r"iteration 2: the loss is nan"):
        solver.step(6)                     # read at iteration 10's display... or the end of step
    assert solver.iter == 2
    after = weights(solver)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    solver.net.params()["ip2"][0].data.normal_()
    solver.step(1)                         # training can go on from there
    assert solver.iter == 3


# ---- speed options follow the layers' devices -----------------------------------------------------
class _NetOn:
    """A net whose layers sit on cuda:0 (Placed) while the solver's device is the CPU."""

    def __init__(self):
        self.weight = Placed(torch.ones(2), 0)

    def parameters(self):
        return iter([self.weight])

    def buffers(self):
        return iter([])


def test_speed_options_follow_the_layers_devices(monkeypatch):
    from netspec.solver import speed
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    sp = pb.SolverParameter(precision="bf16", cudnn_benchmark=True)
    dtype, scaler = speed.configure(_NetOn(), sp, torch.device("cpu"))
    assert dtype is torch.bfloat16 and scaler is None
    assert torch.backends.cudnn.benchmark, "--device-map gpu0=cuda:0 with a CPU solver: no autotuning"
    entered, real = [], torch.autocast
    monkeypatch.setattr(torch, "autocast", lambda device_type, dtype: (entered.append(device_type),
                                                                       real("cpu", dtype))[1])
    with speed.autocast(speed.net_devices(_NetOn(), "cpu") + [torch.device("cpu")], dtype):
        pass
    assert entered == ["cuda", "cpu"]


def test_solver_autocasts_on_its_nets_devices(tmp_path, monkeypatch):
    solver = make_solver(tmp_path, 'precision: "bf16"', device="cpu")
    assert solver._devices == [torch.device("cpu")]
    entered, real = [], torch.autocast
    monkeypatch.setattr(torch, "autocast", lambda device_type, dtype: (entered.append((device_type, dtype)),
                                                                       real(device_type, dtype))[1])
    with torch.no_grad():
        solver._forward(solver.net)
    assert entered == [("cpu", torch.bfloat16)]


def test_without_display_lines_the_deferred_values_are_still_read_now_and_then(tmp_path, monkeypatch):
    from netspec.solver import solver as solver_mod

    monkeypatch.setattr(solver_mod, "MAX_DEFERRED", 6)
    solver = make_solver(tmp_path, "display: 0 test_interval: 1000 test_initialization: false")
    solver._host_only = False            # as on a GPU: losses and flags wait for a host read
    sizes = []
    real_add = solver.deferred.add
    monkeypatch.setattr(solver.deferred, "add",
                        lambda v, h: (real_add(v, h), sizes.append(len(solver.deferred))))
    solver.step(20)
    assert sizes and max(sizes) <= 6 + 2, max(sizes)     # a loss and a label flag per iteration at most
    assert len(solver.losses) > 0
