"""Sharded reading on the CPU: rank 0 of 8 against rank 0 of 1, and one skipped record, before and
after Cursor.skip moved the cursor instead of reading (and copying) every skipped record.

    .venv/bin/python benchmarks/sharded_skip.py [--records 600] [--side 256] [--repeat 5]

Writes an LMDB of raw 3 x side x side Datum records (ILSVRC-sized after Caffe's resize to 256),
then times, interleaved in one process: (a) the records/s one rank gets from the reader's record
loop (BatchReader._next_record, the serial part every batch waits on) as rank 0 of 1 and rank 0 of
8, with the old skip (read() per skipped record) and the new one; (b) seconds per skipped record.
Prints a Markdown block for benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved, machine, median  # noqa: E402

from netspec.data import db as dbmod  # noqa: E402
from netspec.data.reader import BatchReader  # noqa: E402
from netspec.data.transform import DataTransformer  # noqa: E402
from netspec.proto import pb  # noqa: E402


def old_skip(cursor, n: int) -> None:
    """Cursor.skip before this change: every skipped record read and its value copied."""
    for _ in range(n):
        cursor.read()


def write_db(folder: Path, records: int, side: int) -> Path:
    rng = np.random.default_rng(0)
    w = dbmod.Writer(folder / "db")
    for i in range(records):
        d = pb.Datum(channels=3, height=side, width=side, label=i % 1000,
                     data=rng.integers(0, 256, 3 * side * side, dtype=np.uint8).tobytes())
        w.put(dbmod.caffe_key(i, f"img{i}.JPEG"), d.SerializeToString())
    w.close()
    return folder / "db"


def record_loop(db: Path, world: int, n: int, skip) -> float:
    """Seconds for rank 0 of `world` to take its next `n` records with the given skip."""
    reader = BatchReader(db, 1, DataTransformer(pb.TransformationParameter(), pb.TRAIN), phase=pb.TRAIN,
                         rank=0, world_size=world, prefetch=1)
    reader.cursor.skip = lambda k, c=reader.cursor: skip(c, k)
    t0 = time.perf_counter()
    for _ in range(n):
        reader._next_record()
    seconds = time.perf_counter() - t0
    reader.close()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=600)
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    new_skip = dbmod.Cursor.skip
    with tempfile.TemporaryDirectory() as tmp:
        db = write_db(Path(tmp), args.records, args.side)
        n = args.records // 8          # rank 0 of 8 then walks the whole database once per run
        runs = {(world, name): (lambda w=world, s=skip: record_loop(db, w, n, s))
                for world in (1, 8) for name, skip in (("old", old_skip), ("new", new_skip))}
        keep = dbmod.Cursor(db)   # one mapping of the database for every run, its pages touched once
        for _ in range(args.records):
            keep.read()
        secs = {k: [] for k in runs}
        for r in range(args.repeat):
            for k in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
                secs[k].append(runs[k]())
        cur = keep
        per = interleaved({"old": lambda: old_skip(cur, args.records), "new": lambda: cur.skip(args.records - 1)},
                          args.repeat)
        cur.close()
    rate = {k: n / median(v) for k, v in secs.items()}
    load = os.getloadavg()[0]
    print(f"- Machine: {machine()}; load average {load:.1f} when measured")
    print(f"- Command: `.venv/bin/python benchmarks/sharded_skip.py --records {args.records} --side {args.side}`\n")
    print("| reader loop, raw 3×{0}×{0} records | old skip records/s | new skip records/s | new vs old |".format(args.side))
    print("|---|---:|---:|---:|")
    for world in (1, 8):
        print(f"| rank 0 of {world} | {rate[(world, 'old')]:.0f} | {rate[(world, 'new')]:.0f} | "
              f"{rate[(world, 'new')] / rate[(world, 'old')]:.1f}× |")
    print(f"| rank 0 of 8 ÷ rank 0 of 1 | {rate[(8, 'old')] / rate[(1, 'old')]:.2f} | "
          f"{rate[(8, 'new')] / rate[(1, 'new')]:.2f} | |")
    old_us = median(per["old"]) / args.records * 1e6
    new_us = median(per["new"]) / (args.records - 1) * 1e6
    print(f"| one skipped record | {old_us:.1f} µs | {new_us:.2f} µs | {old_us / new_us:.0f}× faster |")


if __name__ == "__main__":
    main()
