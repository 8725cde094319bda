"""Data-layer batches assembled in worker processes, for feeding a fast GPU.

The reader's threads (data/reader.py) overlap OpenCV decoding and numpy's arithmetic, which release
the GIL, but parsing each Datum, drawing its crop and mirror and dispatching the per-image numpy
calls is Python, one core's worth at most. With `processes` > 0 (NETSPEC_DATA_PROCESSES=N, or
BatchReader(processes=N)) each batch is assembled in one of N worker processes instead:

- the reader's cursor still walks the LMDB in Caffe's order (sharding and rand_skip unchanged) but
  takes only the keys; the worker reads the values from its own read-only mapping of the LMDB,
  so no record crosses a pipe;
- the worker writes the float32 batch straight into a shared-memory slot that the main process
  handed it and hands back the labels; slots are recycled once nobody holds their batch (as the
  reader's own buffers), so no batch pays for fresh pages;
- in uint8 mode the slots are uint8 and the worker only crops and mirrors, handing back each
  image's (h_off, w_off, mirror) and colour shift with the labels;
- the crops and mirrors are drawn from the same per-batch generator (seed, rank, batch index) as in
  the threads, so the batches are identical whichever way they are made.

Workers are started with 'spawn' (a forked copy of a process holding CUDA or OpenMP state is not
safe) once per reader, and import netspec, numpy and OpenCV: about a second each.

uint8 mode (NETSPEC_DATA_UINT8=0|1, BatchReader(uint8=...)): for records of uint8 pixels (raw Datum
bytes, or JPEG/PNG decoded by OpenCV) the host only crops and mirrors, and the Data layer does the
float32 arithmetic (colour shift, mean, scale) on its device, bit-identical to the host's: 1 byte per
pixel written and copied instead of 4. On by default for a Data layer on CUDA, off on the CPU (there
it would move the arithmetic from these workers onto the compute threads); the variable overrides
either way. Records of float_data always take the float path.
"""
from __future__ import annotations

import os
import shutil
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from ..errors import NetspecError
from .datum import parse
from .transform import DataTransformer

PROCESSES_ENV = "NETSPEC_DATA_PROCESSES"
UINT8_ENV = "NETSPEC_DATA_UINT8"

_WORKER: dict = {}   # in a worker process: its transformer and its LMDB transaction


def requested_processes(explicit: int | None = None) -> int:
    """Worker processes asked for: `explicit`, else NETSPEC_DATA_PROCESSES, else 0 (threads)."""
    if explicit is not None:
        return max(0, int(explicit))
    text = os.environ.get(PROCESSES_ENV, "0") or "0"
    try:
        n = int(text)
    except ValueError:
        raise NetspecError(f"{PROCESSES_ENV}: expected a number of worker processes, found {text!r}") from None
    if n < 0:
        raise NetspecError(f"{PROCESSES_ENV}: expected 0 or more worker processes, found {n}")
    return n


def requested_uint8(default: bool) -> bool:
    """Whether uint8 records are sent as uint8 crops: NETSPEC_DATA_UINT8 (0 or 1), else `default`."""
    text = os.environ.get(UINT8_ENV, "")
    if text == "":
        return default
    if text not in ("0", "1"):
        raise NetspecError(f"{UINT8_ENV}: expected 0 or 1, found {text!r}")
    return text == "1"


SHM = "/dev/shm"


def check_shared_memory(shape, dtype, slots: int, processes: int, folder: str = SHM) -> None:
    """Refuse, in one line, batch slots that the shared-memory file system cannot hold: a container's
    /dev/shm is 64 MB unless enlarged, and a worker writing past what it holds dies of SIGBUS."""
    if not os.path.isdir(folder):
        return
    need = slots * int(np.prod(shape)) * dtype.itemsize
    free = shutil.disk_usage(folder).free
    if need > free:
        raise NetspecError(f"{PROCESSES_ENV}={processes}: the batches shared with the worker processes need "
                           f"{need >> 20} MB ({slots} slots of {'x'.join(map(str, shape))} {dtype}) and "
                           f"{folder} has {free >> 20} MB free; enlarge it (docker run --shm-size) or set "
                           f"{PROCESSES_ENV}=0 for threads")


def host_tensor(values: np.ndarray, pin: bool) -> torch.Tensor:
    """A small array handed back by a worker as a (pinned, for an asynchronous copy) tensor."""
    t = torch.from_numpy(values)
    return t.pin_memory() if pin else t


def _init_worker(source: str, transformer: DataTransformer) -> None:
    import lmdb

    torch.set_num_threads(1)          # the parent computes; a worker's numpy/OpenCV use one core
    env = lmdb.open(source, readonly=True, lock=False, readahead=False, subdir=os.path.isdir(source))
    _WORKER.update(transformer=transformer, env=env, source=source)


def _assemble_in_worker(keys: list[str], out: torch.Tensor, seed: int, rank: int, index: int) -> tuple:
    """Transform the records of `keys` into `out` (shared memory; uint8 crops if it is uint8); the
    labels, and for uint8 crops each image's (h_off, w_off, mirror) and colour shift."""
    t, source = _WORKER["transformer"], _WORKER["source"]
    # Keeping the slots alive keeps their mapping in torch's receive cache: a slot sent again is not
    # mapped (and page-faulted) afresh for every batch.
    kept = _WORKER.setdefault("slots", {})
    kept.setdefault(out.data_ptr(), out)
    if len(kept) > 64:
        kept.pop(next(iter(kept)))
    rng = np.random.default_rng([seed, rank, index])
    out_np, n = out.numpy(), len(keys)
    labels = np.empty(n, np.float32)
    params, shift = (np.empty((n, 3), np.int32), np.zeros((n, 3), np.float32)) \
        if out_np.dtype == np.uint8 else (None, None)
    with _WORKER["env"].begin(buffers=False) as txn:
        for i, key in enumerate(keys):
            value = txn.get(key.encode("utf-8"))
            if value is None:
                raise NetspecError(f"'{source}': record '{key}' disappeared while reading")
            datum = parse(value, key, source)
            t.into_batch(i, t.array(datum, key), rng, out_np, params, shift, key=key)
            labels[i] = datum.label
    return labels, params, shift


class ProcessAssembler:
    """BatchReader's `_assemble` done by worker processes: (index, records) -> (data, label), or
    (data, label, params, shift) of uint8 crops."""

    def __init__(self, source: str, transformer: DataTransformer, batch_size: int, seed: int, rank: int,
                 processes: int, slots, shape_of, uint8: bool = False):
        self.source, self.batch_size, self.seed, self.rank = source, batch_size, seed, rank
        self.slots, self.shape_of, self.uint8, self.processes = slots, shape_of, uint8, processes
        ctx = torch.multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(processes, mp_context=ctx, initializer=_init_worker,
                                        initargs=(source, transformer))
        self.shape = None

    def __call__(self, index: int, records: list) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shape is None:        # the first batch's first record shapes every batch
            shape = (self.batch_size,) + self.shape_of(records[0])
            check_shared_memory(shape, torch.uint8 if self.uint8 else torch.float32, self.slots.cap,
                                self.processes)
            self.shape = shape
        data = self.slots.take(self.shape, torch.uint8 if self.uint8 else torch.float32)
        keys = [key for key, _ in records]
        labels, params, shift = self.pool.submit(_assemble_in_worker, keys, data, self.seed, self.rank,
                                                 index).result()
        pin = self.slots.pin_memory
        if not self.uint8:
            return data, host_tensor(labels, pin)
        return data, host_tensor(labels, pin), host_tensor(params, pin), host_tensor(shift, pin)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
