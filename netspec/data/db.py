"""LMDB databases of Datum records, as Caffe's src/caffe/util/db_lmdb.cpp reads and writes them.

Keys are Caffe's `%08d_<path>` (convert_imageset's `format_int(line_id, 8) + "_" + path`), values are
serialised Datum messages. Readers open the environment read-only without a lock file, so the
fixtures' folders (data.mdb only) and databases on read-only media both work. The writer starts
with a small map and doubles it when LMDB reports the map full (Caffe 1.0 does the same in
LMDBTransaction::Commit; older Caffe reserved a fixed 1 TB map).
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import lmdb

from ..errors import NetspecError

COMMIT_EVERY = 1000          # convert_imageset commits every 1000 records
INITIAL_MAP_SIZE = 64 << 20  # 64 MiB; doubled on MapFullError


def caffe_key(line_id: int, path: str) -> str:
    """convert_imageset's record key: the list line number, zero-padded to 8, then the path."""
    return f"{line_id:08d}_{path}"


def is_lmdb(path) -> bool:
    p = Path(path)
    return (p / "data.mdb").is_file() or (p.is_file() and p.name.endswith(".mdb"))


def _open(p: Path, what: str) -> lmdb.Environment:
    if not p.exists():
        raise NetspecError(f"{what} '{p}' does not exist")
    if not is_lmdb(p):
        hint = " (it looks like a LevelDB, which netspec does not read)" if (p / "CURRENT").exists() else ""
        raise NetspecError(f"{what} '{p}' is not an LMDB: no data.mdb inside{hint}")
    try:
        return lmdb.open(str(p), readonly=True, lock=False, readahead=False, max_readers=512,
                         subdir=p.is_dir())
    except lmdb.Error as e:
        raise NetspecError(f"{what} '{p}' cannot be opened: {e}") from None


# LMDB allows one environment per file and process, so readers of one database share it.
_OPEN: dict[str, list] = {}  # real path -> [environment, number of users]
_OPEN_LOCK = threading.Lock()


def acquire(path, what: str = "LMDB") -> tuple[lmdb.Environment, str]:
    """The shared read-only environment of `path` and the token to `release` it with."""
    p = Path(path)
    key = os.path.realpath(p)
    with _OPEN_LOCK:
        if key not in _OPEN:
            _OPEN[key] = [_open(p, what), 0]
        _OPEN[key][1] += 1
        return _OPEN[key][0], key


def release(key: str) -> None:
    with _OPEN_LOCK:
        entry = _OPEN[key]
        entry[1] -= 1
        if entry[1] == 0:
            entry[0].close()
            del _OPEN[key]


@contextlib.contextmanager
def open_lmdb(path, what: str = "LMDB"):
    """Open an existing LMDB read-only; a missing or non-LMDB path is a one-line error."""
    env, key = acquire(path, what)
    try:
        yield env
    finally:
        release(key)


def count(path) -> int:
    with open_lmdb(path) as env:
        return env.stat()["entries"]


def iter_records(path, start: int = 0):
    """Yield (key: str, value: bytes) in key order, from record `start`."""
    with open_lmdb(path) as env, env.begin(buffers=False) as txn:
        cur = txn.cursor()
        ok = cur.first()
        for _ in range(start):
            ok = ok and cur.next()
        while ok:
            yield cur.key().decode("utf-8", "replace"), cur.value()
            ok = cur.next()


class Cursor:
    """A read cursor that wraps to the first record at the end, as Caffe's DataLayer::Next does."""

    def __init__(self, path, what: str = "data source"):
        self.path = str(path)
        self.env, self._token = acquire(path, what)
        self.entries = self.env.stat()["entries"]
        if self.entries == 0:
            release(self._token)
            raise NetspecError(f"{what} '{path}' is empty: it holds no records")
        self._txn = None
        self._cur = None

    def _open(self):
        # Transactions belong to the thread that made them, so open lazily in the reading thread.
        self._txn = self.env.begin(buffers=False)
        self._cur = self._txn.cursor()
        self._cur.first()

    def read(self) -> tuple[str, bytes]:
        """The current record, then advance (wrapping to the first record after the last)."""
        if self._cur is None:
            self._open()
        key, value = self._cur.key().decode("utf-8", "replace"), self._cur.value()
        if not self._cur.next():
            self._cur.first()
        return key, value

    def skip(self, n: int) -> None:
        for _ in range(n):
            self.read()

    def close(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = self._cur = None
        if self._token is not None:
            release(self._token)
            self._token = None


class Writer:
    """Buffered LMDB writer: puts are committed every `commit_every` records; the map grows on demand."""

    def __init__(self, path, commit_every: int = COMMIT_EVERY, map_size: int = INITIAL_MAP_SIZE):
        self.path = str(path)
        os.makedirs(self.path, exist_ok=True)
        self.env = lmdb.open(self.path, map_size=map_size, subdir=True, meminit=False, map_async=False)
        self.commit_every = commit_every
        self.pending: list[tuple[bytes, bytes]] = []

    def put(self, key: str, value: bytes) -> bool:
        """Queue one record; returns True when this put triggered a commit."""
        self.pending.append((key.encode("utf-8"), value))
        if len(self.pending) >= self.commit_every:
            self.commit()
            return True
        return False

    def commit(self) -> None:
        """Write the queued records in one transaction, doubling the map until they fit."""
        while self.pending:
            try:
                with self.env.begin(write=True) as txn:
                    for k, v in self.pending:
                        txn.put(k, v)
                self.pending.clear()
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def close(self) -> None:
        self.commit()
        self.env.sync(True)
        self.env.close()
