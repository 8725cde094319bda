"""Data-layer throughput per worker: images/s of the TRAIN reader with AlexNet's augmentation
(crop 227, mirror, mean subtraction) from a raw and a JPEG-encoded 256x256 LMDB, with 1..N threads
and 1..N worker processes (NETSPEC_DATA_PROCESSES), making float32 batches or uint8 crops
(NETSPEC_DATA_UINT8=1: the host only crops and mirrors; the float arithmetic is the GPU's, not timed),
or, for JPEG records, the host's half of NETSPEC_DATA_DECODE=device (mode `device`: records parsed,
headers read, crops drawn; decoding and cropping are the GPU's, not timed; threads only).

    .venv/bin/python benchmarks/data_workers.py [--records 512] [--batch 64] [--batches 16] [--max-workers 2]
                                               [--modes float,uint8]

Each configuration pulls `batches` batches as fast as it can after a warm-up batch (process start
not counted). Prints a Markdown block for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from netspec.data import db as dbmod  # noqa: E402
from netspec.data.reader import BatchReader  # noqa: E402
from netspec.data.transform import DataTransformer  # noqa: E402
from netspec.proto import pb  # noqa: E402


def write_db(path: Path, records: int, encoded: bool) -> Path:
    rng = np.random.default_rng(0)
    w = dbmod.Writer(path)
    base = cv2.resize(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), (256, 256))   # photo-like smooth
    for i in range(records):
        img = np.roll(base, i, axis=1)
        if encoded:
            d = pb.Datum(channels=3, height=256, width=256, label=i % 1000, encoded=True,
                         data=cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
        else:
            d = pb.Datum(channels=3, height=256, width=256, label=i % 1000, data=img.transpose(2, 0, 1).tobytes())
        w.put(dbmod.caffe_key(i, f"img{i}.JPEG"), d.SerializeToString())
    w.close()
    return path


def rate(db: Path, batch: int, batches: int, threads: int, processes: int, mode: str = "float") -> float:
    tp = pb.TransformationParameter(crop_size=227, mirror=True, mean_value=[104, 117, 123])
    reader = BatchReader(db, batch, DataTransformer(tp, pb.TRAIN), phase=pb.TRAIN, prefetch=4,
                         workers=threads, processes=processes, uint8=mode == "uint8",
                         decode_on_device=mode == "device")
    try:
        reader.next()                        # warm-up: processes started, first buffers made
        t0 = time.perf_counter()
        for _ in range(batches):
            reader.next()
        return batches * batch / (time.perf_counter() - t0)
    finally:
        reader.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=16)
    ap.add_argument("--max-workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--modes", default="float,uint8,device",
                    help="batches made: float32, uint8 crops, JPEG left to the device's decoder")
    args = ap.parse_args()
    modes = args.modes.split(",")
    counts = list(range(1, args.max_workers + 1))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for encoded in (False, True):
            db = write_db(Path(tmp) / ("jpeg" if encoded else "raw"), args.records, encoded)
            for kind in ("threads", "processes"):
                these = [m for m in modes if m != "device" or (encoded and kind == "threads")]
                for mode in these:     # interleaved per worker count, so load changes hit all alike
                    rows.append(["JPEG q90" if encoded else "raw", kind, mode, []])
                for n in counts:
                    for row in rows[-len(these):]:
                        row[3].append(rate(db, args.batch, args.batches, n if kind == "threads" else 1,
                                           n if kind == "processes" else 0, row[2]))
    print(f"- Machine: {machine()}; load average {os.getloadavg()[0]:.1f} when measured")
    print(f"- Command: `.venv/bin/python benchmarks/data_workers.py --records {args.records} --batch "
          f"{args.batch} --batches {args.batches} --max-workers {args.max_workers} --modes {args.modes}`\n")
    print("| records | workers are | batches | " + " | ".join(f"{n} worker(s) images/s" for n in counts)
          + " | per worker (1) | scaling 1→" + str(counts[-1]) + " |")
    print("|---|---|---|" + "---:|" * (len(counts) + 2))
    for name, kind, mode, rates in rows:
        print(f"| {name} | {kind} | {mode} | " + " | ".join(f"{r:.0f}" for r in rates)
              + f" | {rates[0]:.0f} | {rates[-1] / rates[0]:.2f}× |")


if __name__ == "__main__":
    main()
