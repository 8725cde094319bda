"""netspec.formats.binaryproto against the mean file Caffe's compute_image_mean wrote (tests/data/caffe)."""
from pathlib import Path

import lmdb
import numpy as np
import pytest

from netspec.errors import NetspecError
from netspec.formats.binaryproto import read_binaryproto, read_blobproto, write_binaryproto
from netspec.proto import pb

DATA = Path(__file__).parent / "data" / "caffe"
MEAN = DATA / "mean.binaryproto"


def test_mean_file_shape_and_values_equal_mean_of_lmdb():
    mean = read_binaryproto(MEAN)
    assert mean.shape == (1, 3, 64, 64) and mean.dtype == np.float32
    env = lmdb.open(str(DATA / "lmdb_raw"), readonly=True, lock=False)
    with env.begin() as txn:
        images = [np.frombuffer(pb.Datum.FromString(v).data, np.uint8) for _, v in txn.cursor()]
    # compute_image_mean sums uint8 pixels in float and divides by the count: exact in float32
    total = np.sum(np.stack(images).astype(np.float32), axis=0)
    expected = (total / np.float32(len(images))).reshape(mean.shape)
    assert len(images) == 12
    assert np.array_equal(mean, expected), f"mean: worst error {np.abs(mean - expected).max()}"


def test_read_write_is_byte_identical(tmp_path):
    out = tmp_path / "mean.binaryproto"
    write_binaryproto(out, read_binaryproto(MEAN))
    assert out.read_bytes() == MEAN.read_bytes()


def test_legacy_fields_and_modern_shape(tmp_path):
    path = tmp_path / "m.binaryproto"
    write_binaryproto(path, np.ones((3, 4, 5)))
    blob = read_blobproto(path)
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 4, 5) and not blob.HasField("shape")
    assert read_binaryproto(path).shape == (1, 3, 4, 5)
    write_binaryproto(path, np.ones((3, 4, 5)), legacy=False)
    assert list(read_blobproto(path).shape.dim) == [3, 4, 5] and read_binaryproto(path).shape == (3, 4, 5)
    with pytest.raises(NetspecError, match="at most 4 axes"):
        write_binaryproto(path, np.ones((1, 1, 1, 1, 2)))


def test_double_data_is_read_as_float32(tmp_path):
    blob = pb.BlobProto()
    blob.shape.dim.extend([2])
    blob.double_data.extend([0.1, 1e40])
    path = tmp_path / "d.binaryproto"
    path.write_bytes(blob.SerializeToString())
    assert read_binaryproto(path).tolist() == [np.float32(0.1), np.float32(np.inf)]


@pytest.mark.parametrize("content, expected", [
    (lambda: MEAN.read_bytes()[:1000], "truncated"),
    (lambda: b'name: "mean"\n', "this is a text file, not a binary .binaryproto"),
    (lambda: b"", "empty file"),
])
def test_bad_files(content, expected, tmp_path):
    path = tmp_path / "bad.binaryproto"
    path.write_bytes(content())
    with pytest.raises(NetspecError) as e:
        read_binaryproto(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value) and expected in str(e.value)


def test_count_mismatch(tmp_path):
    blob = pb.BlobProto(num=1, channels=3, height=2, width=2)
    blob.data.extend([0.0] * 11)
    path = tmp_path / "short.binaryproto"
    path.write_bytes(blob.SerializeToString())
    with pytest.raises(NetspecError, match="short.binaryproto: holds 11 data values but its shape 1×3×2×2 "
                                           "needs 12"):
        read_binaryproto(path)
