"""The solver's speed options (netspec/solver/speed.py) against float32 on a small CaffeNet-like net
(Convolution, ReLU, LRN, MAX Pooling, a grouped Convolution, InnerProduct, SoftmaxWithLoss):
every blob of one forward, the loss, and one SGD step's update of every parameter blob stay within
the tolerances speed.py's docstring documents. torch.compile's agreement with eager is checked by
tests/test_models.py::test_caffenet_deploy_under_torch_compile (not repeated here); here, that
torch.compile sees a net as one graph (a graph break, e.g. a layer's forward touching its protobuf,
costs fusion across the break: 7-9% of CaffeNet's training step on the CPU).

The forward is checked through speed.configure/speed.autocast on a compiled net (what the solver
runs); the step through the Solver itself, whose DummyData draws the same batch under every option
(the same random_seed), so fp32 and each option see the same data and start from the same weights.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from google.protobuf import text_format

from netspec.frontend import prepare_net
from netspec.graph import compile_net, devices
from netspec.proto import pb
from netspec.solver import speed
from netspec.solver.solver import Solver

LAYERS = """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 16 kernel_size: 5 stride: 2
                      weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1"
  lrn_param { local_size: 5 alpha: 0.0005 beta: 0.75 k: 2 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 32 kernel_size: 3 pad: 1 group: 2
                      weight_filler { type: "gaussian" std: 0.1 }
                      bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc6" type: "InnerProduct" bottom: "pool2" top: "fc6"
  inner_product_param { num_output: 64 weight_filler { type: "gaussian" std: 0.05 }
                        bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "fc8" type: "InnerProduct" bottom: "fc6" top: "fc8"
  inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.05 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc8" bottom: "label" top: "loss" }
"""
INPUT = """layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 8 dim: 3 dim: 35 dim: 35 } shape { dim: 8 } } }"""
DUMMY = """layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 3 dim: 35 dim: 35 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: 0 max: 9.99 } } }"""

# Tolerances documented in netspec/solver/speed.py: (forward blob, loss, parameter update).
TOLERANCE = {"bf16": (3e-2, 1e-2, 0.2), "fp16": (5e-3, 2e-3, 3e-2), "channels_last": (1e-5, 1e-5, 1e-5)}


def net_param(source: str) -> pb.NetParameter:
    net = pb.NetParameter()
    text_format.Merge(f'name: "smallcaffenet"\n{source}\n{LAYERS}', net)
    return net


def solver_param(option: str) -> pb.SolverParameter:
    sp = pb.SolverParameter(base_lr=0.1, momentum=0.9, weight_decay=5e-4, lr_policy="fixed", max_iter=10,
                            display=0, random_seed=7)
    sp.net_param.CopyFrom(net_param(DUMMY))
    if option in ("bf16", "fp16"):
        sp.precision = option
    elif option == "channels_last":
        sp.channels_last = True
    return sp


def autocast_works(device: str, dtype) -> bool:
    """torch warns and switches autocast off for a dtype the device type does not support."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            with torch.autocast(device_type=device, dtype=dtype):
                return True
        except (RuntimeError, UserWarning):
            return False


def options(device: str) -> list:
    """Every option, skipped where the device cannot run it (fp16 autocast on an old CPU torch)."""
    out = []
    for opt in ("bf16", "fp16", "channels_last"):
        dtype = speed.PRECISIONS.get(opt)
        ok = dtype is None or autocast_works(device, dtype)
        skip = pytest.mark.skipif(not ok, reason=f"no {opt} autocast on {device}")
        out.append(pytest.param(opt, marks=skip))
    return out


CUDA = pytest.mark.cuda


@pytest.fixture
def tf32_switches(monkeypatch):
    """torch's TF32 switches and netspec's record of a tf32 request, restored after the test."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    monkeypatch.setattr(devices, "_tf32_asked", False)
    monkeypatch.delenv(devices.TF32_ENV, raising=False)
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def true_fp32(tf32_switches):
    """fp32 on CUDA without TF32 (cuDNN's default for convolutions), so fp32 is the reference."""
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False


def forward(option: str, device: torch.device) -> dict[str, torch.Tensor]:
    """Every blob of one forward of the Input-fed net under `option`, as float32 on the CPU."""
    param = net_param(INPUT)
    param.state.phase = pb.TRAIN
    net = compile_net(prepare_net(param, param.state, None), pb.TRAIN, device=device, seed=3)
    sp = solver_param(option)
    dtype, _ = speed.configure(net, sp, device)
    gen = torch.Generator().manual_seed(0)
    data = torch.randn(8, 3, 35, 35, generator=gen).to(device)
    label = torch.randint(0, 10, (8,), generator=gen).float().to(device)
    with torch.no_grad(), speed.autocast(device, dtype):
        blobs = net(data=data, label=label)
    return {b: t.float().cpu() for b, t in blobs.items() if b not in ("data", "label")}


def one_step(option: str, device: torch.device) -> tuple[float, dict[str, torch.Tensor], Solver]:
    """The loss of one Solver iteration under `option` and each parameter blob's update."""
    solver = Solver(solver_param(option), None, device=device)
    def blobs():
        return {f"{n}/{i}": t.detach().float().cpu().clone()
                for n, ts in solver.net.params().items() for i, t in enumerate(ts)}

    before = blobs()
    solver.step(1)
    after = blobs()
    return float(solver.smoothed_loss), {k: after[k] - before[k] for k in before}, solver


def relative(a: torch.Tensor, b: torch.Tensor, norm: bool = False) -> float:
    """Worst |a - b| over max |b| (norm=True: ||a - b|| / ||b||)."""
    if norm:
        return float((a - b).norm() / b.norm().clamp(min=1e-30))
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-30))


def check_forward(option: str, device: torch.device) -> None:
    ref, got = forward("fp32", device), forward(option, device)
    blob_tol, loss_tol, _ = TOLERANCE[option]
    assert got.keys() == ref.keys()
    for b in ref:
        err = relative(got[b], ref[b])
        tol = loss_tol if b == "loss" else blob_tol
        assert err <= tol, f"{option}: blob '{b}' relative error {err:.2e} > {tol:.0e}"


def check_step(option: str, device: torch.device) -> Solver:
    loss0, update0, _ = one_step("fp32", device)
    loss, update, solver = one_step(option, device)
    _, loss_tol, update_tol = TOLERANCE[option]
    assert abs(loss - loss0) <= loss_tol * abs(loss0), f"{option}: loss {loss} vs fp32 {loss0}"
    for k in update0:
        assert float(update0[k].abs().max()) > 0, f"blob {k} was not updated in fp32"
        err = relative(update[k], update0[k], norm=True)
        assert err <= update_tol, f"{option}: blob {k} update: relative L2 error {err:.2e} > {update_tol:.0e}"
    return solver


@pytest.mark.parametrize("option", options("cpu"))
def test_forward_on_cpu_stays_near_fp32(option):
    check_forward(option, torch.device("cpu"))


@pytest.mark.parametrize("option", options("cpu"))
def test_one_training_step_on_cpu_stays_near_fp32(option):
    solver = check_step(option, torch.device("cpu"))
    if option == "channels_last":
        assert solver.net.params()["conv1"][0].is_contiguous(memory_format=torch.channels_last)


def test_fp16_step_scales_the_loss_and_unscales_the_diffs():
    if not autocast_works("cpu", torch.float16):
        pytest.skip("no fp16 autocast on the CPU")
    param = net_param(INPUT)
    net = compile_net(prepare_net(param, param.state, None), pb.TRAIN, seed=3)
    dtype, scaler = speed.configure(net, solver_param("fp16"), torch.device("cpu"))
    assert dtype is torch.float16 and isinstance(scaler, speed.LossScaler) and scaler.scale == 2.0 ** 16
    _, update0, _ = one_step("fp32", torch.device("cpu"))
    _, update, _ = one_step("fp16", torch.device("cpu"))
    # Diffs left scaled would make the update 65536 times the fp32 one.
    ratio = float(update["fc8/0"].norm() / update0["fc8/0"].norm())
    assert 0.9 < ratio < 1.1, f"fc8 update norm is {ratio:.3g} times fp32's"


@CUDA
@pytest.mark.parametrize("option", options("cuda") if torch.cuda.is_available() else ["bf16", "fp16"])
def test_forward_on_cuda_stays_near_fp32(option, true_fp32):
    check_forward(option, torch.device("cuda", 0))


@CUDA
@pytest.mark.parametrize("option", options("cuda") if torch.cuda.is_available() else ["bf16", "fp16"])
def test_one_training_step_on_cuda_stays_near_fp32(option, true_fp32):
    check_step(option, torch.device("cuda", 0))


# Layers whose forward used to read their LayerParameter (Pooling, SoftmaxWithLoss, Accuracy, Split,
# Slice), around the usual ones.
UNBROKEN = """
layer { name: "split" type: "Split" bottom: "data" top: "d1" top: "d2" }
layer { name: "slice" type: "Slice" bottom: "d1" top: "s1" top: "s2" slice_param { axis: 1 slice_point: 1 } }
layer { name: "cat" type: "Concat" bottom: "s2" bottom: "s1" bottom: "d2" top: "x" }
layer { name: "conv" type: "Convolution" bottom: "x" top: "conv"
  convolution_param { num_output: 8 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "norm" type: "LRN" bottom: "conv" top: "norm" }
layer { name: "pool" type: "Pooling" bottom: "norm" top: "pool"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "ave" type: "Pooling" bottom: "pool" top: "ave"
  pooling_param { pool: AVE kernel_size: 2 stride: 2 pad: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "ave" top: "ip" inner_product_param { num_output: 10 } }
layer { name: "drop" type: "Dropout" bottom: "ip" top: "ip" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" top: "prob" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" accuracy_param { top_k: 2 } }
"""


def test_torch_compile_sees_the_net_as_one_graph():
    param = pb.NetParameter()
    text_format.Merge(f'name: "unbroken"\n{INPUT}\n{UNBROKEN}', param)
    param.state.phase = pb.TRAIN
    net = compile_net(prepare_net(param, param.state, None), pb.TRAIN, seed=3)
    gm = net.graph_module(outputs=["loss", "prob", "acc"])
    data, label = torch.randn(8, 3, 35, 35), torch.randint(0, 10, (8,)).float()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(gm)(data, label)
    reasons = [b.reason.splitlines()[0] for b in explained.break_reasons]
    assert explained.graph_count == 1 and not reasons, f"{explained.graph_count} graphs; breaks: {reasons}"


def test_a_gpu_net_computes_float32_without_tf32_unless_asked(tf32_switches, monkeypatch):
    torch.backends.cudnn.allow_tf32 = True             # torch's own default
    devices.float32_on_cuda()
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
    monkeypatch.setenv(devices.TF32_ENV, "1")
    devices.float32_on_cuda()
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32


def test_precision_tf32_holds_for_nets_placed_after_it(tf32_switches, monkeypatch):
    param = net_param(INPUT)
    net = compile_net(prepare_net(param, param.state, None), pb.TRAIN, seed=3)
    monkeypatch.setattr(speed, "net_devices", lambda net, default: [torch.device("cuda", 0)])   # as on a GPU
    sp = solver_param("fp32")
    sp.precision = "tf32"
    assert speed.configure(net, sp, torch.device("cpu")) == (None, None)
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    devices.float32_on_cuda()                          # a test net placed on the GPU later
    assert torch.backends.cudnn.allow_tf32


@CUDA
def test_placing_a_net_on_the_gpu_turns_tf32_off(tf32_switches):
    torch.backends.cudnn.allow_tf32 = True
    param = net_param(INPUT)
    compile_net(prepare_net(param, param.state, None), pb.TRAIN, device=torch.device("cuda", 0), seed=3)
    assert not torch.backends.cudnn.allow_tf32


def test_channels_last_histories_take_the_weights_layout():
    solver = Solver(solver_param("channels_last"), None, device=torch.device("cpu"))
    pairs = [(p.tensor, h) for p, h in zip(solver.net.learnable_params(), solver.rule.history)]
    four_d = [(w, h) for w, h in pairs if w.dim() == 4]
    assert four_d and all(w.is_contiguous(memory_format=torch.channels_last) for w, _ in four_d)
    assert all(h.is_contiguous(memory_format=torch.channels_last) for _, h in four_d)
