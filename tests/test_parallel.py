"""netspec.parallel and `netspec train` on several processes: -gpu parsing and the replicas' device
maps (pure functions, no GPU needed); two gloo processes of batch B against one process of batch 2B
over the same LMDB (weights, solver history, snapshots written once); resume under two processes;
rank 0's stop request stopping both ranks together; AlexNet's two columns training exactly as one
device; and, where CUDA is present, the same over NCCL and on real GPUs.

How the data correspond: the LMDB holds 24 records read in key order. With two processes, rank r
reads records r, r+2, r+4, ... (the Data layer's sharding), four per batch; the single process reads
eight consecutive records per batch. So at iteration k both see records 8k..8k+7 (modulo 24), the
two ranks each one parity of them; the loss is a per-batch mean, so the mean of the two ranks'
gradients is the single process's gradient up to float rounding.
"""
from __future__ import annotations

import argparse
import datetime
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from google.protobuf import text_format

from netspec import parallel
from netspec.cli import cmd_train, main
from netspec.data import db as dbmod
from netspec.data.datum import mat_to_datum
from netspec.errors import NetspecError
from netspec.frontend import load_net, load_solver
from netspec.graph import compile_net
from netspec.formats.caffemodel import read_weights
from netspec.formats.solverstate import history_arrays, read_solverstate
from netspec.parallel import Rank
from netspec.proto import pb
from netspec.solver import make_update_rule
from netspec.solver.solver import Solver

ALEXNET = Path(__file__).resolve().parent.parent / "models" / "alexnet" / "train_val.prototxt"
RECORDS, B = 24, 4

NET = """name: "small"
layer { name: "data" type: "Data" top: "data" top: "label"
  transform_param { scale: 0.00390625 }
  data_param { source: "records" batch_size: %(batch)d backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" %(col0)s
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" %(col0)s }
layer { name: "conv2" type: "Convolution" bottom: "data" top: "conv2" %(col1)s
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" }
                      bias_filler { type: "constant" value: 0.1 } } }
layer { name: "cat" type: "Concat" bottom: "conv1" bottom: "conv2" top: "cat" %(col0)s }
layer { name: "ip" type: "InnerProduct" bottom: "cat" top: "ip" %(col0)s
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" %(col0)s }
"""
# momentum, weight decay and a learning-rate drop at iteration 4; snapshots at 3 and 6
SOLVER = ('net: "net.prototxt" base_lr: 0.1 momentum: 0.9 weight_decay: 0.0005 lr_policy: "step" '
          'stepsize: 4 gamma: 0.1 display: 1 max_iter: 6 snapshot: 3 snapshot_prefix: "snap/small" '
          'random_seed: 5 solver_mode: CPU')


# ---- -gpu and the replicas' device maps -----------------------------------------------------------
@pytest.mark.parametrize("flag, count, ids", [
    ("0", 1, [0]), ("0,1", 2, [0, 1]), ("1, 3", 4, [1, 3]), ("all", 4, [0, 1, 2, 3]), ("", 2, []),
    (None, 0, []),
])
def test_gpu_flag(flag, count, ids):
    assert parallel.parse_gpu_ids(flag, count) == ids


@pytest.mark.parametrize("flag, count, message", [
    ("2", 2, "this machine has 2 CUDA device(s)"), ("all", 0, "drop -gpu to train on the CPU"),
    ("0,x", 2, "expected GPU ids"), ("0,0", 2, "each GPU may be named once"), ("-1", 2, "has 2 CUDA"),
])
def test_gpu_flag_refusals(flag, count, message):
    with pytest.raises(NetspecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parallel.parse_gpu_ids(flag, count)


@pytest.mark.parametrize("spec, gpus", [
    ("gpu0=cuda:0,gpu1=cuda:1", [0, 1]), ("gpu0=cuda:0,gpu1=cuda:0", [0]), ("gpu1=cuda:3,gpu0=cuda", [0, 3]),
    ("cuda:1", [1]), ("gpu0=cpu,gpu1=cpu", []), (None, []),
])
def test_gpus_a_device_map_names(spec, gpus):
    assert parallel.map_gpus(spec) == gpus
    assert parallel.gpus_per_replica(spec) == max(len(gpus), 1)


@pytest.mark.parametrize("n_gpus, per, replicas", [(4, 2, 2), (2, 2, 1), (3, 2, 1), (1, 2, 1), (4, 1, 4),
                                                   (8, 2, 4)])
def test_replica_count(n_gpus, per, replicas):
    assert parallel.replica_count(n_gpus, per) == replicas


def test_replica_blocks_and_maps_for_two_replicas_of_two_columns():
    alexnet = "gpu0=cuda:0,gpu1=cuda:1"
    placed = [parallel.place(alexnet, [0, 1, 2, 3], Rank(r, 2, r, 2)) for r in range(2)]
    assert [p.gpus for p in placed] == [(0, 1), (2, 3)]
    assert [p.device_map for p in placed] == ["gpu0=cuda:0,gpu1=cuda:1", "gpu0=cuda:2,gpu1=cuda:3"]
    assert [p.device for p in placed] == [torch.device("cuda", 0), torch.device("cuda", 2)]
    assert {p.backend for p in placed} == {"nccl"}


def test_replica_maps_follow_the_gpu_list_and_the_maps_order():
    # -gpu 4,5,6,7: rank 1 takes 6 and 7; the map's lower index gets the block's first GPU
    assert parallel.replica_gpus([4, 5, 6, 7], 2, 1, 2) == [6, 7]
    assert parallel.replica_device_map("gpu0=cuda:1,gpu1=cuda:0", [6, 7]) == "gpu0=cuda:7,gpu1=cuda:6"
    assert parallel.replica_device_map("cuda:0", [3]) == "cuda:3"
    assert parallel.replica_device_map("gpu0=cpu,gpu1=cpu", [3]) == "gpu0=cpu,gpu1=cpu"
    assert parallel.replica_device_map(None, [3]) is None


def test_too_few_gpus_bind_every_logical_device_to_the_ranks_gpu():
    # torchrun with 8 processes on an 8-GPU node and AlexNet's two columns: one GPU each
    assert [parallel.replica_gpus(list(range(8)), 2, r, 8) for r in (0, 5)] == [[0], [5]]
    placed = parallel.place("gpu0=cuda:0,gpu1=cuda:1", list(range(8)), Rank(13, 16, 5, 8))
    assert placed.device_map == "gpu0=cuda:5,gpu1=cuda:5" and placed.device == torch.device("cuda", 5)
    # one process, -gpu 0: both columns on GPU 0
    assert parallel.place("gpu0=cuda:0,gpu1=cuda:1", [0], Rank()).device_map == "gpu0=cuda:0,gpu1=cuda:0"
    with pytest.raises(NetspecError, match="3 processes on this node but 2 GPU"):
        parallel.replica_gpus([0, 1], 1, 0, 3)


def test_cpu_placement_keeps_the_map_and_uses_gloo():
    p = parallel.place("gpu0=cpu,gpu1=cpu", [], Rank(1, 2, 1, 2))
    assert (p.device, p.device_map, p.backend) == (torch.device("cpu"), "gpu0=cpu,gpu1=cpu", "gloo")


def test_launcher_environment():
    assert parallel.launched({}) is None
    env = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    assert parallel.launched(env) == Rank(3, 8, 1, 4)
    assert parallel.launched({"RANK": "1", "WORLD_SIZE": "2"}) == Rank(1, 2, 1, 2)
    with pytest.raises(NetspecError, match="out of range"):
        parallel.launched({"RANK": "2", "WORLD_SIZE": "2"})


def test_buckets_group_by_device_and_dtype_in_order_and_respect_the_cap():
    ts = [torch.zeros(10), torch.zeros(10, dtype=torch.float64), torch.zeros(20), torch.zeros(30)]
    got = parallel.buckets(ts, cap=4 * 30)
    assert [[id(t) for t in b] for b in got] == [[id(ts[0]), id(ts[2])], [id(ts[3])], [id(ts[1])]]


def test_replicas_to_start_and_its_refusals():
    sp = pb.SolverParameter()
    args = argparse.Namespace(cpu_workers=3, gpu=None, device_map=None)
    assert cmd_train.replicas_to_start(args, sp) == 3
    with pytest.raises(NetspecError, match="-gpu or --cpu-workers, not both"):
        cmd_train.replicas_to_start(argparse.Namespace(cpu_workers=2, gpu="0", device_map=None), sp)
    assert cmd_train.replicas_to_start(argparse.Namespace(cpu_workers=0, gpu=None, device_map=None), sp) == 1


# ---- the root solver --------------------------------------------------------------------------------
def write_run(folder: Path, batch: int, extra: str = "", col0: str = "", col1: str = "") -> Path:
    """A run folder: the 24-record LMDB, the small net at `batch`, the solver (+ `extra` fields)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "snap").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    w = dbmod.Writer(folder / "records")
    for i in range(RECORDS):
        image = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
        w.put(dbmod.caffe_key(i, f"img{i}.png"), mat_to_datum(image, label=i % 3).SerializeToString())
    w.close()
    (folder / "net.prototxt").write_text(NET % {"batch": batch, "col0": col0, "col1": col1})
    sp = text_format.Parse(SOLVER, pb.SolverParameter())
    text_format.Merge(extra, sp)
    (folder / "solver.prototxt").write_text(text_format.MessageToString(sp))
    return folder / "solver.prototxt"


def test_only_rank_0_builds_test_nets_and_writes_snapshots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path, B, 'test_iter: 1 test_interval: 2 test_net: "net.prototxt" max_iter: 2 snapshot: 1')
    sp, path = load_solver(tmp_path / "solver.prototxt")
    worker = Solver(sp, path, device="cpu", rank=1, world_size=2)  # no process group: nothing to reduce
    assert worker.test_nets == []
    worker.solve()
    assert worker.iter == 2 and list((tmp_path / "snap").iterdir()) == []
    root = Solver(sp, path, device="cpu")
    assert len(root.test_nets) == 1
    root.solve()
    assert sorted(p.name for p in (tmp_path / "snap").iterdir()) == [
        f"small_iter_{i}.{ext}" for i in (1, 2) for ext in ("caffemodel", "solverstate")]


# ---- two gloo processes against one ------------------------------------------------------------------
def run_netspec(folder: Path, *argv) -> None:
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert main(["train", "solver.prototxt", "--no-progress", *argv]) == 0
    finally:
        os.chdir(cwd)


def snapshot(folder: Path, it: int):
    state = read_solverstate(folder / "snap" / f"small_iter_{it}.solverstate")
    layers = read_weights(folder / "snap" / f"small_iter_{it}.caffemodel")
    weights = {n: arrays for n, (_, arrays) in layers.items() if len(arrays)}
    return weights, history_arrays(state), state


def assert_close(a, b, what: str, tol: float = 1e-6) -> None:
    err = float(np.abs(a - b).max())
    scale = max(float(np.abs(b).max()), 1.0)
    assert err <= tol * scale, f"{what}: worst difference {err:.3g} (largest value {scale:.3g})"


def assert_same_snapshots(two: Path, one: Path, it: int, tol: float) -> None:
    (w2, h2, s2), (w1, h1, s1) = snapshot(two, it), snapshot(one, it)
    assert (s2.iter, s2.current_step) == (s1.iter, s1.current_step) and s1.iter == it
    assert w1.keys() == w2.keys() == {"conv1", "conv2", "ip"}
    for name in w1:
        for k, (a, b) in enumerate(zip(w2[name], w1[name])):
            assert_close(a, b, f"iteration {it} blob {name}/{k}", tol)
    assert len(h1) == len(h2) == 6
    for k, (a, b) in enumerate(zip(h2, h1)):
        assert_close(a, b, f"iteration {it} history {k}", tol)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """Two gloo replicas of batch B trained 6 iterations through `netspec train --cpu-workers 2`."""
    folder = tmp_path_factory.mktemp("two")
    write_run(folder, B)
    run_netspec(folder, "--cpu-workers", "2")
    return folder


@pytest.mark.slow
def test_two_processes_of_batch_b_train_as_one_of_batch_2b(two_process_run, tmp_path, capfd):
    one = tmp_path / "one"
    write_run(one, 2 * B)
    run_netspec(one)
    for it in (3, 6):
        assert_same_snapshots(two_process_run, one, it, tol=1e-6)
    # one set of snapshots (rank 0's), nothing else written
    assert sorted(p.name for p in (two_process_run / "snap").iterdir()) == [
        f"small_iter_{i}.{ext}" for i in (3, 6) for ext in ("caffemodel", "solverstate")]


@pytest.mark.slow
def test_a_single_replica_of_batch_b_does_not_match(two_process_run, tmp_path):
    # The check above can fail: rank 0's share alone (records 0, 2, 4, ...) trains other weights.
    alone = tmp_path / "alone"
    write_run(alone, B)
    run_netspec(alone)
    w2, w1 = snapshot(two_process_run, 6)[0], snapshot(alone, 6)[0]
    assert np.abs(w2["ip"][0] - w1["ip"][0]).max() > 1e-4


@pytest.mark.slow
def test_resume_under_two_processes_equals_the_uninterrupted_run(two_process_run, tmp_path, capfd):
    # 24 records = 3 iterations of 8: the resumed readers start at record 0, where the uninterrupted
    # ones are after iteration 3 too, so the continuation sees the same data.
    resumed = tmp_path / "resumed"
    write_run(resumed, B)
    for ext in ("caffemodel", "solverstate"):
        (resumed / "snap" / f"small_iter_3.{ext}").write_bytes(
            (two_process_run / "snap" / f"small_iter_3.{ext}").read_bytes())
    run_netspec(resumed, "--cpu-workers", "2", "-snapshot", "snap/small_iter_3.solverstate")
    err = capfd.readouterr().err
    assert err.count("Resuming from snap/small_iter_3.solverstate") == 1      # rank 0 logs alone
    assert_same_snapshots(resumed, two_process_run, 6, tol=0.0)


# ---- rank 0 decides when to stop ----------------------------------------------------------------------
TINY = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 5 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def _stop_driver(rank: int, world: int, port: int, folder: str) -> None:
    """One replica: no random_seed (rank 0's broadcast makes the weights equal); rank 0 asks to stop
    after iteration 2, rank 1 keeps asking for snapshots; both write what they ended with."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=30))
    os.chdir(folder)
    sp, path = load_solver("solver.prototxt")
    solver = Solver(sp, path, device="cpu", rank=rank, world_size=world)
    parallel.attach(solver)
    solver.action_fn = (lambda: "stop" if solver.iter == 2 else "none") if rank == 0 else (lambda: "snapshot")
    solver.solve()
    np.savez(f"rank{rank}.npz", iter=solver.iter, w=solver.net.params()["ip"][0].detach().numpy(),
             b=solver.net.params()["ip"][1].detach().numpy())
    dist.destroy_process_group()


@pytest.mark.slow
def test_rank_0s_stop_request_stops_every_rank_at_once(tmp_path):
    import torch.multiprocessing as mp

    (tmp_path / "snap").mkdir()
    (tmp_path / "net.prototxt").write_text(TINY)
    (tmp_path / "solver.prototxt").write_text('net: "net.prototxt" base_lr: 0.1 momentum: 0.9 lr_policy: '
                                              '"fixed" max_iter: 50 snapshot_prefix: "snap/tiny"')
    ctx = mp.start_processes(_stop_driver, args=(2, parallel.free_port(), str(tmp_path)), nprocs=2,
                             join=False, start_method="spawn")
    while not ctx.join(60):   # each call returns when a process ends; a hang fails through gloo's timeout
        pass
    r0, r1 = np.load(tmp_path / "rank0.npz"), np.load(tmp_path / "rank1.npz")
    assert int(r0["iter"]) == int(r1["iter"]) == 2
    for k in ("w", "b"):
        assert np.array_equal(r0[k], r1[k]), f"ip/{k}: ranks differ by {np.abs(r0[k] - r1[k]).max()}"
    assert sorted(p.name for p in (tmp_path / "snap").iterdir()) == ["tiny_iter_2.caffemodel",
                                                                     "tiny_iter_2.solverstate"]


# ---- AlexNet's two columns: a training step on two devices equals one device ---------------------------
def alexnet_with_inputs(batch: int = 2, dropout: bool = True) -> pb.NetParameter:
    """AlexNet's TRAIN net with the Data layer replaced by Input layers of the same tops."""
    net = load_net(ALEXNET, phase=pb.TRAIN)
    out = pb.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    for lp in net.layer:
        if lp.type == "Dropout" and not dropout:
            continue
        if lp.type == "Data":
            crop = lp.transform_param.crop_size
            lp = pb.LayerParameter(name=lp.name, type="Input", top=list(lp.top))
            lp.input_param.shape.add().dim.extend([batch, 3, crop, crop])
            lp.input_param.shape.add().dim.extend([batch])
        out.layer.add().CopyFrom(lp)
    return out


def blobs(net) -> dict:
    return {f"{n}/{i}": t.detach().cpu().clone() for n, ts in net.params().items() for i, t in enumerate(ts)}


def train_alexnet(device_map, steps: int = 2, device="cpu", dropout: bool = True) -> tuple[dict, dict]:
    """The initial and trained blobs of AlexNet after `steps` SGD steps on batches of two images."""
    net = compile_net(alexnet_with_inputs(dropout=dropout), pb.TRAIN, device_map=device_map, device=device,
                      seed=3, source=str(ALEXNET))
    sp = text_format.Parse("base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005", pb.SolverParameter())
    rule = make_update_rule(sp)
    params = net.learnable_params()
    rule.init(params)
    initial = blobs(net)
    gen = torch.Generator().manual_seed(0)
    for it in range(steps):
        x = (torch.randn((2, 3, 227, 227), generator=gen) * 50).to(device)
        y = torch.tensor([3.0, 7.0 + it], device=device)
        for p in params:
            p.tensor.grad = None
        torch.manual_seed(10 + it)      # the same dropout masks in both runs
        net.total_loss(net(data=x, label=y)).backward()
        rule.apply(params, 0.01, it)
    return initial, blobs(net)


@pytest.mark.slow
def test_alexnet_columns_on_two_cpu_devices_train_as_one_device():
    (initial, mapped), (_, single) = train_alexnet("gpu0=cpu,gpu1=cpu"), train_alexnet(None)
    assert mapped.keys() == single.keys() and len(mapped) == 30   # 15 learned layers, weights and biases
    for k in mapped:
        err = (mapped[k] - single[k]).abs().max()
        assert torch.equal(mapped[k], single[k]), f"{k}: worst difference {err}"
    assert all(not torch.equal(mapped[k], initial[k]) for k in mapped if k.endswith("/0")), "no step taken"


@pytest.mark.cuda
def test_alexnet_columns_on_gpus_train_as_one_gpu():
    # Without dropout: each GPU has its own generator, so the columns would draw other masks.
    second = "cuda:1" if torch.cuda.device_count() > 1 else "cuda:0"
    _, mapped = train_alexnet(f"gpu0=cuda:0,gpu1={second}", device="cuda:0", dropout=False)
    _, single = train_alexnet("cuda:0", device="cuda:0", dropout=False)
    for k in mapped:
        err = float((mapped[k] - single[k]).abs().max())
        assert err <= 1e-5 * max(float(single[k].abs().max()), 1.0), f"{k}: worst difference {err}"


# ---- NCCL on real GPUs ------------------------------------------------------------------------------
@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_two_gpus_of_batch_b_train_as_one_gpu_of_batch_2b(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    write_run(two, B, "solver_mode: GPU")
    write_run(one, 2 * B, "solver_mode: GPU")
    run_netspec(two, "-gpu", "0,1")
    run_netspec(one, "-gpu", "0")
    for it in (3, 6):
        assert_same_snapshots(two, one, it, tol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 4, reason="needs 4 CUDA devices")
def test_two_replicas_of_two_columns_on_four_gpus(tmp_path):
    # conv2 runs on gpu1: with -gpu 0,1,2,3 rank 0 puts it on cuda:1 and rank 1 on cuda:3
    cols = {"col0": 'device: "gpu0"', "col1": 'device: "gpu1"'}
    four, one = tmp_path / "four", tmp_path / "one"
    write_run(four, B, 'solver_mode: GPU device_map: "gpu0=cuda:0,gpu1=cuda:1"', **cols)
    write_run(one, 2 * B, 'solver_mode: GPU device_map: "gpu0=cuda:0,gpu1=cuda:0"', **cols)
    run_netspec(four, "-gpu", "0,1,2,3")
    run_netspec(one, "-gpu", "0")
    for it in (3, 6):
        assert_same_snapshots(four, one, it, tol=1e-5)
