"""Compute threads on a shared machine: netspec's default choice (netspec/threads.py) against 1 thread and
all usable cores, timing forward+backward of the demo's net (models/caffenet/toy_train_val.prototxt,
TRAIN phase, batch 32, data fed from memory).

The three settings are interleaved in one process, round after round, so that the machine's load
(which changes by the second when other jobs run) weighs on each alike; the default is re-chosen each
round from the load at that moment, as a fresh `netspec train` would choose it. Prints one line per
round and the medians, with the load average before and after.

    python benchmarks/threads.py --rounds 7 --iterations 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from netspec import threads  # noqa: E402
from netspec.graph.inspect import compile_for_inspection  # noqa: E402

NET = ROOT / "models" / "caffenet" / "toy_train_val.prototxt"


def make_step(batch: int):
    net, _ = compile_for_inspection(str(NET), "TRAIN", 0, [], {"data": (batch, 3, 57, 57), "label": (batch,)})
    inputs = {"data": torch.randn(batch, 3, 57, 57), "label": torch.randint(0, 10, (batch,)).float()}
    params = [p for p in net.parameters() if p.requires_grad]

    def step():
        out = net(**inputs)
        loss = sum(v.sum() for v in (out.values() if isinstance(out, dict) else [out]))
        loss.backward()
        for p in params:
            p.grad = None
    return step


def time_it(step, n_threads: int, iterations: int) -> float:
    torch.set_num_threads(n_threads)
    step()  # the first pass after a change of thread count starts the pool
    t = time.perf_counter()
    for _ in range(iterations):
        step()
    return (time.perf_counter() - t) / iterations


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    cores = threads.usable_cores()
    step = make_step(a.batch)
    print(f"usable cores {cores}; load before {os.getloadavg()}")
    rows = []
    for r in range(a.rounds):
        default, why = threads.choose(env={})
        row = {"1": time_it(step, 1, a.iterations), "all": time_it(step, cores, a.iterations),
               "default": time_it(step, default, a.iterations)}
        rows.append(row)
        print(f"round {r}: load {os.getloadavg()[0]:.2f}, default {default} ({why}); "
              + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in row.items()), flush=True)
    med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    best = min(med["1"], med["all"])
    per_round = [row["default"] / min(row["1"], row["all"]) for row in rows]
    print("medians per iteration: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in med.items()))
    print(f"default / better of (1, all): median of medians {med['default'] / best:.2f}x; "
          f"per round median {statistics.median(per_round):.2f}x")
    print(f"load after {os.getloadavg()}")


if __name__ == "__main__":
    main()
