"""Write files and folders so that readers see the old version or the new one, never half of one.

Caffe writes snapshots in place (WriteProtoToBinaryFile), so a crash mid-write leaves a corrupt
.caffemodel. netspec writes to a temporary name in the same folder, flushes it to disk (fsync) and then
renames it over the target with os.replace, which is atomic on POSIX and Windows for files on one
file system. Snapshots, mean files and LMDB folders all go through here.
"""
from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
from pathlib import Path

from ..errors import NetspecError


def _temp_name(path: Path) -> Path:
    # A dot-name in the target's own folder: same file system (rename stays atomic), hidden from ls.
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


def _fsync_dir(folder: Path) -> None:
    """Persist a rename: the directory entry lives in the folder (POSIX only; a no-op elsewhere)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_folder(path: Path) -> None:
    if not path.parent.is_dir():
        raise NetspecError(f"cannot write: folder '{path.parent}' does not exist", file=path)


def check_target(path: Path) -> None:
    """Refuse before writing anything: a folder where the file goes, or a folder we cannot write."""
    path = Path(path)
    _check_folder(path)
    if path.is_dir():
        raise NetspecError("cannot write: this is a folder; give a file name", file=path)
    if not os.access(path.parent, os.W_OK):
        raise NetspecError(f"cannot write: folder '{path.parent}' is not writable", file=path)


def io_error(path, e: OSError, doing: str = "write") -> NetspecError:
    """An OSError while writing `path` (disk full, read-only, quota ...) as one line."""
    reason = e.strerror or str(e)
    other = f" ('{e.filename}')" if e.filename and Path(str(e.filename)).name != Path(path).name \
        and not Path(str(e.filename)).name.startswith(f".{Path(path).name}.tmp-") else ""
    return NetspecError(f"cannot {doing}: {reason}{other}", file=path)


@contextlib.contextmanager
def atomic_open(path, mode: str = "wb"):
    """Open a temporary file for writing; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    check_target(path)
    tmp = _temp_name(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise io_error(path, e) from None
        raise
    _fsync_dir(path.parent)


def atomic_write(path, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_open(path, "wb") as f:
        f.write(data)


@contextlib.contextmanager
def atomic_dir(path, overwrite: bool = False):
    """Yield a temporary folder to fill; on success it takes the name `path`.

    An existing `path` is an error unless `overwrite` (Caffe's convert_imageset also refuses to reuse
    an LMDB folder). With `overwrite` the old folder is renamed aside, the new one renamed in and the
    old one deleted, so `path` is always either the old complete folder or the new one.
    """
    path = Path(path)
    _check_folder(path)
    if path.exists() and not overwrite:
        raise NetspecError("already exists; remove it or choose another name", file=path)
    tmp = _temp_name(path)
    try:
        tmp.mkdir()
    except OSError as e:
        raise io_error(path, e, "create the folder") from None
    try:
        yield tmp
        for child in tmp.iterdir():
            if child.is_file():
                with open(child, "rb") as f:
                    os.fsync(f.fileno())
        _replace_dir(tmp, path)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):
            raise io_error(path, e) from None
        raise
    _fsync_dir(path.parent)


def remove_stale_temps(folder, stem: str) -> list[Path]:
    """Delete the hidden temporary files (`.<stem>*.tmp-<pid>-<hex>`) a killed writer left in `folder`
    whose writer process no longer runs; return what was removed."""
    removed = []
    for p in Path(folder).glob(f".{glob.escape(stem)}*.tmp-*"):
        pid = p.name.rsplit(".tmp-", 1)[1].split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
            removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    """Does process `pid` exist (on this machine)? A pid we may not signal still exists."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _replace_dir(new: Path, path: Path) -> None:
    if not path.exists():
        os.replace(new, path)
        return
    old = _temp_name(path)
    os.replace(path, old)
    try:
        os.replace(new, path)
    except BaseException:
        os.replace(old, path)
        raise
    if old.is_dir():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink()
