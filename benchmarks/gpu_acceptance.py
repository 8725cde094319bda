"""One command that proves netspec on a GPU (issue 13): prints one table and appends it to
benchmarks/RESULTS.md with the machine, the date and the load.

    .venv/bin/python benchmarks/gpu_acceptance.py            # on an H100/H200-class GPU, < 8 minutes
    .venv/bin/python benchmarks/gpu_acceptance.py --dry-run  # the same steps, tiny, on the CPU

On a lent GPU machine (torch, torchvision, OpenCV, protobuf there; not lmdb, nor this project installed:
it runs from the checkout), with lmdb's cp312 wheel in .whl/ (git-ignored; see the device tool's notes):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export
    PYTHONPATH=/tmp/site && PYTHONUNBUFFERED=1 timeout 470 python3 benchmarks/gpu_acceptance.py
    --results $OUT/RESULTS.md            # carry [".whl"], timeout_s 480; the table is rewritten
                                         # after every step, so a killed run leaves its finished rows

Checked before its first GPU run with the device's torch (2.11) and torchvision (0.26) on the CPU:
the suite and this dry run pass there (torch 2.11's dynamo answered torch.compiler.is_exporting()
with True inside torch.compile, which the LRN layer took for an ONNX export until it stopped asking).

Steps (each a row or a few; a step that fails is a FAIL row and the others still run):
  cuda tests     `pytest -m cuda`: every CUDA test carries the marker (>= 20 selected, none failing)
  train step     netspec's Solver against the same net written by hand with torch.optim.SGD (no loss
                 read per step on either side), AlexNet and CaffeNet, fp32 / bf16 / channels_last,
                 interleaved in one process: ratio >= 0.97; AlexNet bf16 >= 15,000 img/s (the
                 torch.compile rows are a step of their own, "train step compiled", after the issue's
                 other steps: their code generation is the one cost a run cannot bound; one starts
                 only with 120 s left, and no step begins after --time-limit, 420 s)
  two columns    AlexNet's two columns both on one device against the net without device fields: >= 0.95
  netspec time   the CLI's layer-by-layer timing runs and reports a forward-backward time
  data-fed       the Solver fed by the Data layer from a raw 256x256 LMDB (crop 227, mirror, mean) against
                 the same Solver on a synthetic batch: ratio >= 0.9 (busy % = synthetic / data-fed time);
                 two rows: uint8 crops normalised on the GPU (NETSPEC_DATA_UINT8=1) and float batches (=0)
  JPEG-fed       the same from a JPEG (quality 90) LMDB: decoded on the host by worker processes (OpenCV,
                 Caffe's pixels) and on the GPU (NETSPEC_DATA_DECODE=device: nvJPEG through torchvision),
                 against synthetic input; and how far nvJPEG's pixels are from OpenCV's (INFO)
  host syncs     synchronising calls in the iterations between two displays (CUDA's sync debug mode; on
                 the CPU, host reads of tensors): 0 per iteration
  one-rank NCCL  `torchrun --nproc_per_node 1 -m netspec train` against a plain `netspec train` run (-gpu 0;
                 gloo on the CPU): the same weights after N iterations
  inference      issue 17's inference graph (netspec/graph/inference.py) on CaffeNet's deploy net against
                 the eager net: batch-1 latency and batch-256 throughput, fp32 and bf16, outputs compared

--dry-run: batch 1, one timed round, a 16-record LMDB, torch.compile with its 'eager' backend (no code
generation, which alone takes minutes on a CPU), results to stdout (and to --results if given).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
# Runs from a plain checkout too (a lent GPU machine has torch but not this project installed): the
# checkout first on the path, for this process and for the ones it starts.
sys.path.insert(1, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(
    os.pathsep) if p])
CHILD_TIMEOUT = 240      # seconds a started process (pytest, netspec time, torchrun) may take
COMPILE_SECONDS = 120    # time left that a torch.compile row needs (two nets compiled, then timed)
from common import (compile_train_net, interleaved, loss_fn, machine, median,  # noqa: E402
                    synthetic_batch)
from data_workers import write_db  # noqa: E402
from train_throughput import hand_step, solver_param  # noqa: E402

from netspec.data import db as dbmod  # noqa: E402
from netspec.formats.caffemodel import read_weights  # noqa: E402
from netspec.frontend import load_net  # noqa: E402
from netspec.proto import pb  # noqa: E402
from netspec.solver.solver import Solver  # noqa: E402

OPTIONS = ("fp32", "bf16", "channels_last", "torch_compile")
MODELS = ("alexnet", "caffenet")


@dataclass
class Row:
    step: str
    measured: str
    goal: str
    result: str          # PASS, FAIL or INFO


@dataclass
class Config:
    dry: bool
    device: torch.device
    batch: int
    rounds: int
    iters: int           # solver iterations per timed call
    workdir: Path
    deadline: float | None = None    # time.perf_counter() after which no step begins


def rate_text(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def verdict(ok: bool, cfg: Config, strict: bool = True) -> str:
    """PASS/FAIL on a GPU; figures measured on a loaded CPU in a dry run are INFO unless `strict`."""
    if cfg.dry and not strict:
        return "INFO"
    return "PASS" if ok else "FAIL"


# ---- the CUDA tests --------------------------------------------------------------------------------------
def cuda_tests(cfg: Config) -> list[Row]:
    # only the files that hold CUDA tests are collected (collecting the whole suite takes a minute)
    files = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "tests").glob("test_*.py"))
             if "mark.cuda" in p.read_text(encoding="utf-8")]
    out = subprocess.run([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", *files],
                         cwd=ROOT, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    tail = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else out.stderr.strip()[-200:]
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|skipped|failed|error|deselected)", tail)}
    selected = counts.get("passed", 0) + counts.get("skipped", 0) + counts.get("failed", 0)
    failed = counts.get("failed", 0) + counts.get("error", 0)
    skipped_on_gpu = torch.cuda.is_available() and counts.get("skipped", 0) > 0
    ok = selected >= 20 and failed == 0 and out.returncode in (0, 5) and not (cfg.device.type == "cuda"
                                                                            and counts.get("passed", 0) == 0)
    note = " (multi-GPU tests skip on one GPU)" if skipped_on_gpu else ""
    return [Row("pytest -m cuda", f"{selected} selected: {counts.get('passed', 0)} passed, "
                f"{counts.get('skipped', 0)} skipped, {failed} failed{note}", ">= 20 selected, 0 failed",
                verdict(ok, cfg))]


# ---- train steps -----------------------------------------------------------------------------------------
def netspec_solver(model: str, option: str, cfg: Config, data, label) -> Solver:
    solver = Solver(solver_param(model, cfg.batch, option), None, device=cfg.device)
    solver.feed(data=data, label=label.float())
    return solver


def train_steps(cfg: Config, options=OPTIONS[:3]) -> list[Row]:
    rows = []
    for model in MODELS:
        for option in options:
            left = None if cfg.deadline is None else cfg.deadline - time.perf_counter()
            if option == "torch_compile" and left is not None and left < COMPILE_SECONDS:
                rows.append(Row(f"train step {model} {option} b{cfg.batch}", f"not run: {max(left, 0):.0f} s "
                                f"left, a compile takes up to {COMPILE_SECONDS} s", ">= 0.97×", "FAIL"))
                continue
            data, label = synthetic_batch(cfg.batch, cfg.device)
            solver = netspec_solver(model, option, cfg, data, label)
            # the loss is not read on the host, as a careful torch user would write it
            hand = hand_step(model, option, cfg.device, data, label, read_loss=False)
            fns = {"netspec": lambda s=solver: s.step(cfg.iters),
                   "hand": lambda h=hand: [h() for _ in range(cfg.iters)]}
            if not cfg.dry:
                for fn in fns.values():
                    fn()                                      # warm-up (compilation, autotuning)
            t = interleaved(fns, cfg.rounds, cfg.device)
            rate = {k: cfg.batch * cfg.iters / median(v) for k, v in t.items()}
            ratio = rate["netspec"] / rate["hand"]
            rows.append(Row(f"train step {model} {option} b{cfg.batch}",
                            f"{rate_text(rate['netspec'])} vs {rate_text(rate['hand'])} img/s = {ratio:.3f}×", ">= 0.97×",
                            verdict(ratio >= 0.97, cfg, strict=False)))
            if model == "alexnet" and option == "bf16":
                rows.append(Row("AlexNet bf16 images/s", f"{rate_text(rate['netspec'])} img/s", ">= 15,000 (H200)",
                                verdict(rate["netspec"] >= 15000, cfg, strict=False)))
            del solver, hand, fns
            torch._dynamo.reset()
    return rows


def two_columns(cfg: Config) -> list[Row]:
    d = cfg.device
    nets = {"one": compile_train_net("alexnet", cfg.batch, d, strip_devices=True),
            "two": compile_train_net("alexnet", cfg.batch, d, device_map=f"gpu0={d},gpu1={d}")}
    data, label = synthetic_batch(cfg.batch, d)
    fns = {}
    for name, net in nets.items():
        f = loss_fn(net)

        def step(f=f, net=net):
            f(data, label.float()).backward()
            net.zero_grad(set_to_none=True)

        fns[name] = step
        step()
    t = interleaved(fns, cfg.rounds, d)
    ratio = median(t["one"]) / median(t["two"])
    return [Row(f"two columns on one {d.type.upper()} vs one column", f"{ratio:.3f}× the speed", ">= 0.95×",
                verdict(ratio >= 0.95, cfg, strict=False))]


def netspec_time(cfg: Config) -> list[Row]:
    cmd = [sys.executable, "-m", "netspec", "time", "--model", str(ROOT / "models/alexnet/train_val.prototxt"),
           "--iterations", "1" if cfg.dry else "20", "--input-shape", f"data={cfg.batch},3,227,227",
           "--input-shape", f"label={cfg.batch}"] + (["--gpu", str(cfg.device.index or 0)]
                                                       if cfg.device.type == "cuda" else [])
    out = subprocess.run(cmd, cwd=cfg.workdir, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    text = out.stdout + out.stderr
    found = re.search(r"Average Forward-Backward:\s*([\d.e+-]+) ms", text)
    if out.returncode or not found:
        return [Row("netspec time (AlexNet)", (text.strip().splitlines() or ["no output"])[-1][:120],
                    "runs, reports", "FAIL")]
    ms = float(found.group(1))
    return [Row(f"netspec time AlexNet b{cfg.batch}", f"{ms:.1f} ms forward-backward "
                f"({rate_text(cfg.batch / ms * 1000)} img/s)", "runs, reports", "PASS")]


# ---- the Data layer ----------------------------------------------------------------------------------------
def write_lmdb(path: Path, records: int) -> Path:
    rng = np.random.default_rng(0)
    w = dbmod.Writer(path)
    for i in range(records):
        d = pb.Datum(channels=3, height=256, width=256, label=i % 1000,
                     data=rng.integers(0, 256, 3 * 256 * 256, dtype=np.uint8).tobytes())
        w.put(dbmod.caffe_key(i, f"{i}.JPEG"), d.SerializeToString())
    w.close()
    return path


def data_fed_param(source: Path, batch: int) -> pb.SolverParameter:
    net = load_net(ROOT / "models/alexnet/train_val.prototxt", phase=pb.TRAIN)
    for lp in net.layer:
        if lp.type == "Data":
            lp.data_param.source, lp.data_param.batch_size, lp.data_param.prefetch = str(source), batch, 4
            lp.transform_param.ClearField("mean_file")
            lp.transform_param.mean_value.extend([104, 117, 123])
    sp = solver_param("alexnet", batch, "fp32")
    sp.net_param.CopyFrom(net)
    return sp


def worker_processes(batch: int) -> int:
    """All cores but two for the Data layer's worker processes, if /dev/shm holds their batch slots
    (float32 batches, the larger kind); else 0, threads, and a line saying why."""
    from netspec.data.workers import check_shared_memory
    from netspec.errors import NetspecError
    n = max(1, (os.cpu_count() or 2) - 2)
    try:
        check_shared_memory((batch, 3, 227, 227), torch.float32, n + 4 + 4, n)
    except NetspecError as e:
        print(f"gpu_acceptance: Data layer on threads: {e}", file=sys.stderr, flush=True)
        return 0
    return n


def fed_against_synthetic(cfg: Config, source: Path, variable: str, modes) -> dict:
    """{mode: (speed as a fraction of the synthetic-input Solver's, images/s)} of the Solver fed by
    the Data layer from `source` with `variable` set to each mode, interleaved with synthetic input.
    The Data layer reads the variable when its reader starts, in the first step."""
    if cfg.device.type == "cuda" and "NETSPEC_DATA_PROCESSES" not in os.environ:
        os.environ["NETSPEC_DATA_PROCESSES"] = str(worker_processes(cfg.batch))
    data, label = synthetic_batch(cfg.batch, cfg.device)
    synthetic = netspec_solver("alexnet", "fp32", cfg, data, label)
    fns, fed = {"synthetic": lambda: synthetic.step(cfg.iters)}, {}
    for mode in modes:
        with env_var(variable, mode):
            fed[mode] = Solver(data_fed_param(source, cfg.batch), None, device=cfg.device)
            fed[mode].step(cfg.iters)
        fns[mode] = lambda s=fed[mode]: s.step(cfg.iters)
    fns["synthetic"]()
    t = interleaved(fns, cfg.rounds, cfg.device)
    for solver in fed.values():
        solver.net.close()
    return {mode: (median(t["synthetic"]) / median(t[mode]), cfg.batch * cfg.iters / median(t[mode]))
            for mode in modes}


def fed_text(ratio: float, rate: float) -> str:
    return f"{ratio:.3f}× (busy {min(ratio, 1.0) * 100:.0f}%), {rate_text(rate)} img/s"


def data_fed(cfg: Config) -> list[Row]:
    records = 16 if cfg.dry else max(4 * cfg.batch, 1024)
    source = write_lmdb(cfg.workdir / "acceptance_lmdb", records)
    # uint8 crops normalised on the device (the CUDA default) against float batches made on the host
    modes = {"1": "uint8 crops", "0": "float batches, NETSPEC_DATA_UINT8=0"}
    got = fed_against_synthetic(cfg, source, "NETSPEC_DATA_UINT8", modes)
    return [Row(f"Data-layer-fed ({what}) vs synthetic AlexNet b{cfg.batch}", fed_text(*got[mode]), ">= 0.9×",
                verdict(got[mode][0] >= 0.9, cfg, strict=False)) for mode, what in modes.items()]


def nvjpeg_pixels(source: Path, device: torch.device) -> Row:
    """How far the device decoder's pixels are from OpenCV's (Caffe's), over the first 64 records."""
    import cv2

    from netspec.data.datum import parse
    from netspec.data.device_decode import decode_jpegs
    datums = [parse(v, k) for k, v in list(dbmod.iter_records(source))[:64]]
    if device.type == "cuda":      # nothing queued that torchvision's own stream could race with
        torch.cuda.synchronize(device)
    got = decode_jpegs([torch.frombuffer(bytearray(d.data), dtype=torch.uint8) for d in datums], 3, device)
    diffs = [np.abs(g.cpu().numpy()[::-1].transpose(1, 2, 0).astype(int)
                    - cv2.imdecode(np.frombuffer(d.data, np.uint8), cv2.IMREAD_COLOR).astype(int))
             for g, d in zip(got, datums)]
    worst, mean = max(int(d.max()) for d in diffs), float(np.mean([d.mean() for d in diffs]))
    equal = float(np.mean([(d == 0).mean() for d in diffs]))
    return Row(f"{device.type} decoder's pixels vs OpenCV's",
               f"largest difference {worst} levels, mean {mean:.3f}, {equal * 100:.1f}% equal",
               "INFO (exact: NETSPEC_DATA_DECODE=host)", "INFO")


def jpeg_fed(cfg: Config) -> list[Row]:
    from netspec.data.device_decode import check_decoder
    from netspec.errors import NetspecError
    records = 16 if cfg.dry else max(4 * cfg.batch, 1024)
    source = write_db(cfg.workdir / "acceptance_jpeg_lmdb", records, encoded=True)   # 256x256, q90
    try:
        check_decoder()
        modes = {"host": "decoded on the host by OpenCV",
                 "device": f"decoded on the {cfg.device.type.upper()}"}
    except NetspecError as e:
        modes = {"host": "decoded on the host by OpenCV"}
        missing = Row("JPEG-fed (decoded on the device)", str(e)[:120], "torchvision imports", "INFO")
    got = fed_against_synthetic(cfg, source, "NETSPEC_DATA_DECODE", modes)
    rows = [Row(f"JPEG-fed ({what}) vs synthetic AlexNet b{cfg.batch}", fed_text(*got[mode]),
                "as fast as possible", "INFO") for mode, what in modes.items()]
    rows.append(nvjpeg_pixels(source, cfg.device) if "device" in modes else missing)
    return rows


@contextlib.contextmanager
def env_var(name: str, value: str):
    """`name` set to `value` inside the block, as it was after."""
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


# ---- host synchronisation ----------------------------------------------------------------------------------
@contextlib.contextmanager
def count_host_reads():
    """CPU stand-in for CUDA's sync debug mode: calls that read a tensor's value on the host."""
    counts = [0]
    saved = {}
    for name in ("item", "__float__", "__bool__", "__int__", "tolist", "cpu"):   # .cpu().numpy(): one read
        real = saved[name] = getattr(torch.Tensor, name)

        def counted(t, *a, _real=real, **k):
            counts[0] += 1
            return _real(t, *a, **k)

        setattr(torch.Tensor, name, counted)
    try:
        yield counts
    finally:
        for name, real in saved.items():
            setattr(torch.Tensor, name, real)


@contextlib.contextmanager
def count_cuda_syncs():
    counts = [0]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield counts
    finally:
        torch.cuda.set_sync_debug_mode("default")
    counts[0] = sum("synchroniz" in str(w.message) for w in caught)


def host_syncs(cfg: Config) -> list[Row]:
    data, label = synthetic_batch(cfg.batch, cfg.device)
    solver = netspec_solver("caffenet", "fp32", cfg, data, label)
    solver.param.display = 0
    solver._host_only = False    # on the CPU the update guard reads its flag (free there); a GPU run does not
    solver.step(1)
    n = 3 if cfg.dry else 20
    counter = count_cuda_syncs() if cfg.device.type == "cuda" else count_host_reads()
    with counter as counts:
        solver.step(n)
    # step() reads its deferred values once at its end (as at a display): that one is allowed
    per = max(counts[0] - 1, 0) / n
    what = "CUDA syncs" if cfg.device.type == "cuda" else "host reads"
    return [Row(f"{what} in {n} iterations between displays", f"{counts[0]} (1 is the end-of-step read): "
                f"{per:.2f} per iteration", "0 per iteration", verdict(per == 0, cfg))]


# ---- one-rank NCCL against a plain run --------------------------------------------------------------------
TINY_NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 16 dim: 3 dim: 8 dim: 8 } shape { dim: 16 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 2 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" inner_product_param { num_output: 5
  weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def one_rank_nccl(cfg: Config) -> list[Row]:
    folder = cfg.workdir / "nccl"
    folder.mkdir(exist_ok=True)
    (folder / "net.prototxt").write_text(TINY_NET)
    iters = 10
    gpu = ["--gpu", str(cfg.device.index or 0)] if cfg.device.type == "cuda" else []
    runs = {}
    for name, launcher in (("plain", [sys.executable, "-m", "netspec"]),
                           ("torchrun", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                         "--nproc_per_node", "1", "-m", "netspec"])):
        (folder / name).mkdir(exist_ok=True)
        (folder / f"{name}.prototxt").write_text(
            f'net: "net.prototxt" base_lr: 0.1 momentum: 0.9 lr_policy: "fixed" max_iter: {iters} '
            f'random_seed: 7 snapshot_prefix: "{name}/tiny"')
        out = subprocess.run(launcher + ["train", "--solver", f"{name}.prototxt", "-q", "--no-progress"] + gpu,
                             cwd=folder, capture_output=True, text=True, timeout=CHILD_TIMEOUT)
        model = folder / name / f"tiny_iter_{iters}.caffemodel"
        if out.returncode or not model.exists():
            last = (out.stdout + out.stderr).strip().splitlines() or ["no output"]
            return [Row(f"one-rank torchrun vs plain ({name})", last[-1][:120], "same weights", "FAIL")]
        runs[name] = read_weights(model)
    worst = max(float(np.abs(a - b).max()) for layer in runs["plain"]
                for a, b in zip(runs["plain"][layer][1], runs["torchrun"][layer][1]))
    backend = "NCCL" if cfg.device.type == "cuda" else "gloo"
    return [Row(f"one-rank {backend} torchrun vs plain, {iters} iterations", f"worst weight difference {worst:.2g}",
                "same weights (<= 1e-6)", verdict(worst <= 1e-6, cfg))]


# ---- inference (issue 17) ------------------------------------------------------------------------------
def inference(cfg: Config) -> list[Row]:
    from netspec.graph import compile_net
    from netspec.graph.inference import inference_module

    rows, d = [], cfg.device
    for batch in (1, cfg.batch if not cfg.dry else 2):
        param = load_net(ROOT / "models/caffenet/deploy.prototxt", phase=pb.TEST)
        net = compile_net(param, pb.TEST, device=d, seed=1, input_shapes={"data": (batch, 3, 227, 227)})
        graph = inference_module(net, ["prob"])
        eager = net.graph_module(["prob"])
        x = torch.randn(batch, 3, 227, 227, device=d)
        for precision in ("fp32", "bf16"):
            ctx = (lambda: torch.autocast(d.type, dtype=torch.bfloat16)) if precision == "bf16" \
                else contextlib.nullcontext
            with torch.no_grad(), ctx():
                fast, slow = graph(x)["prob"].float(), eager(x)["prob"].float()
                worst = float((fast - slow).abs().max())

                def run(g):
                    with torch.no_grad(), ctx():
                        g(x)

                t = interleaved({"fast": lambda: run(graph), "eager": lambda: run(eager)}, cfg.rounds * 4, d)
            ms = median(t["fast"]) * 1000
            rows.append(Row(f"inference CaffeNet b{batch} {precision}",
                            f"{ms:.2f} ms, {rate_text(batch / ms * 1000)} img/s; "
                            f"{median(t['eager']) / median(t['fast']):.2f}× the eager net; worst prob difference {worst:.1g}",
                            "latency (b1), throughput (b256); prob within 1e-5 (fp32)",
                            verdict(precision == "bf16" or worst <= 1e-5, cfg)))
    return rows


def compiled_train_steps(cfg: Config) -> list[Row]:
    """The torch.compile rows, last: code generation is the one cost here that a run cannot bound."""
    return train_steps(cfg, options=("torch_compile",))


# The steps first, the compiled rows when at least COMPILE_SECONDS are left, then the
# measurements added later (JPEG decoding on the device, issue 17's inference rows).
STEPS = {"cuda tests": cuda_tests, "train step": train_steps, "two columns": two_columns,
         "netspec time": netspec_time, "data-fed": data_fed, "host syncs": host_syncs,
         "one-rank NCCL": one_rank_nccl, "train step compiled": compiled_train_steps, "JPEG-fed": jpeg_fed,
         "inference": inference}


def run_steps(cfg: Config, only=None, time_limit: float | None = None, after_step=None) -> list[Row]:
    """Each step in turn; a step not begun by `time_limit` seconds is a row saying so, so that the
    table is still written when a machine's time runs short. `after_step(rows)` after each."""
    rows, start = [], time.perf_counter()
    cfg.deadline = None if time_limit is None else start + time_limit
    for name, fn in STEPS.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        if time_limit is not None and t0 - start > time_limit:
            rows.append(Row(name, f"not run: {t0 - start:.0f} s had passed (--time-limit {time_limit:.0f})",
                            "runs", "FAIL"))
            continue
        try:
            got = fn(cfg)
        except Exception as e:                                   # one failing step must not hide the rest
            traceback.print_exc(file=sys.stderr)
            got = [Row(name, f"{type(e).__name__}: {str(e).splitlines()[0][:100] if str(e) else ''}", "runs", "FAIL")]
        print(f"[{name}: {time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
        for r in got:            # as it comes: a run stopped at its time limit still shows these
            print(f"  | {r.step} | {r.measured} | {r.goal} | {r.result} |", file=sys.stderr, flush=True)
        rows.extend(got)
        if after_step is not None:
            after_step(rows)
    return rows


class ResultsFile:
    """The results file, with this run's table appended and rewritten after every step: a run
    killed at its time limit still leaves the rows it finished."""

    def __init__(self, path: str | None):
        self.path = path
        self.start = os.path.getsize(path) if path and os.path.exists(path) else 0

    def write(self, text: str) -> None:
        if not self.path:
            return
        with open(self.path, "a+", encoding="utf-8") as f:
            f.truncate(self.start)
            f.write("\n" + text)


def table(rows: list[Row]) -> str:
    lines = ["| step | measured | goal | result |", "|---|---|---|---|"]
    lines += [f"| {r.step} | {r.measured} | {r.goal} | {r.result} |" for r in rows]
    return "\n".join(lines)


def report(rows: list[Row], cfg: Config, seconds: float) -> str:
    kind = "dry run (tiny sizes, CPU)" if cfg.dry else f"GPU run on {cfg.device}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"### gpu_acceptance.py: {kind}, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n\n"
            f"- Machine: {machine()}; load average {load:.1f} at the end\n"
            f"- Command: `python benchmarks/gpu_acceptance.py{' --dry-run' if cfg.dry else ''}`, {seconds:.0f} s\n\n"
            + table(rows) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="the same steps at tiny sizes on the CPU")
    ap.add_argument("--device", default=None, help="default cuda:0 (cpu with --dry-run)")
    ap.add_argument("--batch", type=int, default=None, help="default 256 (1 with --dry-run)")
    ap.add_argument("--steps", default=None, help=f"comma-separated subset of: {', '.join(STEPS)}")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds after which no further step begins (default 420; none with --dry-run)")
    ap.add_argument("--results", default=None,
                    help="Markdown file to append the table to (default benchmarks/RESULTS.md; none with --dry-run)")
    args = ap.parse_args(argv)
    dry = args.dry_run
    device = torch.device(args.device or ("cpu" if dry else "cuda:0"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_acceptance: no CUDA device here; use --dry-run for the CPU rehearsal", file=sys.stderr)
        return 2
    logging.getLogger("netspec").setLevel(logging.ERROR)
    if dry:   # torch.compile's code generation takes minutes on a CPU; its tracing is what a dry run checks
        torch.compile = functools.partial(torch.compile, backend="eager")
    # No TF32 switch here: netspec turns TF32 off when it places a net on a GPU (Caffe's float32), and
    # the hand-written step runs under the same process-wide switches, so both sides compute alike.
    t0 = time.perf_counter()
    results = ResultsFile(args.results or (None if dry else str(HERE / "RESULTS.md")))
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Config(dry, device, args.batch or (1 if dry else 256), 1 if dry else 5, 1 if dry else 10, Path(tmp))
        limit = args.time_limit if args.time_limit is not None else (None if dry else 420.0)
        rows = run_steps(cfg, args.steps.split(",") if args.steps else None, limit,
                         after_step=lambda done: results.write(report(done, cfg, time.perf_counter() - t0)))
    text = report(rows, cfg, time.perf_counter() - t0)
    print(text)
    results.write(text)
    return 1 if any(r.result == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
