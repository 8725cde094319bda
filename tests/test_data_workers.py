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


def test_every_worker_process_has_a_batch_to_make():
    """prefetch 1 with 3 processes: 3 batches in the making, or two processes would idle."""
    class Pool:
        def __init__(self):
            self.tasks = 0

        def submit(self, fn):
            self.tasks += 1

    for processes, ahead in ((3, 3), (0, 1)):
        reader = _reader(processes, prefetch=1)
        real, reader._pool = reader._pool, Pool()
        try:
            reader._fill()
            assert reader.ahead == ahead and reader._pool.tasks == ahead
        finally:
            reader._pool = real
            reader.close()


def test_only_the_kept_shared_slots_are_page_locked_and_all_are_unlocked(monkeypatch, caplog):
    from netspec.data import reader as reader_mod

    calls = []

    class Cudart:
        def __init__(self, code):
            self.code = code

        def cudaHostRegister(self, ptr, nbytes, flags):
            calls.append(("lock", ptr))
            return self.code

        def cudaHostUnregister(self, ptr):
            calls.append(("unlock", ptr))
            return 0

    monkeypatch.setattr(reader_mod.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(reader_mod.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(reader_mod.torch.cuda, "synchronize", lambda device: calls.append(("sync", device)))
    monkeypatch.setattr(reader_mod.torch.cuda, "cudart", lambda: Cudart(0))
    pool = reader_mod._BufferPool(2, pin_memory=True, shared=True)
    held = [pool.take((4, 4)) for _ in range(3)]       # all held: the third is beyond the pool's 2
    locked = [ptr for what, *ptr in calls if what == "lock"]
    assert len(locked) == 2 and [b.data_ptr() for b, _ in pool.items] == [p[0] for p in locked]
    pool.release()
    unlocked = [c for c in calls if c[0] == "unlock"]
    assert calls[2:4] == [("sync", 0), ("sync", 1)] and unlocked == [("unlock", p[0]) for p in locked]
    assert held[2].data_ptr() not in [p[0] for p in locked]
    monkeypatch.setattr(reader_mod.torch.cuda, "cudart", lambda: Cudart(712))   # already registered
    monkeypatch.setattr(reader_mod, "_warned_register", False)
    failing = reader_mod._BufferPool(2, pin_memory=True, shared=True)
    failing.take((4, 4))
    assert failing.registered == [] and "cudaHostRegister failed (CUDA error 712)" in caplog.text


def test_slots_the_shared_memory_cannot_hold_are_refused_in_one_line(tmp_path):
    import shutil

    import torch

    from netspec.data.workers import check_shared_memory

    free = shutil.disk_usage(tmp_path).free
    check_shared_memory((256, 3, 227, 227), torch.uint8, 8, 14, folder=str(tmp_path))     # 1 GB fits
    rows = free // (3 * 227 * 227) + 1                                                    # one slot too big
    with pytest.raises(NetspecError, match=rf"^NETSPEC_DATA_PROCESSES=14: the batches shared with the "
                                           rf"worker processes need \d+ MB \(1 slots of {rows}x3x227x227 "
                                           rf"torch.uint8\) and {tmp_path} has \d+ MB free; enlarge it"):
        check_shared_memory((rows, 3, 227, 227), torch.uint8, 1, 14, folder=str(tmp_path))
