"""Batches of a Data layer with background prefetch: Caffe's DataLayer::load_batch and its prefetch queue.

Record order is Caffe 1.0's: one cursor walks the LMDB in key order and wraps to the first record
after the last (DataLayer::Next). With several processes (torch.distributed, TRAIN only) every rank
keeps the records whose running offset satisfies `offset % world_size == rank` (DataLayer::Skip), so
rank r reads records r, r+W, r+2W, ... and the shares are disjoint; in TEST every rank reads all, as
Caffe runs the test net on one solver. `rand_skip` skips a random number (< rand_skip) of records first.

Batches are assembled by a pool of threads, `prefetch` batches ahead (with worker processes, at
least one per process; OpenCV decoding and numpy's array arithmetic release the GIL). Records are
assigned to batches in order under one lock and each batch draws its random crops/mirrors from its
own generator seeded with (seed, rank, batch index), so the output does not depend on thread timing.

Batch buffers are recycled: a fresh 80 MB tensor per AlexNet batch costs its page faults every time,
which can take longer than the transforms. A buffer is reused only when no tensor outside the pool
shares its storage any more, so batches a caller keeps are never overwritten. Pinned buffers (CUDA)
come from torch's caching host allocator instead, which also waits for asynchronous copies.
"""
from __future__ import annotations

import logging
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..proto import pb
from ..threads import data_workers
from . import db as dbmod
from .datum import parse
from .device_decode import encoded_batch
from .transform import DataTransformer
from .workers import ProcessAssembler, requested_processes

log = logging.getLogger(__name__)

# The storage's reference count (torch-internal; without it every batch gets a fresh buffer).
_storage_refs = getattr(torch._C, "_storage_Use_Count", None)


def peek(source) -> tuple[str, pb.Datum]:
    """The first record of an LMDB (DataLayerSetUp reads it to shape the top blobs)."""
    cur = dbmod.Cursor(source)
    try:
        key, value = cur.read()
    finally:
        cur.close()
    return key, parse(value, key, str(source))


class _BufferPool:
    """Reusable batch buffers (float32, or uint8 crops); `take` hands out a view, counted while anyone
    holds it."""

    def __init__(self, cap: int, pin_memory: bool, shared: bool = False):
        self.cap, self.pin_memory, self.shared = cap, pin_memory, shared
        self.items: list[tuple[torch.Tensor, int]] = []  # (buffer, its reference count when free)
        self.registered: list[torch.Tensor] = []          # page-locked by us, unlocked in release()
        self.lock = threading.Lock()

    @staticmethod
    def _refs(t: torch.Tensor) -> int:
        return _storage_refs(t.untyped_storage()._cdata)

    def take(self, shape, dtype=torch.float32) -> torch.Tensor:
        if (self.pin_memory and not self.shared) or _storage_refs is None:
            return torch.empty(shape, dtype=dtype, pin_memory=self.pin_memory)
        with self.lock:
            for buf, free in self.items:
                if buf.shape == shape and buf.dtype == dtype and self._refs(buf) == free:
                    return buf.detach()
            buf = torch.empty(shape, dtype=dtype)
            if self.shared:      # worker processes write batches into it (data/workers.py)
                buf.share_memory_()
            if len(self.items) < self.cap:
                # Only the slots kept for reuse are page-locked: one used once (more batches held
                # than the pool keeps) stays pageable, its copy synchronous, and nothing stays locked.
                if self.shared and self.pin_memory and _register_pinned(buf):
                    self.registered.append(buf)
                self.items.append((buf, self._refs(buf)))
            return buf.detach()

    def release(self) -> None:
        """Unlock the slots page-locked for copies, once no copy can still be reading them."""
        if self.registered:
            for device in range(torch.cuda.device_count()):   # whichever GPU a copy went to
                torch.cuda.synchronize(device)
            for buf in self.registered:
                torch.cuda.cudart().cudaHostUnregister(buf.data_ptr())
            self.registered.clear()


class BatchReader:
    """Yields (data float32 NxCxHxW, label float32 N) torch tensors, prefetched in background threads.

    With `uint8` (records of uint8 pixels) the host only crops and mirrors: it yields (data uint8
    NxCxHxW, label, params int32 Nx3 of (h_off, w_off, mirror), colour shift float32 Nx3), which
    transform.Normaliser turns into the float batch on the device.

    With `decode_on_device` (JPEG records, NETSPEC_DATA_DECODE=device) it yields
    device_decode.EncodedBatch: the records' bytes and the same draws, decoded and cropped by the
    Data layer on its device; the host's work per record is then small enough for threads."""

    def __init__(self, source, batch_size: int, transformer: DataTransformer, *, phase=pb.TRAIN, rand_skip=0,
                 prefetch=4, workers=None, rank=0, world_size=1, seed=0, pin_memory=False, start=0,
                 processes=None, uint8=False, decode_on_device=False):
        self.source, self.batch_size, self.transformer = str(source), int(batch_size), transformer
        self.cursor = dbmod.Cursor(source)
        self.shard = world_size > 1 and phase == pb.TRAIN
        self.rank, self.world_size, self.seed, self.pin_memory = rank, world_size, seed, pin_memory
        self.uint8 = bool(uint8) or bool(decode_on_device)
        self.decode_on_device = bool(decode_on_device)
        self.prefetch = max(1, int(prefetch))
        self.offset = 0
        self._to_skip = int(np.random.default_rng([seed, 1 << 20]).integers(rand_skip)) if rand_skip else 0
        self._lock, self._done = threading.Lock(), threading.Condition()
        self._results: dict[int, object] = {}
        self._next_read = self._next_out = self._submitted = 0
        self._rand_skip = self._to_skip
        if start:
            self._resume_at(int(start))
        processes = 0 if decode_on_device else requested_processes(processes)
        # Batches in the making at once: `prefetch`, or one per worker process, so that none idles.
        self.ahead = max(self.prefetch, processes)
        self._buffers = _BufferPool(self.ahead + 4, pin_memory, shared=processes > 0)
        self._assembler = ProcessAssembler(self.source, transformer, self.batch_size, seed, rank, processes,
                                           self._buffers, self._first_shape, self.uint8) \
            if processes else None
        workers = processes or data_workers(workers, self.prefetch)   # with processes: one thread each
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="netspec-data")
        self._finalizer = weakref.finalize(self, _shutdown, self._pool, self.cursor, self._assembler,
                                           self._buffers)

    # ---- exact resume ----------------------------------------------------------------------------
    def _offset_after(self, batches: int) -> int:
        """The running offset once `batches` batches are read: each record of this rank's share
        advances it by one, plus the other ranks' records skipped before it (DataLayer::Skip)."""
        n = batches * self.batch_size
        return (n - 1) * self.world_size + self.rank + 1 if self.shard and n else n

    def position_after(self, batches: int) -> int:
        """Where the cursor stands (record index, wrapped) once `batches` batches are read."""
        return (self._rand_skip + self._offset_after(batches)) % self.cursor.entries

    @property
    def batches_read(self) -> int:
        """Batches handed out by `next` (prefetched ones not counted): the state a snapshot keeps."""
        return self._next_out

    def _resume_at(self, batches: int) -> None:
        """Continue as if `batches` batches had been read: their index seeds the next batches'
        crops and mirrors, and the cursor starts where they left it."""
        self._next_read = self._next_out = self._submitted = batches
        self.offset = self._offset_after(batches)
        self._to_skip = self.position_after(batches)

    # ---- records (serial, under the lock) ---------------------------------------------------------
    def _next_record(self) -> tuple[str, bytes]:
        if self._to_skip:
            self.cursor.skip(self._to_skip)
            self._to_skip = 0
        if self.shard:   # the other ranks' records before this rank's next one, in one cursor move
            gap = (self.rank - self.offset) % self.world_size
            self.cursor.skip(gap)
            self.offset += gap
        self.offset += 1
        if self._assembler is not None:     # the worker reads the value from its own mapping
            return self.cursor.read_key(), None
        return self.cursor.read()

    def _first_shape(self, record) -> tuple:
        """(C, H, W) of the batches, from a batch's first record (process workers)."""
        key, value = record
        if value is None:
            with self.cursor.env.begin(buffers=False) as txn:
                value = txn.get(key.encode("utf-8"))
        image = self.transformer.array(parse(value, key, self.source), key)
        return self.transformer.output_shape(image.shape, key)

    def _claim(self) -> tuple[int, list]:
        with self._lock:
            index = self._next_read
            self._next_read += 1
            try:
                return index, [self._next_record() for _ in range(self.batch_size)]
            except BaseException as e:
                return index, e

    # ---- one batch (in a worker thread) -----------------------------------------------------------
    def _assemble(self, index: int, records: list) -> tuple[torch.Tensor, torch.Tensor]:
        if self._assembler is not None:
            return self._assembler(index, records)
        t = self.transformer
        rng = np.random.default_rng([self.seed, self.rank, index])
        if self.decode_on_device:
            return encoded_batch(records, t, rng, self.batch_size, self.pin_memory, self.source)
        batch = data_np = None
        for i, (key, value) in enumerate(records):
            datum = parse(value, key, self.source)
            image = t.array(datum, key)
            if batch is None:  # the first record of each batch shapes it, as Caffe's load_batch
                batch = self._new_batch((self.batch_size,) + t.output_shape(image.shape, key))
                data_np, label_np = batch[0].numpy(), batch[1].numpy()
                params, shift = (batch[2].numpy(), batch[3].numpy()) if self.uint8 else (None, None)
            t.into_batch(i, image, rng, data_np, params, shift, key=key)
            label_np[i] = datum.label
        return batch

    def _new_batch(self, shape) -> tuple:
        """(data, label[, params, shift]) to fill: the data from the pool, the small ones pinned."""
        n, pin = self.batch_size, self.pin_memory
        label = torch.empty(n, dtype=torch.float32, pin_memory=pin)
        if not self.uint8:
            return self._buffers.take(shape), label
        params = torch.empty((n, 3), dtype=torch.int32, pin_memory=pin)
        shift = torch.zeros((n, 3), dtype=torch.float32, pin_memory=pin)
        return self._buffers.take(shape, torch.uint8), label, params, shift

    def _task(self) -> None:
        index, result = self._claim()
        if not isinstance(result, BaseException):
            try:
                result = self._assemble(index, result)
            except BaseException as e:
                result = e
        with self._done:
            self._results[index] = result
            self._done.notify_all()

    # ---- the consumer -----------------------------------------------------------------------------
    def _fill(self) -> None:
        while self._submitted < self._next_out + self.ahead:
            self._pool.submit(self._task)
            self._submitted += 1

    def next(self) -> tuple:
        """The next batch (data, label[, params, shift]); a failure while preparing it is raised here."""
        self._fill()
        with self._done:
            while self._next_out not in self._results:
                self._done.wait()
            result = self._results.pop(self._next_out)
        self._next_out += 1
        self._fill()
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        self._finalizer()


def _shutdown(pool: ThreadPoolExecutor, cursor: dbmod.Cursor, assembler=None, buffers=None) -> None:
    pool.shutdown(wait=True, cancel_futures=True)
    if assembler is not None:
        assembler.close()
    if buffers is not None:
        buffers.release()
    cursor.close()


_warned_register = False


def _register_pinned(buf: torch.Tensor) -> bool:
    """Page-lock a shared-memory buffer for asynchronous copies to the GPU (cudaHostRegister); False
    where that fails (the buffer then stays pageable: copies from it are synchronous, still right)."""
    global _warned_register
    if not torch.cuda.is_available():
        return False
    nbytes = buf.untyped_storage().nbytes()
    code = torch.cuda.cudart().cudaHostRegister(buf.data_ptr(), nbytes, 0)
    code = int(getattr(code, "value", code))
    if code != 0 and not _warned_register:
        _warned_register = True
        log.warning("cudaHostRegister failed (CUDA error %d) for a %d MB batch slot shared with the worker "
                    "processes: its copies to the GPU are synchronous", code, nbytes >> 20)
    return code == 0
