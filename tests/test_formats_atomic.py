"""netspec.formats.atomic: a target is always the old complete version or the new one."""
import os

import pytest

from netspec.errors import NetspecError
from netspec.formats.atomic import atomic_dir, atomic_open, atomic_write


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    atomic_write(path, b"new")
    assert path.read_bytes() == b"new" and os.listdir(tmp_path) == ["f.bin"]


def test_failure_keeps_old_file_and_removes_temp(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_open(path) as f:
        f.write(b"half")
        assert path.read_bytes() == b"old"  # nothing visible before the rename
        raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_missing_folder_is_one_line_error(tmp_path):
    with pytest.raises(NetspecError, match="folder .* does not exist"):
        atomic_write(tmp_path / "no" / "f.bin", b"x")


def test_atomic_dir_create_refuse_and_overwrite(tmp_path):
    path = tmp_path / "db"
    with atomic_dir(path) as tmp:
        (tmp / "data.mdb").write_bytes(b"1")
        assert not path.exists()
    assert (path / "data.mdb").read_bytes() == b"1"
    with pytest.raises(NetspecError, match="db: already exists"), atomic_dir(path):
        pass
    with atomic_dir(path, overwrite=True) as tmp:
        (tmp / "data.mdb").write_bytes(b"2")
    assert (path / "data.mdb").read_bytes() == b"2" and os.listdir(tmp_path) == ["db"]


def test_atomic_dir_failure_keeps_old_folder(tmp_path):
    path = tmp_path / "db"
    path.mkdir()
    (path / "data.mdb").write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_dir(path, overwrite=True) as tmp:
        (tmp / "data.mdb").write_bytes(b"new")
        raise RuntimeError("crash")
    assert (path / "data.mdb").read_bytes() == b"old" and os.listdir(tmp_path) == ["db"]
