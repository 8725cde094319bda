"""Reliability of the data readers and writers (issue 14): every fault gives one line naming the
file (and record), never a SIGBUS, a traceback or gigabytes of memory, and earlier outputs stay.

Truncated LMDBs are read in child processes as well: before the meta-page check such a file killed
its reader with SIGBUS, which would take the test run down with it.
"""
from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from reliability_helpers import (
    encoded,
    jpeg_header,
    make_lmdb,
    one_line,
    png_header,
    put_records,
    run_cli,
    small_fs,
)

from netspec.cli import main
from netspec.data import convert as conv
from netspec.data import db as dbmod
from netspec.data.color_pca import color_pca
from netspec.data.datum import decode_mat, to_array
from netspec.data.mean import compute_mean, save_mean
from netspec.errors import NetspecError
from netspec.formats.export import export_state_dict
from netspec.formats.image_header import declared_size
from netspec.frontend import prepare_net
from netspec.graph import compile_net
from netspec.proto import pb


def data_net(source: Path) -> str:
    return (f'layer {{ name: "data" type: "Data" top: "data" top: "label" '
            f'data_param {{ source: "{source}" batch_size: 4 }} }}')


def read_batch(source: Path):
    net = compile_net(prepare_net(text_format.Parse(data_net(source), pb.NetParameter()),
                                  pb.NetState(phase=pb.TRAIN)), pb.TRAIN)
    try:
        return net()
    finally:
        net.close()


# ---- truncated data.mdb -------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [0.5, 0.02])
def test_truncated_lmdb_is_one_line_in_every_reader(tmp_path, keep):
    db = make_lmdb(tmp_path / "db")
    size = (db / "data.mdb").stat().st_size
    os.truncate(db / "data.mdb", int(size * keep))
    for read in (compute_mean, color_pca, read_batch, dbmod.count):
        with pytest.raises(NetspecError, match=r"data.mdb' is truncated: its meta page says \d+ bytes"):
            read(db)


def test_truncated_lmdb_in_the_cli_exits_1_with_one_line(tmp_path):
    db = make_lmdb(tmp_path / "db")
    os.truncate(db / "data.mdb", (db / "data.mdb").stat().st_size // 2)
    for argv in (["compute-image-mean", db, tmp_path / "m.binaryproto"], ["color-pca", db]):
        done = run_cli(*argv)
        assert done.returncode == 1, (done.returncode, done.stderr)   # -7 was SIGBUS
        assert "is truncated" in one_line(done.stderr)
    assert not (tmp_path / "m.binaryproto").exists()


def test_a_file_that_is_no_lmdb_is_refused_before_mapping(tmp_path):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "data.mdb").write_bytes(b"\0" * 10000)
    with pytest.raises(NetspecError, match="not an LMDB data file"):
        dbmod.count(tmp_path / "db")


# ---- corrupted pages ----------------------------------------------------------------------------------
@pytest.mark.parametrize("page", [2, 5, 31])
def test_corrupted_lmdb_pages_are_one_line(tmp_path, page):
    db = make_lmdb(tmp_path / "db", n=120)
    data = bytearray((db / "data.mdb").read_bytes())
    data[page * 4096:(page + 1) * 4096] = b"\xab" * 4096
    (db / "data.mdb").write_bytes(bytes(data))
    for read in (compute_mean, color_pca):
        with pytest.raises(NetspecError, match=r"LMDB '.*db/data.mdb' is corrupted: page \d+ should be a"):
            read(db)


def test_a_branch_page_pointing_back_at_itself_is_one_line_not_an_lmdb_abort(tmp_path):
    # liblmdb follows the child pointer, expects a leaf and aborts: "Assertion 'IS_LEAF(mp)' failed"
    db = make_lmdb(tmp_path / "db", n=400, size=8)
    data = bytearray((db / "data.mdb").read_bytes())
    root = struct.unpack_from("<Q", data, 4096 + 128)[0]          # meta page 1 (the newer): main DB root
    lower = struct.unpack_from("<H", data, root * 4096 + 12)[0]
    last_node = struct.unpack_from("<H", data, root * 4096 + lower - 2)[0]
    struct.pack_into("<HHH", data, root * 4096 + last_node, root, 0, 0)
    (db / "data.mdb").write_bytes(bytes(data))
    done = run_cli("compute-image-mean", db)
    assert done.returncode == 1, (done.returncode, done.stderr)   # -6 was SIGABRT
    assert f"is corrupted: page {root} is referenced twice" in one_line(done.stderr)


# ---- image headers ------------------------------------------------------------------------------------
def test_declared_sizes_of_real_encodings():
    import cv2

    image = np.zeros((7, 11, 3), np.uint8)
    for ext in (".png", ".jpg", ".bmp", ".webp"):
        ok, buf = cv2.imencode(ext, image)
        assert ok and declared_size(buf.tobytes()) == (11, 7), ext
    assert declared_size(png_header(16000, 16000)) == (16000, 16000)
    assert declared_size(jpeg_header(65000, 65000)) == (65000, 65000)
    assert declared_size(b"II*\0 not a format we read") is None


def test_huge_png_record_is_refused_from_its_header(tmp_path):
    db = put_records(tmp_path / "db", [encoded(png_header(16000, 16000))])
    for read in (compute_mean, color_pca, read_batch):
        with pytest.raises(NetspecError, match="record '00000000_r0': the image declares 16000x16000"):
            read(db)


def test_jpeg_claiming_65000_squared_is_one_line_not_an_opencv_assertion():
    with pytest.raises(NetspecError, match="declares 65000x65000 = 4225000000 pixels"):
        decode_mat(encoded(jpeg_header(65000, 65000)), key="k")


def test_the_pixel_limit_is_configurable(monkeypatch):
    import cv2

    datum = encoded(cv2.imencode(".png", np.zeros((40, 50, 3), np.uint8))[1].tobytes())
    assert to_array(datum).shape == (3, 40, 50)
    monkeypatch.setenv("NETSPEC_MAX_IMAGE_PIXELS", "1999")
    with pytest.raises(NetspecError, match="50x40 = 2000 pixels, more than the limit of 1999"):
        to_array(datum)


# ---- writing: a folder as output, read-only, disk full ------------------------------------------------
def test_existing_folder_as_the_means_output_fails_before_reading(tmp_path):
    db = make_lmdb(tmp_path / "db", n=4)
    (tmp_path / "out").mkdir()
    with pytest.raises(NetspecError, match="out: cannot write: this is a folder"):
        compute_mean(db, tmp_path / "out")
    assert (tmp_path / "out").is_dir() and not list((tmp_path / "out").iterdir())


def test_read_only_folder_for_mean_convert_and_export(tmp_path):
    db = make_lmdb(tmp_path / "db", n=4)
    images = tmp_path / "images"
    images.mkdir()
    (images / "a.png").write_bytes(__import__("cv2").imencode(".png", np.zeros((4, 4, 3), np.uint8))[1])
    (tmp_path / "list.txt").write_text("a.png 0\n")
    with small_fs(tmp_path / "ro", read_only=True) as ro:
        with pytest.raises(NetspecError, match="cannot write: folder '.*ro' is not writable"):
            compute_mean(db, ro / "mean.binaryproto")
        with pytest.raises(NetspecError, match="out.partial: cannot create the LMDB folder: Read-only file system"):
            conv.convert(images, [("a.png", 0)], ro / "out", progress=False)
        with pytest.raises(NetspecError, match="w.pt: cannot write: folder '.*ro' is not writable"):
            export_state_dict({"ip": [torch.zeros(2)]}, ro / "w.pt")
        assert list(ro.iterdir()) == []


def test_disk_full_while_writing_a_mean_keeps_the_old_file(tmp_path):
    with small_fs(tmp_path / "full", size_kb=16) as full:
        old = full / "mean.binaryproto"
        old.write_bytes(b"old")
        with pytest.raises(NetspecError, match="mean.binaryproto: cannot write: No space left on device"):
            save_mean(np.zeros((1, 3, 64, 64), np.float32), old)   # 48 KiB into 16
        assert old.read_bytes() == b"old"
        assert [p.name for p in full.iterdir()] == ["mean.binaryproto"]   # the temporary file is gone


def test_disk_full_while_writing_an_lmdb_is_one_line(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(1)
    import cv2
    for i in range(6):
        cv2.imwrite(str(images / f"{i}.png"), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    with small_fs(tmp_path / "full", size_kb=64) as full, \
            pytest.raises(NetspecError, match=r"cannot (write|create) LMDB '.*out.partial'"):
        conv.convert(images, [(f"{i}.png", 0) for i in range(6)], full / "out", progress=False,
                     workers=1, commit_every=2)


# ---- convert-imagenet's input -------------------------------------------------------------------------
def test_non_utf8_list_file_names_the_line(tmp_path):
    (tmp_path / "list.txt").write_bytes(b"a.jpg 0\ncaf\xe9.jpg 1\n")
    with pytest.raises(NetspecError, match=r"list.txt:2: not UTF-8 text \(byte 0xe9 at column 4\)"):
        conv.read_listfile(tmp_path / "list.txt")


def test_label_beyond_int32_names_the_line(tmp_path):
    (tmp_path / "list.txt").write_text("a.jpg 0\nb.jpg 2147483648\n")
    with pytest.raises(NetspecError, match="list.txt:2: label 2147483648 does not fit Datum.label"):
        conv.read_listfile(tmp_path / "list.txt")
    (tmp_path / "list.txt").write_text("a.jpg -2147483648\n")
    assert conv.read_listfile(tmp_path / "list.txt") == [("a.jpg", -(1 << 31))]


def test_all_missing_conversion_exits_non_zero_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "list.txt").write_text("gone1.jpg 0\ngone2.jpg 1\n")
    status = main(["convert-imagenet", "--quiet", str(tmp_path / "images"), str(tmp_path / "list.txt"),
                   str(tmp_path / "db")])
    assert status == 1
    assert "no image could be converted: all 2 were skipped (first: 'gone1.jpg': file not found)" in \
        one_line(capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "list.txt"]


def test_negative_workers_is_refused(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "list.txt").write_text("a.jpg 0\n")
    status = main(["convert-imagenet", "--workers", "-3", str(tmp_path / "images"), str(tmp_path / "list.txt"),
                   str(tmp_path / "db")])
    assert status == 1
    assert "--workers must be 0 (all cores) or positive, found -3" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "db").exists() and not (tmp_path / "db.partial").exists()


def test_earlier_outputs_survive_a_failed_rerun(tmp_path):
    # A mean written once, then a rerun on a truncated copy of its LMDB: the first mean is untouched.
    db = make_lmdb(tmp_path / "db", n=6)
    out = tmp_path / "mean.binaryproto"
    compute_mean(db, out)
    before = out.read_bytes()
    shutil.copytree(db, tmp_path / "cut")
    os.truncate(tmp_path / "cut" / "data.mdb", 8192 + 100)
    with pytest.raises(NetspecError, match="truncated"):
        compute_mean(tmp_path / "cut", out)
    assert out.read_bytes() == before


def test_an_unforeseen_io_error_in_a_command_is_still_one_line(capsys):
    from netspec.cli import report_errors

    def command():
        raise OSError(28, "No space left on device", "/data/out.bin")

    assert report_errors("netspec x", False, command) == 1
    assert capsys.readouterr().err == "netspec x: error: /data/out.bin: No space left on device\n"
