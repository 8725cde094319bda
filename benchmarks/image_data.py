"""ImageData throughput against the Data layer on the same images with the same transform.

    .venv/bin/python benchmarks/image_data.py [--images 256] [--size 256] [--batch 64] [--rounds 5]

Writes `--images` JPEGs of size x size (random smooth colour fields, quality 90), a list file for
ImageData, and an encoded LMDB of the very same files for the Data layer (convert_imageset --encoded:
the records hold the JPEG bytes, so both layers decode the same data). Both run in TRAIN with
crop 227, mirror and per-channel mean values, batch `--batch`, their default prefetch. Each round
times one epoch of each, taking turns, after a warm-up batch; the Markdown row gives images/s
(median of rounds, best in brackets) and the ratio ImageData / Data, with the machine's load.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2
import numpy as np
import torch

from netspec.data import convert as C
from netspec.layers.data_layer import DataLayer
from netspec.layers.image_data import ImageData
from netspec.proto import pb


def make_images(folder: Path, n: int, size: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        lines.append((f"{i:05d}.jpg", i % 10))
    (folder / "list.txt").write_text("".join(f"{name} {label}\n" for name, label in lines))
    return lines


def _transform(lp: pb.LayerParameter) -> None:
    tp = lp.transform_param
    tp.crop_size, tp.mirror = 227, True
    tp.mean_value.extend([104, 117, 123])


def image_data_layer(folder: Path, batch: int) -> ImageData:
    lp = pb.LayerParameter(name="data", type="ImageData", top=["data", "label"])
    lp.image_data_param.source, lp.image_data_param.root_folder = str(folder / "list.txt"), f"{folder}/"
    lp.image_data_param.batch_size = batch
    _transform(lp)
    return ImageData(lp, [], pb.TRAIN)


def data_layer(db: Path, batch: int) -> DataLayer:
    lp = pb.LayerParameter(name="data", type="Data", top=["data", "label"])
    lp.data_param.source, lp.data_param.batch_size = str(db), batch
    lp.data_param.backend = pb.DataParameter.LMDB
    _transform(lp)
    return DataLayer(lp, [], pb.TRAIN)


def epoch_rate(layer, batches: int, batch: int) -> float:
    t0 = time.perf_counter()
    for _ in range(batches):
        data, _ = layer()
    assert tuple(data.shape) == (batch, 3, 227, 227)
    return batches * batch / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lines = make_images(folder, args.images, args.size)
        C.convert(folder, lines, folder / "lmdb", C.Options(encoded=True), workers=os.cpu_count(), progress=False)
        layers = {"ImageData": image_data_layer(folder, args.batch), "Data": data_layer(folder / "lmdb", args.batch)}
        for layer in layers.values():
            layer()                       # warm up: threads started, first batches queued
        batches = args.images // args.batch
        rates: dict[str, list[float]] = {name: [] for name in layers}
        for _ in range(args.rounds):      # take turns so that load changes hit both alike
            for name, layer in layers.items():
                rates[name].append(epoch_rate(layer, batches, args.batch))
        for layer in layers.values():
            layer.close()
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    med = {n: statistics.median(r) for n, r in rates.items()}
    cpu = platform.processor() or platform.machine()
    print(f"### {datetime.date.today()} — {os.cpu_count()}-core {cpu}, torch {torch.__version__}, "
          f"load {load} (1/5/15 min)")
    print(f"command: `.venv/bin/python benchmarks/image_data.py --images {args.images} --size {args.size} "
          f"--batch {args.batch} --rounds {args.rounds}`\n")
    print("| layer | images/s, median (best) |")
    print("|---|---:|")
    for name, r in rates.items():
        print(f"| {name} | {med[name]:.0f} ({max(r):.0f}) |")
    print(f"\nratio ImageData / Data (medians): {med['ImageData'] / med['Data']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
