"""On a GPU (marker `cuda`; skipped without one): the training loop between two displays makes no
synchronising CUDA call, reductions over blobs on two GPUs give the CPU's numbers, LRN under fp16
autocast stays finite on activations of AlexNet's size, and the fp16 loss scaler skips an overflowing
update without the host reading anything."""
import numpy as np
import pytest
import torch

from netspec.proto import pb
from netspec.solver import make_update_rule
from netspec.solver.speed import LossScaler
from test_solver_device_side import P
from test_solver_solver import make_solver, weights

pytestmark = pytest.mark.cuda


def test_no_synchronising_call_between_displays(tmp_path):
    solver = make_solver(tmp_path, "display: 100 test_interval: 1000 test_initialization: false "
                                   "clip_gradients: 10", device="cuda:0")
    solver.step(2)                                 # first allocations, the first display
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            solver._watch_loss(solver._iteration_loss(), 0)
            solver.apply_update()
            solver.iter += 1
    finally:
        torch.cuda.set_sync_debug_mode("default")
    solver.deferred.flush()
    assert np.isfinite(solver.smoothed_loss)


def test_non_finite_loss_on_the_gpu_keeps_the_weights(tmp_path):
    solver = make_solver(tmp_path, "display: 10 test_interval: 1000 test_initialization: false", device="cuda:0")
    solver.step(1)
    with torch.no_grad():
        solver.net.params()["ip2"][0].fill_(float("nan"))
    before = weights(solver)
    with pytest.raises(Exception, match="iteration 1: the loss is nan"):
        solver.step(4)
    after = weights(solver)
    for k in before:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_clip_gradients_over_two_gpus_equals_the_cpu():
    rng = np.random.default_rng(0)
    ws = [rng.normal(0, 1, s).astype(np.float32) for s in [(3, 4), (5,), (2, 3)]]
    gs = [rng.normal(0, 3, w.shape).astype(np.float32) for w in ws]
    out = {}
    for name, devices in (("cpu", ["cpu"] * 3), ("gpus", ["cuda:0", "cuda:1", "cuda:0"])):
        params = []
        for w, g, d in zip(ws, gs, devices):
            t = torch.tensor(w, device=d)
            t.grad = torch.tensor(g, device=d)
            params.append(P(t, 1.0, 1.0))
        rule = make_update_rule(pb.SolverParameter(type="SGD", momentum=0.9, clip_gradients=1.0))
        rule.init(params)
        rule.apply(params, 0.1, 0)
        out[name] = [p.tensor.cpu().numpy() for p in params]
    for a, b in zip(out["cpu"], out["gpus"]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


def test_lrn_under_fp16_autocast_on_activations_of_300():
    from layer_runner import make_layer
    layer = make_layer('type: "LRN" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }', [(2, 8, 6, 6)]).cuda()
    x = torch.linspace(-300, 300, 2 * 8 * 6 * 6, device="cuda").reshape(2, 8, 6, 6).requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.float16):
        y = layer(x.half())
    y.float().sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    np.testing.assert_allclose(y.float().detach().cpu().numpy(), layer(x.detach()).cpu().numpy(), rtol=3e-3, atol=0.05)


def test_loss_scaler_skips_an_overflow_on_the_device():
    w = torch.nn.Parameter(torch.ones(3, device="cuda"))
    scaler = LossScaler(init_scale=8.0, growth_interval=2, device="cuda")
    w.grad = torch.tensor([8.0, float("inf"), 1.0], device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        ok = scaler.unscale_on_device([w])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert not bool(ok) and scaler.scale == 4.0
