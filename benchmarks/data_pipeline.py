"""Data-pipeline throughput: convert_imageset with 1 and all workers, compute_image_mean, and the Data layer.

    .venv/bin/python benchmarks/data_pipeline.py [--per_class 100] [--batches 20]

Makes a toy ImageNet (10 classes, images 300-500 px like ILSVRC's typical ~400x350 JPEGs), converts it
to a 256x256 LMDB with 1 worker (the baseline, as Caffe's single-threaded convert_imageset) and with
all cores, computes its mean, then times the TRAIN Data layer of AlexNet's recipe (batch 128, crop 227,
mirror, mean_file) pulling batches as fast as it can. Prints a Markdown block for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from netspec.data import convert as C  # noqa: E402
from netspec.data.mean import compute_mean  # noqa: E402
from netspec.data.toy import make_toy_imagenet  # noqa: E402
from netspec.layers.data_layer import DataLayer  # noqa: E402
from netspec.proto import pb  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def data_layer_rate(db, mean, batches: int, prefetch: int) -> float:
    lp = pb.LayerParameter(name="data", type="Data", top=["data", "label"])
    lp.data_param.source, lp.data_param.batch_size = str(db), 128
    lp.data_param.backend, lp.data_param.prefetch = pb.DataParameter.LMDB, prefetch
    tp = lp.transform_param
    tp.crop_size, tp.mirror, tp.mean_file = 227, True, str(mean)
    layer = DataLayer(lp, [], pb.TRAIN)
    for _ in range(2):  # warm up: threads started, queue filled
        layer()
    t0 = time.perf_counter()
    for _ in range(batches):
        data, _ = layer()
    rate = batches * 128 / (time.perf_counter() - t0)
    layer.close()
    assert data.shape == (128, 3, 227, 227)
    return rate


def transform_rate(db, mean, n: int = 512) -> float:
    """The DataTransformer alone (decode-free raw records), one thread, into one reused output buffer."""
    from netspec.data import db as dbmod
    from netspec.data.datum import parse
    from netspec.data.transform import DataTransformer

    import numpy as np

    tp = pb.TransformationParameter(crop_size=227, mirror=True, mean_file=str(mean))
    t = DataTransformer(tp, pb.TRAIN)
    records = [r for _, r in zip(range(n), dbmod.iter_records(db))]
    out, rng = np.zeros((3, 227, 227), np.float32), np.random.default_rng(0)
    t0 = time.perf_counter()
    for key, value in records:
        t.transform_datum(parse(value, key), rng, out, key)
    return len(records) / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per_class", type=int, default=100)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--min_size", type=int, default=300)
    ap.add_argument("--max_size", type=int, default=500)
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        info, t_toy = timed(lambda: make_toy_imagenet(tmp / "toy", 10, args.per_class, 0, seed=0,
                                                      min_size=args.min_size, max_size=args.max_size))
        lines = C.read_listfile(tmp / "toy" / "train.txt")
        n = len(lines)
        opt = C.Options(256, 256)
        rates = {}
        for w in sorted({1, cores}):
            _, t = timed(lambda: C.convert(tmp / "toy" / "train", lines, tmp / f"lmdb{w}", opt, shuffle=True,
                                           workers=w, progress=False))
            rates[w] = n / t
        _, t_mean = timed(lambda: compute_mean(tmp / f"lmdb{cores}", tmp / "mean.binaryproto"))
        torch.set_num_threads(1)
        t_rate = transform_rate(tmp / f"lmdb{cores}", tmp / "mean.binaryproto")
        layer_rates = {p: data_layer_rate(tmp / f"lmdb{cores}", tmp / "mean.binaryproto", args.batches, p)
                       for p in (1, 4)}
    cpu = platform.processor() or platform.machine()
    print(f"### {datetime.date.today()} — {cores}-core {cpu} ({platform.system()}), Python "
          f"{platform.python_version()}, torch {torch.__version__}")
    print(f"command: `.venv/bin/python benchmarks/data_pipeline.py --per_class {args.per_class} "
          f"--batches {args.batches}`  ")
    print(f"toy ImageNet: {n} train JPEGs of {args.min_size}-{args.max_size} px, written in {t_toy:.1f} s\n")
    print("| stage | images/s | vs baseline |")
    print("|---|---:|---:|")
    for w, r in rates.items():
        print(f"| convert to 256x256 LMDB, {w} worker{'s' if w > 1 else ''} | {r:.0f} | "
              f"{r / rates[1]:.2f}x |")
    print(f"| compute_image_mean | {n / t_mean:.0f} | |")
    print(f"| DataTransformer alone (parse, crop, mirror, mean), 1 thread, reused buffer | {t_rate:.0f} | |")
    for p, r in layer_rates.items():
        print(f"| Data layer TRAIN, batch 128, crop 227, mirror, mean_file, prefetch {p} | {r:.0f} | "
              f"{r / layer_rates[1]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
