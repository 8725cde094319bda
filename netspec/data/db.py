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
from .lmdb_check import check_file

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
    check_file(p, what)
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
        try:
            return env.stat()["entries"]
        except lmdb.Error as e:
            raise corrupt(path, None, e) from None


def iter_records(path, start: int = 0):
    """Yield (key: str, value: bytes) in key order, from record `start`."""
    with open_lmdb(path) as env, env.begin(buffers=False) as txn:
        cur = txn.cursor()
        key = None
        try:
            ok = cur.first()
            for _ in range(start):
                ok = ok and cur.next()
            while ok:
                key = cur.key().decode("utf-8", "replace")
                value = cur.value()
                yield key, value
                ok = cur.next()
        except lmdb.Error as e:
            raise corrupt(path, key, e) from None


def corrupt(path, key, e: lmdb.Error) -> NetspecError:
    """A page LMDB cannot read (a damaged or overwritten file), naming the last good record."""
    where = f"near record '{key}'" if key is not None else "at its first record"
    return NetspecError(f"LMDB '{path}' is corrupted {where}: {type(e).__name__}: {str(e).splitlines()[0]}")


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
        key = None
        try:
            if self._cur is None:
                self._open()
            key, value = self._cur.key().decode("utf-8", "replace"), self._cur.value()
            if not self._cur.next():
                self._cur.first()
        except lmdb.Error as e:
            raise corrupt(self.path, key, e) from None
        return key, value

    def read_key(self) -> str:
        """The current record's key, then advance (wrapping), without copying its value."""
        key = None
        try:
            if self._cur is None:
                self._open()
            key = self._cur.key().decode("utf-8", "replace")
            if not self._cur.next():
                self._cur.first()
        except lmdb.Error as e:
            raise corrupt(self.path, key, e) from None
        return key

    def skip(self, n: int) -> None:
        """Move past `n` records (wrapping) without copying their values: a sharded reader skips
        the other ranks' records this way, and whole passes over the database are not walked."""
        n = int(n) % self.entries
        try:
            if self._cur is None:
                self._open()
            cur = self._cur
            for _ in range(n):
                if not cur.next():
                    cur.first()
        except lmdb.Error as e:
            raise corrupt(self.path, None, e) from None

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
        with self._errors("create"):
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

    @contextlib.contextmanager
    def _errors(self, doing: str):
        """Disk full, read-only or quota while writing: one line naming the LMDB (LMDB reports ENOSPC
        as 'Input/output error' from its write-back)."""
        try:
            yield
        except (OSError, lmdb.Error) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
            raise NetspecError(f"cannot {doing} LMDB '{self.path}': {reason}") from None

    def commit(self) -> None:
        """Write the queued records in one transaction, doubling the map until they fit."""
        with self._errors("write"):
            while self.pending:
                try:
                    with self.env.begin(write=True) as txn:
                        for k, v in self.pending:
                            txn.put(k, v)
                    self.pending.clear()
                except lmdb.MapFullError:
                    self.env.set_mapsize(self.env.info()["map_size"] * 2)

    def close(self) -> None:
        try:
            self.commit()
            with self._errors("write"):
                self.env.sync(True)
        finally:
            self.env.close()
