"""Data-layer batches made by worker processes (data/workers.py) are the batches the reader's threads
make, record for record and crop for crop; the knob is NETSPEC_DATA_PROCESSES."""
from pathlib import Path

import numpy as np
import pytest

from netspec.data.reader import BatchReader
from netspec.data.transform import DataTransformer
from netspec.data.workers import requested_processes
from netspec.errors import NetspecError
from netspec.proto import pb

FIX = Path(__file__).parent / "data" / "caffe"


def _reader(processes, **kw):
    tp = pb.TransformationParameter(crop_size=3, mirror=True, scale=0.5, mean_value=[10.0])
    return BatchReader(FIX / "lmdb_raw", 4, DataTransformer(tp, pb.TRAIN), phase=pb.TRAIN, seed=11,
                       processes=processes, **kw)


def test_worker_processes_give_the_threads_batches():
    # rank 1 of 3: the keys the main process hands the worker follow Caffe's sharded order
    threads, procs = _reader(0, rank=1, world_size=3), _reader(1, rank=1, world_size=3)
    try:
        for i in range(5):       # past the end of the 12-record LMDB: the wrap is the same too
            (a, la), (b, lb) = threads.next(), procs.next()
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"batch {i}")
            np.testing.assert_array_equal(la.numpy(), lb.numpy(), err_msg=f"labels of batch {i}")
        kept = b.clone()
        procs.next(), procs.next()
        assert np.array_equal(kept.numpy(), b.numpy()), "a batch still held was overwritten"
    finally:
        threads.close()
        procs.close()


def test_process_count_from_the_environment(monkeypatch):
    monkeypatch.setenv("NETSPEC_DATA_PROCESSES", "3")
    assert requested_processes() == 3 and requested_processes(0) == 0
    monkeypatch.setenv("NETSPEC_DATA_PROCESSES", "many")
    with pytest.raises(NetspecError, match="NETSPEC_DATA_PROCESSES: expected a number of worker processes"):
        requested_processes()
