"""netspec.solver.Solver: Caffe's Step/Solve/Test schedule, smoothed loss, snapshots and restore,
exact resume, weights for fine-tuning, device maps, non-finite losses and the speed options."""
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from netspec.errors import NetspecError
from netspec.frontend import load_solver
from netspec.net_spec import _is_repeated
from netspec.formats.caffemodel import read_weights, write_caffemodel
from netspec.proto import pb
from netspec.solver.solver import NonFiniteLoss, Solver, fit_device_map, iteration_seed
from netspec.solver.speed import LossScaler

NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 6 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 16 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.5 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" include { phase: TEST } }
"""

SOLVER = """net: "net.prototxt"
test_iter: 2 test_interval: 5
base_lr: 0.05 momentum: 0.9 weight_decay: 0.001 lr_policy: "step" stepsize: 6 gamma: 0.5
display: 1 max_iter: 10 snapshot: 0 snapshot_prefix: "snap/tiny" random_seed: 3 solver_mode: CPU
"""


def solver_text(extra: str = "") -> str:
    """SOLVER with the fields of `extra` overriding its own (repeated ones replaced)."""
    sp, override = pb.SolverParameter(), pb.SolverParameter()
    text_format.Merge(SOLVER, sp)
    text_format.Merge(extra, override)
    for desc, _ in override.ListFields():
        if _is_repeated(desc):
            sp.ClearField(desc.name)
    sp.MergeFrom(override)
    return text_format.MessageToString(sp)


def make_solver(folder: Path, extra: str = "", net: str = NET, **kw) -> Solver:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "snap").mkdir(exist_ok=True)
    (folder / "net.prototxt").write_text(net)
    (folder / "solver.prototxt").write_text(solver_text(extra))
    sp, path = load_solver(folder / "solver.prototxt")
    return Solver(sp, path, **kw)


def weights(solver) -> dict:
    return {f"{n}/{i}": t.detach().cpu().clone().numpy() for n, ts in solver.net.params().items()
            for i, t in enumerate(ts)}


def assert_same(a: dict, b: dict, exact=True):
    assert a.keys() == b.keys()
    for k in a:
        err = float(np.abs(a[k] - b[k]).max())
        assert (err == 0) if exact else err < 1e-6, f"{k}: worst difference {err}"


@pytest.fixture
def inside(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_resume_is_exact_with_dropout(inside):
    straight = make_solver(inside / "a")
    straight.step(10)
    first = make_solver(inside / "b", "snapshot: 5")
    first.step(5)
    state = inside / "b" / "snap" / "tiny_iter_5.solverstate"
    assert state.exists()
    resumed = make_solver(inside / "c")
    resumed.restore(state)
    assert (resumed.iter, resumed.current_step) == (5, 0)
    resumed.step(5)
    assert resumed.iter == 10 and resumed.current_step == 1
    assert_same(weights(straight), weights(resumed))


def test_dropout_really_draws_per_iteration(inside):
    # Without the per-iteration reseed the resumed run would draw other dropout masks; make sure
    # the masks do depend on the iteration's seed, so the test above can fail.
    assert iteration_seed(3, 5) != iteration_seed(3, 6) != iteration_seed(3, 5, 1)
    a, b = make_solver(inside / "a"), make_solver(inside / "b", "random_seed: 4")
    a.step(3)
    b.step(3)
    assert any(np.abs(x - y).max() > 0 for x, y in zip(weights(a).values(), weights(b).values()))


def test_fixed_seed_gives_identical_runs(inside):
    a, b = make_solver(inside / "a"), make_solver(inside / "b")
    a.step(4)
    b.step(4)
    assert_same(weights(a), weights(b))


def test_schedule_display_and_test_lines(inside, caplog):
    caplog.set_level(logging.INFO, logger="netspec")
    solver = make_solver(inside, "average_loss: 3")
    solver.solve()
    text = caplog.text
    assert re.findall(r"Iteration (\d+), Testing net \(#0\)", text) == ["0", "5", "10"]
    assert re.findall(r"Iteration (\d+), lr = ", text) == [str(i) for i in range(10)]
    assert "Iteration 5, lr = 0.05" in text and "Iteration 6, lr = 0.025" in text
    assert re.search(r"Iteration 0 \([\d.e+-]+ iter/s, [\d.e+-]+s/1 iters\), loss = [\d.]+", text)
    assert "Iteration 10, loss = " in text and "Optimization Done." in text
    assert re.search(r"    Train net output #0: loss = [\d.e-]+ \(\* 1 = [\d.e-]+ loss\)", text)
    # Caffe numbers net outputs in name order (its net_output_blobs_ come from a std::set)
    assert re.search(r"    Test net output #0: acc = [\d.]+$", text, re.M)
    assert re.search(r"    Test net output #1: loss = [\d.e-]+ \(\* 1 = [\d.e-]+ loss\)", text)
    # snapshot_after_train: one snapshot at the end (snapshot: 0)
    assert sorted(p.name for p in (inside / "snap").iterdir()) == ["tiny_iter_10.caffemodel",
                                                                   "tiny_iter_10.solverstate"]


def test_smoothed_loss_is_the_mean_of_the_last_average_loss(inside, caplog):
    caplog.set_level(logging.INFO, logger="netspec")
    make_solver(inside, "average_loss: 3").step(8)
    smoothed = [float(v) for v in re.findall(r"iters\), loss = ([\d.e-]+)", caplog.text)]
    raw = [float(v) for v in re.findall(r"Train net output #0: loss = ([\d.e-]+)", caplog.text)]
    assert len(smoothed) == len(raw) == 8
    for i in range(8):
        window = raw[max(0, i - 2):i + 1]
        assert smoothed[i] == pytest.approx(np.mean(window), rel=1e-4), f"iteration {i}"


def test_test_initialization_false_and_no_display(inside, caplog):
    caplog.set_level(logging.INFO, logger="netspec")
    solver = make_solver(inside, "test_initialization: false display: 0 snapshot_after_train: false")
    solver.solve()
    assert re.findall(r"Iteration (\d+), Testing net", caplog.text) == ["5", "10"]
    assert "lr = " not in caplog.text and "Train net output" not in caplog.text
    assert not list((inside / "snap").iterdir())


def test_iter_size_normalizes_accumulated_diffs(inside):
    # Two passes over the same batch (the constant seed is re-drawn identically) give the same
    # normalized diff as one pass.
    net = NET.replace('type: "gaussian" std: 1', 'type: "constant" value: 0.5')
    net = "\n".join(line for line in net.splitlines() if "Dropout" not in line)
    a = make_solver(inside / "a", net=net)
    b = make_solver(inside / "b", "iter_size: 3", net=net)
    a.step(3)
    b.step(3)
    assert_same(weights(a), weights(b), exact=False)


def test_snapshot_prefix_rules(inside):
    solver = make_solver(inside, "", net=NET)
    (inside / "solver.prototxt").write_text(solver_text().replace('snapshot_prefix: "snap/tiny"', ""))
    sp, path = load_solver(inside / "solver.prototxt")
    assert Solver(sp, path).param.snapshot_prefix == str(inside / "solver")
    (inside / "solver.prototxt").write_text(solver_text('snapshot_prefix: "snap"'))
    sp, path = load_solver(inside / "solver.prototxt")
    assert Solver(sp, path).param.snapshot_prefix == str(Path("snap") / "solver")
    (inside / "solver.prototxt").write_text(solver_text('snapshot_prefix: "missing/x" snapshot: 5'))
    sp, path = load_solver(inside / "solver.prototxt")
    with pytest.raises(NetspecError, match="missing/x.*does not exist"):
        Solver(sp, path)
    assert solver.snapshot()[0] == "snap/tiny_iter_0.caffemodel"


def test_snapshot_found_from_another_directory(tmp_path, monkeypatch):
    """A relative snapshot_prefix whose folder exists next to the solver file, not in the cwd."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    solver = make_solver(tmp_path / "run")
    monkeypatch.chdir(elsewhere)
    sp, path = load_solver(tmp_path / "run" / "solver.prototxt")
    solver = Solver(sp, path)
    model, state = solver.snapshot()
    assert Path(model).resolve() == (tmp_path / "run" / "snap" / "tiny_iter_0.caffemodel").resolve()
    assert Path(state).exists()


def test_non_finite_loss_stops_before_the_update(inside):
    solver = make_solver(inside, "snapshot: 2")
    solver.step(2)
    good = weights(solver)
    with torch.no_grad():
        solver.net.params()["ip2"][0].fill_(float("nan"))
    before = weights(solver)
    with pytest.raises(NonFiniteLoss, match=r"iteration 2: the loss is nan.*tiny_iter_2.solverstate"):
        solver.step(3)
    assert solver.iter == 2
    after = weights(solver)
    assert np.isnan(after.pop("ip2/0")).all()
    assert_same(after, {k: v for k, v in before.items() if k != "ip2/0"})  # no update was applied
    saved = read_weights(inside / "snap" / "tiny_iter_2.caffemodel")
    assert np.array_equal(saved["ip2"][1][0], good["ip2/0"])


def test_snapshot_refuses_non_finite_weights(inside):
    solver = make_solver(inside)
    with torch.no_grad():
        solver.net.params()["ip1"][1][0] = float("inf")
    with pytest.raises(NetspecError, match="iteration 0: the weights are not finite"):
        solver.snapshot()
    assert not list((inside / "snap").iterdir())


def test_test_net_shares_the_train_nets_weights(inside):
    solver = make_solver(inside)
    solver.step(1)
    solver.test(0)
    train_w = solver.net.params()["ip1"][0]
    test_w = solver.test_nets[0].params()["ip1"][0]
    assert test_w.data_ptr() == train_w.data_ptr()
    solver.step(1)
    assert torch.equal(test_w, train_w)


def test_weights_load_in_order(inside):
    solver = make_solver(inside)
    a = {n: [t.detach() * 0 + 1 for t in ts] for n, ts in solver.net.params().items()}
    b = {"ip2": [t.detach() * 0 + 2 for t in solver.net.params()["ip2"]]}
    write_caffemodel(inside / "a.caffemodel", solver.net.layer_params, a)
    write_caffemodel(inside / "b.caffemodel", [lp for lp in solver.net.layer_params if lp.name == "ip2"], b)
    tuned = make_solver(inside / "t", f'weights: "{inside}/a.caffemodel,{inside}/b.caffemodel"')
    w = weights(tuned)
    assert (w["ip1/0"] == 1).all() and (w["ip2/0"] == 2).all() and (w["ip2/1"] == 2).all()
    assert (tuned.test_nets[0].params()["ip1"][0] == 1).all()


def test_restore_checks_the_history_count(inside):
    solver = make_solver(inside)
    solver.snapshot()
    adam = make_solver(inside / "adam", 'type: "Adam"')
    with pytest.raises(NetspecError, match="holds 4 history blobs but this solver and net need 8"):
        adam.restore(inside / "snap" / "tiny_iter_0.solverstate")


def test_device_map_names_missing_gpus(caplog):
    if torch.cuda.device_count() >= 2:
        pytest.skip("this machine has both GPUs")
    caplog.set_level(logging.WARNING, logger="netspec")
    device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    dm = fit_device_map("gpu0=cuda:0,gpu1=cuda:1", device)
    assert dm.resolve("gpu0") == dm.resolve("gpu1") == device
    assert "both columns on" in caplog.text and "gpu1" in caplog.text


def test_bf16_autocast_trains(inside):
    fp32, bf16 = make_solver(inside / "a"), make_solver(inside / "b", 'precision: "bf16"')
    fp32.step(3)
    bf16.step(3)
    a, b = weights(fp32), weights(bf16)
    assert all(np.isfinite(v).all() for v in b.values())
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 0.05


def test_unknown_precision_is_one_line_error(inside):
    with pytest.raises(NetspecError, match="precision: expected one of fp32, tf32, bf16, fp16, found 'fp8'"):
        make_solver(inside, 'precision: "fp8"')


def test_loss_scaler_skips_overflow_and_unscales():
    w = torch.nn.Parameter(torch.ones(3))
    scaler = LossScaler(init_scale=8.0, growth_interval=2)
    w.grad = torch.tensor([8.0, 16.0, float("inf")])
    assert not scaler.unscale([w]) and scaler.scale == 4.0
    w.grad = torch.tensor([4.0, 8.0, 12.0])
    assert scaler.unscale([w]) and torch.equal(w.grad, torch.tensor([1.0, 2.0, 3.0]))
    w.grad = torch.tensor([4.0, 4.0, 4.0])
    assert scaler.unscale([w]) and scaler.scale == 8.0


def test_channels_last_gives_the_same_training(inside):
    net = """name: "c"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 3 dim: 8 dim: 8 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
    no_test = "test_iter: 1 test_interval: 100"
    a = make_solver(inside / "a", no_test, net=net)
    b = make_solver(inside / "b", no_test + " channels_last: true", net=net)
    assert b.net.params()["conv"][0].is_contiguous(memory_format=torch.channels_last)
    a.step(3)
    b.step(3)
    assert_same(weights(a), weights(b), exact=False)


def test_feed_writes_the_input_blobs_every_step_reads(tmp_path):
    from netspec.solver import Solver

    data = Path(__file__).parent / "data" / "caffe"
    f = tmp_path / "s.prototxt"
    f.write_text(f'net: "{data / "loss_net.prototxt"}"\nbase_lr: 0.01 lr_policy: "fixed" max_iter: 1 '
                 'solver_mode: CPU random_seed: 1\n')
    solver = Solver(*load_solver(f))
    blobs = np.load(data / "loss_net_blobs.npz")
    solver.net.fill(7)
    solver.feed(data=blobs["data"], label=blobs["label"])
    with torch.no_grad():
        zeros = float(solver.net.total_loss(solver.net(data=torch.zeros(6, 3, 19, 19), label=torch.zeros(6))))
        want = solver.net.total_loss(solver.net(data=torch.from_numpy(blobs["data"]),
                                                label=torch.from_numpy(blobs["label"])))
    assert solver.forward_loss() == pytest.approx(float(want), rel=1e-6) != zeros
    with pytest.raises(NetspecError, match="no input blob 'nope'"):
        solver.feed(nope=np.zeros(1))
