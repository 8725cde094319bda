"""Shared pieces of the reliability tests: small LMDBs, crafted image headers, a tiny or read-only
file system (a tmpfs mounted inside the test's temporary folder when the tests run as root, a
skip elsewhere), and a check that an error is one line."""
from __future__ import annotations

import contextlib
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from netspec.data import db as dbmod
from netspec.data.datum import mat_to_datum
from netspec.proto import pb

ROOT = Path(__file__).resolve().parent.parent


def make_lmdb(path: Path, n: int = 60, size: int = 16, label=lambda i: i % 4) -> Path:
    """`n` raw 3 x size x size records (random pixels, labels 0..3) spread over many pages."""
    rng = np.random.default_rng(0)
    w = dbmod.Writer(path)
    for i in range(n):
        image = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        w.put(dbmod.caffe_key(i, f"img{i}.png"), mat_to_datum(image, label(i)).SerializeToString())
    w.close()
    return path


def put_records(path: Path, datums: list[pb.Datum]) -> Path:
    w = dbmod.Writer(path)
    for i, d in enumerate(datums):
        w.put(dbmod.caffe_key(i, f"r{i}"), d.SerializeToString())
    w.close()
    return path


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR (8-bit RGB) declaring width x height, with one empty IDAT and IEND."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def jpeg_header(width: int, height: int) -> bytes:
    """SOI, a JFIF APP0, then a baseline SOF0 declaring width x height (3 components), then EOI."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x01\x03\x11\x01"
    return b"\xff\xd8" + app0 + sof + b"\xff\xd9"


def encoded(data: bytes, label: int = 0) -> pb.Datum:
    return pb.Datum(data=data, label=label, encoded=True)


def one_line(text: str) -> str:
    """The message of a one-line error: no traceback, no second line."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert lines and "Traceback" not in text, text
    return lines[-1]


def run_cli(*argv, cwd=None, env=None) -> subprocess.CompletedProcess:
    """`python -m netspec ARGV` in a child process (a SIGBUS there cannot take the test run down)."""
    full_env = dict(os.environ, OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "netspec", *map(str, argv)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=120, check=False)


@contextlib.contextmanager
def small_fs(folder: Path, size_kb: int = 64, read_only: bool = False):
    """`folder` as a real file system of `size_kb` KiB (or read-only): a tmpfs mounted there and
    unmounted after. Mounting needs root; elsewhere the test is skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    opts = f"size={size_kb}k" + (",ro" if read_only else "")
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)], capture_output=True, check=False).returncode == 0
    if not mounted:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)
