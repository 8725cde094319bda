"""An LMDB data file checked against its own metadata before liblmdb maps it (layout from mdb.c).

liblmdb trusts the file: pages past the end of a truncated file kill the reader with SIGBUS, and a
damaged branch page trips its assertions (`IS_LEAF(mp)` in mdb_cursor_next aborts the process). So
before a database is opened for reading, netspec reads the two meta pages, compares the file size
with the newest one's last page number, and walks the main B-tree's branch pages: each page must
carry its own number, the type its depth calls for (branch above, leaf at the bottom) and node
offsets inside the page; each child must lie inside the file. The bytes of the values themselves are
the Datum parser's to judge.

Leaf pages are read too: every node must fit in its page and an overflow value must lie inside the
file, or liblmdb hands out bytes past the end of the mapped file (SIGBUS again). For ImageNet's 1.28M
records that is about 20k pages (80 MB) read once per process and file.
"""
from __future__ import annotations

import os
import struct
from pathlib import Path

from ..errors import NetspecError

# 64-bit layout: page header = mp_pgno (8), mp_pad (2), mp_flags (2), mp_lower (2), mp_upper (2).
# MDB_meta after the header: magic at 16, the free DB's md_pad (the page size) at 40, the main DB's
# md_depth at 94 and md_root at 128, mm_last_pg at 136, mm_txnid at 144.
_MAGIC = 0xBEEFC0DE
_META_BYTES = 152
_HEADER = 16
_BRANCH, _LEAF = 0x01, 0x02
_NO_PAGE = (1 << 64) - 1


def _meta(data: bytes) -> dict | None:
    if len(data) < _META_BYTES or struct.unpack_from("<I", data, 16)[0] != _MAGIC:
        return None
    return {"psize": struct.unpack_from("<I", data, 40)[0], "depth": struct.unpack_from("<H", data, 94)[0],
            "root": struct.unpack_from("<Q", data, 128)[0], "last": struct.unpack_from("<Q", data, 136)[0],
            "txnid": struct.unpack_from("<Q", data, 144)[0]}


def _newest_meta(fd: int, f: Path, what: str) -> dict:
    first = _meta(os.pread(fd, _META_BYTES, 0))
    psize = first["psize"] if first else 0
    if psize < 512 or psize > (1 << 16) or psize & (psize - 1):
        raise NetspecError(f"{what} '{f}' is not an LMDB data file (no valid meta page)")
    metas = [m for m in (first, _meta(os.pread(fd, _META_BYTES, psize))) if m and m["psize"] == psize]
    return max(metas, key=lambda m: m["txnid"])


_CHECKED: set = set()   # (real path, size, mtime) of files found sound in this process


def check_file(path, what: str = "LMDB") -> None:
    """Refuse a truncated or structurally damaged LMDB data file with one line (see the module doc)."""
    p = Path(path)
    f = p / "data.mdb" if p.is_dir() else p
    try:
        fd = os.open(f, os.O_RDONLY)
    except OSError as e:
        raise NetspecError(f"{what} '{f}' cannot be read: {e.strerror}") from None
    st = os.fstat(fd)
    stamp = (os.path.realpath(f), st.st_size, st.st_mtime_ns)
    if stamp in _CHECKED:
        os.close(fd)
        return
    try:
        meta = _newest_meta(fd, f, what)
        size, psize, last = os.fstat(fd).st_size, meta["psize"], meta["last"]
        if size < (last + 1) * psize:
            raise NetspecError(f"{what} '{f}' is truncated: its meta page says {(last + 1) * psize} bytes "
                               f"({last + 1} pages of {psize}), the file has {size}")
        if meta["root"] != _NO_PAGE:
            _walk(fd, meta, lambda msg: NetspecError(f"{what} '{f}' is corrupted: {msg}"))
        _CHECKED.add(stamp)
    except OSError as e:
        raise NetspecError(f"{what} '{f}' cannot be read: {e.strerror}") from None
    finally:
        os.close(fd)


def _walk(fd: int, meta: dict, corrupt) -> None:
    """Visit the main DB's branch pages breadth first, checking every page down to the leaves."""
    psize, last = meta["psize"], meta["last"]
    level, seen = [meta["root"]], set()
    for depth in range(meta["depth"], 0, -1):
        children = []
        for pgno in level:
            if not 2 <= pgno <= last or pgno in seen:
                raise corrupt(f"page {pgno} is referenced twice or lies outside pages 2..{last}")
            seen.add(pgno)
            page = os.pread(fd, psize, pgno * psize)
            children += _check_page(page, pgno, depth > 1, psize, corrupt)
            if depth == 1:
                _check_leaf_nodes(page, pgno, psize, last, corrupt)
        level = children
        if depth > 1 and not level:
            raise corrupt(f"a branch page at depth {meta['depth'] - depth + 1} has no children")


def _check_page(page: bytes, pgno: int, branch: bool, psize: int, corrupt) -> list[int]:
    """The children of one page (none for a leaf), after checking its header and node offsets."""
    number, _, flags, lower, upper = struct.unpack_from("<QHHHH", page, 0)
    kind = "branch" if branch else "leaf"
    if number != pgno or not flags & (_BRANCH if branch else _LEAF):
        raise corrupt(f"page {pgno} should be a {kind} page but its header says page {number}, flags "
                      f"0x{flags:x}")
    if not _HEADER <= lower <= upper <= psize:
        raise corrupt(f"{kind} page {pgno} has free space {lower}..{upper} outside the page")
    if not branch:
        return []
    children = []
    for k in range((lower - _HEADER) // 2):
        ptr = struct.unpack_from("<H", page, _HEADER + 2 * k)[0]
        if not upper <= ptr <= psize - 8:
            raise corrupt(f"branch page {pgno}: node {k} at offset {ptr} lies outside {upper}..{psize}")
        lo, hi, fl = struct.unpack_from("<HHH", page, ptr)
        children.append(lo | hi << 16 | fl << 32)
    return children


_BIGDATA = 0x01   # the node's value lives in overflow pages; the node holds their first page number


def _check_leaf_nodes(page: bytes, pgno: int, psize: int, last: int, corrupt) -> None:
    """Each node of a leaf page must fit in the page, and an overflow value inside the file: liblmdb
    would otherwise hand out bytes past the end of the mapped file (SIGBUS)."""
    lower, upper = struct.unpack_from("<HH", page, 12)
    for k in range((lower - _HEADER) // 2):
        ptr = struct.unpack_from("<H", page, _HEADER + 2 * k)[0]
        if not upper <= ptr <= psize - 8:
            raise corrupt(f"leaf page {pgno}: node {k} at offset {ptr} lies outside {upper}..{psize}")
        lo, hi, flags, ksize = struct.unpack_from("<HHHH", page, ptr)
        size = lo | hi << 16
        if flags & _BIGDATA:
            if ptr + 8 + ksize + 8 > psize:
                raise corrupt(f"leaf page {pgno}: node {k}'s key runs past the page")
            first = struct.unpack_from("<Q", page, ptr + 8 + ksize)[0]
            pages = (size + _HEADER + psize - 1) // psize
            if not 2 <= first <= last or first + pages - 1 > last:
                raise corrupt(f"leaf page {pgno}: node {k}'s value ({size} bytes from page {first}) lies "
                              f"outside pages 2..{last}")
        elif ptr + 8 + ksize + size > psize:
            raise corrupt(f"leaf page {pgno}: node {k} ({ksize}-byte key, {size}-byte value) runs past the page")
