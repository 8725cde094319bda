"""Inference speed of deploy nets: netspec against OpenCV's dnn module and onnxruntime.

    python benchmarks/inference.py                 # CaffeNet, GoogLeNet, ResNet-50 at batch 1 and 10
    python benchmarks/inference.py --nets caffenet --batches 1 --threads 2 --repeats 7

Each net gets seeded weights once (netspec's fillers, seed 1), written as a .caffemodel, and an ONNX
file exported by netspec; every runtime then loads those same files in a process of its own and is
timed as its users call it — netspec as pycaffe (`net.blobs['data'].data[...] = x; net.forward()`),
OpenCV as `net.setInput(x); net.forward()`, onnxruntime as `session.run` — the median of `--repeats`
forwards after eight warm-ups (netspec times its per-layer and fused graphs on its second to eighth
forwards, netspec/graph/fused.py), with the same number of threads for all; `--rounds` processes per
runtime, taken in turn, and the median of their medians reported (a VM's slow minutes fall on all).

OpenCV 5 dropped the Caffe importer, so OpenCV and onnxruntime run from a virtual environment of their
own (benchmarks/.venv-inference: `opencv-python-headless<5`, onnxruntime, numpy), made on first use.
The outputs of the three runtimes are compared too (the worst difference of `prob` is printed).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE = HERE / ".cache" / "inference"
VENV = HERE / ".venv-inference"


# ---- workers: one runtime, one net, one batch, in its own process ----------------------------------------
def _inputs(batch: int, shape):
    import numpy as np

    return np.random.default_rng(0).normal(0, 50, (batch, *shape[1:])).astype(np.float32)   # mean-subtracted pixels


def _time(fn, repeats: int) -> dict:
    """Wall seconds and this process's CPU seconds per call (CPU time is the steadier figure on a
    machine other work is using; with one thread on an idle machine the two agree)."""
    for _ in range(8):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"times": wall, "cpu": cpu}


def worker_netspec(a) -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    import netspec as caffe

    torch.set_num_threads(a.threads)
    net = caffe.Net(a.prototxt, a.caffemodel, caffe.TEST)
    x = _inputs(a.batch, net.blobs["data"].data.shape)
    net.blobs["data"].data[...] = x
    return {**_time(net.forward, a.repeats), "prob": net.blobs["prob"].data[:, :5].tolist()}


def worker_opencv(a) -> dict:
    import cv2

    cv2.setNumThreads(a.threads)
    net = cv2.dnn.readNetFromCaffe(a.prototxt, a.caffemodel)
    x = _inputs(a.batch, (a.batch, 3, a.size, a.size))
    out = {}

    def run():
        net.setInput(x)
        out["prob"] = net.forward()

    return {**_time(run, a.repeats), "prob": out["prob"].reshape(a.batch, -1)[:, :5].tolist(),
            "version": cv2.__version__}


def worker_onnxruntime(a) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = a.threads, 1
    sess = ort.InferenceSession(a.onnx, opts, providers=["CPUExecutionProvider"])
    x = _inputs(a.batch, (a.batch, 3, a.size, a.size))
    name = sess.get_inputs()[0].name
    out = {}

    def run():
        out["prob"] = sess.run(None, {name: x})[0]

    return {**_time(run, a.repeats), "prob": out["prob"].reshape(a.batch, -1)[:, :5].tolist(),
            "version": ort.__version__}


WORKERS = {"netspec": worker_netspec, "opencv": worker_opencv, "onnxruntime": worker_onnxruntime}


# ---- the driver ---------------------------------------------------------------------------------------
def prepare(net: str, batch: int) -> dict:
    """Prototxt with this batch, seeded .caffemodel, ONNX export (cached in benchmarks/.cache)."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    import numpy as np

    import netspec as caffe
    from inference_nets import googlenet, resnet50
    from netspec.export_onnx import export_onnx

    CACHE.mkdir(parents=True, exist_ok=True)
    text = {"googlenet": googlenet, "resnet50": resnet50}.get(net)
    if text is not None:
        text = text(batch)
    else:
        text = (ROOT / "models" / "caffenet" / "deploy.prototxt").read_text()
        text = text.replace("dim: 10", f"dim: {batch}", 1)
    proto = CACHE / f"{net}_b{batch}.prototxt"
    proto.write_text(text)
    model, onnx = CACHE / f"{net}.caffemodel", CACHE / f"{net}_b{batch}.onnx"
    caffe.set_random_seed(1)
    n = caffe.Net(str(proto), caffe.TEST)
    if not model.exists():
        # BatchNorm's statistics start at zero, which would scale every activation by 1/sqrt(eps)
        # and overflow ResNet-50: give them a trained net's kind of values (seeded)
        rng = np.random.default_rng(1)
        for layer in n.layers:
            if layer.type == "BatchNorm":
                mean, var, factor = (b.data for b in layer.blobs)
                mean[...] = rng.normal(0, 0.1, mean.shape)
                var[...] = rng.uniform(0.5, 1.5, var.shape)
                factor[...] = 1
        n.save(str(model))
    n.copy_from(str(model))
    if not onnx.exists():
        export_onnx(n.compiled, str(onnx), outputs=["prob"])
    size = n.blobs["data"].data.shape[-1]
    return {"prototxt": str(proto), "caffemodel": str(model), "onnx": str(onnx), "size": size}


def ensure_venv() -> str:
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "--quiet", "opencv-python-headless<5", "onnxruntime",
                        "numpy"], check=True)
    return str(py)


def run_worker(python: str, runtime: str, files: dict, batch: int, threads: int, repeats: int) -> dict:
    cmd = [python, __file__, "--worker", runtime, "--batch", str(batch), "--threads", str(threads),
           "--repeats", str(repeats), "--prototxt", files["prototxt"], "--caffemodel", files["caffemodel"],
           "--onnx", files["onnx"], "--size", str(files["size"])]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{runtime} worker failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nets", default="caffenet,googlenet,resnet50")
    p.add_argument("--batches", default="1,10")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--rounds", type=int, default=3,
                   help="processes per runtime, run in turn (netspec, opencv, onnxruntime, netspec, ...); "
                        "each row gives the median of their medians, so a slow minute on a shared VM "
                        "falls on every runtime alike")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="which median to compare: wall seconds, or the process's CPU seconds (on a busy machine)")
    p.add_argument("--runtimes", default="netspec,opencv,onnxruntime")
    p.add_argument("--worker", choices=sorted(WORKERS))
    for name in ("prototxt", "caffemodel", "onnx"):
        p.add_argument(f"--{name}")
    p.add_argument("--batch", type=int)
    p.add_argument("--size", type=int)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(WORKERS[a.worker](a)))
        return
    other = ensure_venv()
    runtimes = a.runtimes.split(",")
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {a.threads} thread(s), "
          f"load {os.getloadavg()[0]:.2f}, {time.strftime('%Y-%m-%d %H:%M')}, median {a.clock} time of {a.repeats}, "
          f"median of {a.rounds} rounds")
    print("| net | batch | " + " | ".join(f"{r} ms" for r in runtimes)
          + " | netspec / opencv | netspec / onnxruntime | max |prob| diff |")
    print("|---|---:|" + "---:|" * (len(runtimes) + 3))
    for net in a.nets.split(","):
        for batch in (int(b) for b in a.batches.split(",")):
            files = prepare(net, batch)
            key = "times" if a.clock == "wall" else "cpu"
            res, rounds = {}, {r: [] for r in runtimes}
            for _ in range(a.rounds):
                for r in runtimes:
                    res[r] = run_worker(sys.executable if r == "netspec" else other, r, files, batch, a.threads,
                                        a.repeats)
                    rounds[r].append(1000 * statistics.median(res[r][key]))
            ms = {r: statistics.median(v) for r, v in rounds.items()}
            diff = max(abs(x - y) for r in runtimes for row_a, row_b in zip(res[r]["prob"], res[runtimes[0]]["prob"])
                       for x, y in zip(row_a, row_b))
            ratio = [f"{ms['netspec'] / ms[o]:.2f}x" if o in ms and "netspec" in ms else "-"
                     for o in ("opencv", "onnxruntime")]
            print(f"| {net} | {batch} | " + " | ".join(f"{ms[r]:.1f}" for r in runtimes)
                  + f" | {ratio[0]} | {ratio[1]} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
