"""Sharded reading moves the cursor past the other ranks' records without copying them
(data/db.Cursor.skip), so each rank reads only its own share; the shares are Caffe's."""
from pathlib import Path

import pytest

from netspec.data import db as dbmod
from netspec.data.reader import BatchReader
from netspec.data.transform import DataTransformer
from netspec.proto import pb

FIX = Path(__file__).parent / "data" / "caffe"
SOURCE = FIX / "lmdb_raw"


def _reader(rank, world):
    return BatchReader(SOURCE, 3, DataTransformer(pb.TransformationParameter(), pb.TRAIN), phase=pb.TRAIN,
                       rank=rank, world_size=world)


@pytest.fixture
def value_copies(monkeypatch):
    """Counts the records whose value is read (Cursor.read) and the values LMDB copies out."""
    counts = {"read": 0}
    real = dbmod.Cursor.read

    def counted(self):
        counts["read"] += 1
        return real(self)

    monkeypatch.setattr(dbmod.Cursor, "read", counted)
    return counts


def test_rank_of_a_sharded_run_reads_only_its_records(value_copies):
    keys = [k for k, _ in dbmod.iter_records(SOURCE)]
    r = _reader(rank=2, world=4)
    got = [keys.index(r._next_record()[0]) for _ in range(10)]
    r.close()
    assert got == [(2 + 4 * i) % len(keys) for i in range(10)]
    assert value_copies["read"] == 10, f"{value_copies['read']} records read for 10 of this rank's"


def test_skip_moves_without_reading_and_wraps():
    keys = [k for k, _ in dbmod.iter_records(SOURCE)]
    n = len(keys)
    cur = dbmod.Cursor(SOURCE)
    try:
        cur.skip(3)
        assert cur.read()[0] == keys[3]
        cur.skip(n)                       # a whole pass brings the cursor back where it was
        assert cur.read()[0] == keys[4]
        cur.skip(2 * n + n - 5)           # past the end: wraps to the first record as read() does
        assert cur.read()[0] == keys[(5 + n - 5) % n]
    finally:
        cur.close()


def test_skip_never_reads_a_record(value_copies):
    cur = dbmod.Cursor(SOURCE)
    cur.skip(7)
    cur.close()
    assert value_copies["read"] == 0
