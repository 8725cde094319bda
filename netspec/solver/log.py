"""Caffe-format training logs: glog-style lines out, and parsing them back for `netspec plot`.

Caffe logs through glog, whose lines start `I1125 12:00:00.000000 12345 solver.cpp:228] `
(severity, month and day, time with microseconds, thread id, source file:line). Caffe's own
tools/extra/parse_log.py reads the time from that prefix and the numbers from the messages that
Solver::Step, Solver::Test and SGDSolver::ApplyUpdate write, so netspec writes the same prefix and
the same messages, and `parse_log` below reads netspec's logs and real Caffe logs alike.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import NetspecError

_SEVERITY = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E",
             logging.CRITICAL: "F"}


class GlogFormatter(logging.Formatter):
    """`I1125 12:00:00.000000 12345 solver.py:228] message`, as glog's LogMessage::Init writes."""

    def format(self, record: logging.LogRecord) -> str:
        t = datetime.datetime.fromtimestamp(record.created)
        tid = (threading.get_native_id() if record.thread == threading.get_ident() else record.thread) % 100000
        prefix = (f"{_SEVERITY.get(record.levelno, 'I')}{t:%m%d %H:%M:%S}.{t.microsecond:06d} "
                  f"{tid:5d} {record.filename}:{record.lineno}] ")
        text = prefix + record.getMessage()
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _TqdmAwareHandler(logging.StreamHandler):
    """A stderr handler that prints above an active tqdm bar instead of through it."""

    def emit(self, record):
        try:
            from tqdm import tqdm

            if getattr(tqdm, "_instances", None):
                tqdm.write(self.format(record), file=self.stream)
                return
        except ImportError:
            pass
        super().emit(record)


@contextlib.contextmanager
def glog_to_stderr(level: int = logging.INFO, stream=None):
    """While inside, the `netspec` loggers write to stderr (or `stream`) in glog's format, and only
    there (not also through the root logger); the previous setup comes back on exit."""
    logger = logging.getLogger("netspec")
    saved = logger.level, logger.propagate
    handler = _TqdmAwareHandler(stream)
    handler.setFormatter(GlogFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


def g6(x) -> str:
    """A number as C++'s default ostream writes it (6 significant digits)."""
    return "%g" % float(x)       # %g is 6 significant digits; nan, inf and -inf print as in C++


# ---- parsing ----------------------------------------------------------------------------------
_NUM = r"([-+]?(?:nan|inf|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))"
_PREFIX = re.compile(r"^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{6})\b")
_ITERATION = re.compile(r"Iteration (\d+)")
_TRAIN_LOSS = re.compile(r"Iteration (\d+)(?: \(.*\))?, loss = " + _NUM)
_LR = re.compile(r"Iteration (\d+), lr = " + _NUM)
_TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_OUTPUT = re.compile(r"(Train|Test) net output #(\d+): (\S+) = " + _NUM)
_TEST_LOSS = re.compile(r"Test loss: " + _NUM)


@dataclass
class LogRow:
    iteration: int
    seconds: float | None = None
    values: dict = field(default_factory=dict)


@dataclass
class TrainingLog:
    """What a training log says: the smoothed train loss ("Iteration N, loss = L"), the train net's
    outputs at display iterations, learning rates, and each test net's outputs at test iterations
    (with "Test loss" when test_compute_loss printed one)."""
    loss: list[tuple[int, float]] = field(default_factory=list)
    train: list[LogRow] = field(default_factory=list)
    lr: list[tuple[int, float]] = field(default_factory=list)
    test: dict[int, list[LogRow]] = field(default_factory=dict)

    def train_series(self, name: str) -> tuple[list[int], list[float]]:
        rows = [r for r in self.train if name in r.values]
        return [r.iteration for r in rows], [r.values[name] for r in rows]

    def test_series(self, net: int, name: str) -> tuple[list[int], list[float]]:
        rows = [r for r in self.test.get(net, []) if name in r.values]
        return [r.iteration for r in rows], [r.values[name] for r in rows]

    def test_names(self, net: int) -> list[str]:
        return list(dict.fromkeys(k for r in self.test.get(net, []) for k in r.values))

    def train_names(self) -> list[str]:
        return list(dict.fromkeys(k for r in self.train for k in r.values))


def _time(line: str, year: int) -> datetime.datetime | None:
    m = _PREFIX.match(line)
    if not m:
        return None
    mo, d, h, mi, s, us = (int(g) for g in m.groups())
    try:
        return datetime.datetime(year, mo, d, h, mi, s, us)
    except ValueError:
        return None


def _start_time(lines: list[str], year: int) -> datetime.datetime | None:
    """Caffe's parse_log counts seconds from the 'Solving <net>' line (else: the first stamped line)."""
    stamped = [(line, t) for line in lines if (t := _time(line, year)) is not None]
    for line, t in stamped:
        if "Solving" in line:
            return t
    return stamped[0][1] if stamped else None


def _row(rows: list[LogRow], iteration: int, seconds) -> LogRow:
    if not rows or rows[-1].iteration != iteration:
        rows.append(LogRow(iteration, seconds))
    return rows[-1]


def parse_log(path) -> TrainingLog:
    """Parse a netspec or Caffe training log (glog prefixes optional)."""
    path = Path(path)
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        raise NetspecError(f"cannot read the log: {e.strerror}", file=path) from None
    year = datetime.datetime.fromtimestamp(path.stat().st_mtime).year
    out, iteration, test_net = TrainingLog(), None, None
    start = _start_time(lines, year)
    for line in lines:
        t = _time(line, year)
        seconds = (t - start).total_seconds() if t is not None and start is not None else None
        if (m := _TESTING.search(line)):
            iteration, test_net = int(m.group(1)), int(m.group(2))
            _row(out.test.setdefault(test_net, []), iteration, seconds)
        elif (m := _TRAIN_LOSS.search(line)):
            iteration, test_net = int(m.group(1)), None
            out.loss.append((iteration, float(m.group(2))))
        elif (m := _LR.search(line)):
            iteration = int(m.group(1))
            out.lr.append((iteration, float(m.group(2))))
        elif (m := _ITERATION.search(line)):
            iteration = int(m.group(1))
        if iteration is None:
            continue
        if (m := _OUTPUT.search(line)):
            name, value = m.group(3), float(m.group(4))
            if m.group(1) == "Train":
                _row(out.train, iteration, seconds).values[name] = value
            elif test_net is not None:
                _row(out.test.setdefault(test_net, []), iteration, seconds).values[name] = value
        elif (m := _TEST_LOSS.search(line)) and test_net is not None:
            _row(out.test.setdefault(test_net, []), iteration, seconds).values["Test loss"] = float(m.group(1))
    return out
