"""compute_image_mean parity with real Caffe's mean.binaryproto, and mean-file reading."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from netspec.data import db as dbmod
from netspec.data.datum import mat_to_datum
from netspec.cli import tool_main
from netspec.data.mean import compute_mean, load_mean
from netspec.errors import NetspecError
from netspec.proto import pb

FIX = Path(__file__).parent / "data" / "caffe"


def test_mean_of_lmdb_raw_is_caffes_file_byte_for_byte(tmp_path):
    mean = compute_mean(FIX / "lmdb_raw", tmp_path / "mean.binaryproto")
    ref = load_mean(FIX / "mean.binaryproto")
    assert mean.shape == (1, 3, 64, 64) and mean.dtype == np.float32
    assert np.array_equal(mean[0], ref), f"mean: worst error {np.abs(mean[0] - ref).max()}"
    assert (tmp_path / "mean.binaryproto").read_bytes() == (FIX / "mean.binaryproto").read_bytes()


def test_mean_of_encoded_records_decodes_them():
    mean = compute_mean(FIX / "lmdb_encoded")[0]
    ref = load_mean(FIX / "mean.binaryproto")
    # the JPEG round trip moves pixels a little, never the overall picture
    assert mean.shape == ref.shape and 0 < np.abs(mean - ref).mean() < 3


def test_mean_accumulates_in_float32_like_caffe(tmp_path):
    # Caffe sums into the BlobProto's float field: 2^24 + 1 is not representable, so adding 1 to a sum
    # of 2^24 is lost. Float-data records make that reachable with three records.
    w = dbmod.Writer(tmp_path / "db")
    for i, v in enumerate([2.0 ** 24, 1.0, 1.0]):
        w.put(f"{i:08d}", pb.Datum(channels=1, height=1, width=1, float_data=[v]).SerializeToString())
    w.close()
    mean = compute_mean(tmp_path / "db")
    assert mean.item() == np.float32(2.0 ** 24) / np.float32(3)  # float64 would give (2^24 + 2) / 3


def test_mean_cli_and_errors(tmp_path, capsys):
    assert tool_main("compute-image-mean", [str(FIX / "lmdb_gray"), str(tmp_path / "g.binaryproto"), "--quiet"]) == 0
    assert load_mean(tmp_path / "g.binaryproto").shape == (1, 32, 48)
    assert "1x1x32x48" in capsys.readouterr().out
    w = dbmod.Writer(tmp_path / "mixed")
    w.put("a", mat_to_datum(np.zeros((4, 4, 3), np.uint8), 0).SerializeToString())
    w.put("b", mat_to_datum(np.zeros((5, 4, 3), np.uint8), 0).SerializeToString())
    w.close()
    with pytest.raises(NetspecError, match="record 'b' is 3x5x4, the first record 3x4x4"):
        compute_mean(tmp_path / "mixed")
    with pytest.raises(NetspecError, match="does not exist"):
        compute_mean(tmp_path / "nope")
    (tmp_path / "bad.binaryproto").write_bytes(b"\xff\xff\xff")
    with pytest.raises(NetspecError, match="not a BlobProto"):
        load_mean(tmp_path / "bad.binaryproto")


def test_load_mean_reads_shape_field_blobs(tmp_path):
    blob = pb.BlobProto(data=np.arange(12, dtype=np.float32))
    blob.shape.dim.extend([1, 3, 2, 2])
    (tmp_path / "m.binaryproto").write_bytes(blob.SerializeToString())
    want = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    assert np.array_equal(load_mean(tmp_path / "m.binaryproto"), want)
