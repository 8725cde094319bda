"""Caffe's tools/extra/parse_log.py tables: a training log (Caffe's or netspec's) as two CSV files,
LOG.train and LOG.test, one row per iteration with NumIters, Seconds, LearningRate and each net
output, written as parse_log.py writes them (Python's csv 'excel' dialect, floats by repr).

The lines are recognised with netspec.solver.log's patterns and glog time stamps; the rows follow
parse_log.py's rules: parsing starts after the first 'Solving' line and its time is second 0; a
row is made at an iteration's first output line, with the last learning rate seen before it; it is
written once it has as many columns as the first row, or when the next iteration begins (so a
lone first row, or an incomplete last one, is left out, as parse_log.py leaves it); outputs of
several test nets at one iteration share a row; the first row takes the second row's rate.
"""
from __future__ import annotations

import csv
import datetime
import math
from pathlib import Path

from ..errors import NetspecError
from .log import _ITERATION, _LR, _OUTPUT, _time


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError as e:
        raise NetspecError(f"cannot read the log: {e.strerror}", file=path) from None


class _Table:
    """parse_log.py's parse_line_for_net_output for one kind (Train or Test)."""

    def __init__(self):
        self.rows: list[dict] = []
        self.row: dict | None = None

    def output(self, iteration: float, seconds: float, lr: float, name: str, value: float) -> None:
        if self.row is None or self.row["NumIters"] != iteration:
            if self.row is not None:
                self.rows.append(self.row)
            self.row = {"NumIters": iteration, "Seconds": seconds, "LearningRate": lr}
        self.row[name] = value

    def flush_if_full(self) -> None:
        if self.row is not None and self.rows and len(self.row) == len(self.rows[0]):
            self.rows.append(self.row)
            self.row = None

    def finished(self) -> list[dict]:
        if len(self.rows) > 1:  # the first rows come before any 'lr =' line
            self.rows[0]["LearningRate"] = self.rows[1]["LearningRate"]
        return self.rows


def parse_tables(path) -> tuple[list[dict], list[dict]]:
    """(train rows, test rows) of the log at `path`, as parse_log.py's parse_log returns them."""
    path = Path(path)
    lines = _lines(path)
    year = datetime.datetime.fromtimestamp(path.stat().st_mtime).year
    solving = next((i for i, line in enumerate(lines) if "Solving" in line), None)
    start = _time(lines[solving].strip(), year) if solving is not None else None
    if start is None:
        return [], []
    tables = {"Train": _Table(), "Test": _Table()}
    iteration, lr, last = -1.0, math.nan, start
    for line in lines[solving + 1:]:
        if (m := _ITERATION.search(line)):
            iteration = float(m.group(1))
        if iteration == -1:
            continue
        t = _time(line.strip(), year)
        if t is None:  # parse_log.py skips lines without a glog time stamp
            continue
        if t.month < last.month:  # the log ran into a new year
            year += 1
            t = t.replace(year=year)
        last = t
        if (m := _LR.search(line)):
            lr = float(m.group(2))
        if (m := _OUTPUT.search(line)):
            tables[m.group(1)].output(iteration, (t - start).total_seconds(), lr, m.group(3), float(m.group(4)))
        for table in tables.values():
            table.flush_if_full()
    return tables["Train"].finished(), tables["Test"].finished()


def write_table(path, rows: list[dict], delimiter: str = ",") -> bool:
    """Write rows as parse_log.py's write_csv (header from the first row); False when there are none."""
    if not rows:
        return False
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), dialect=csv.excel, delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return True
