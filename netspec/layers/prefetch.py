"""Data layers that prepare batches ahead on a small thread pool (ImageData, WindowData): the pool,
the layer base that serves its batches and takes part in exact resume, and the lookup of the files
such layers name (from the current directory as Caffe, else from the prototxt's folder).
"""
from __future__ import annotations

import json
import os
import struct
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..proto import pb
from .base import Layer


def find_file(layer: Layer, name: str, what: str, extra_dirs=()) -> Path:
    """`name` from the current directory (Caffe), else from the prototxt's folder or `extra_dirs`;
    a one-line error naming the places looked in."""
    p = Path(name)
    tried = [p] + ([] if p.is_absolute() else [Path(d) / p for d in (layer.source_dir, *extra_dirs) if d])
    for q in tried:
        if q.is_file():
            return q.absolute()   # read later, maybe after a chdir
    raise layer.error(f"{what} '{name}' does not exist (looked in "
                      + ", ".join(f"'{q.parent}'" if str(q.parent) != "." else "the current directory"
                                  for q in tried) + ")")



def seeded_state(layer, net: str, position: int, seed: int, batches: int) -> pb.DataLayerState:
    """A layer's place for exact resume: `position`, the seed of its draws and the batches it served."""
    return pb.DataLayerState(net=net, layer=layer.name, position=position, rng_state=struct.pack("<Q", seed),
                             extra=json.dumps({"batches": batches}).encode())


def read_seeded_state(layer, state: pb.DataLayerState) -> tuple[int, int]:
    """(seed, batches served) of a seeded_state; a damaged one is a one-line error naming the layer."""
    try:
        return struct.unpack("<Q", state.rng_state)[0], int(json.loads(state.extra.decode())["batches"])
    except (ValueError, KeyError, TypeError, struct.error):
        raise layer.error("the solver state's data_state for this layer is damaged") from None

class Prefetcher:
    """Runs batch jobs `depth` ahead on a thread pool. `make_job(k)` is called in order on the
    caller's thread (so cursors and shuffles advance deterministically) and returns the function
    that builds batch k on a worker."""

    def __init__(self, make_job, start: int = 0, depth: int = 4, workers: int | None = None):
        self.make_job, self.depth, self.k = make_job, max(1, depth), start
        self.pool = ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1), thread_name_prefix="netspec-data")
        self.queue: deque = deque()

    def next(self):
        while len(self.queue) < self.depth:
            self.queue.append(self.pool.submit(self.make_job(self.k)))
            self.k += 1
        return self.queue.popleft().result()

    def close(self) -> None:
        for f in self.queue:
            f.cancel()
        self.queue.clear()
        self.pool.shutdown(wait=True, cancel_futures=True)


class PrefetchSource(Layer):
    """A data layer whose batches come from a Prefetcher started on first forward; subclasses define
    `make_job(k)` (see Prefetcher) returning (data float32 array, labels float32 array), and
    `rewind(batches)`, which puts their cursor where it stands after `batches` batches were taken.

    For exact resume (netspec.solver.resume) the layer reports the batches it has served and its seed
    in a DataLayerState; restoring rewinds to that batch, so the resumed run reads what the
    uninterrupted one would have, with the same random draws."""

    exact_bottoms, exact_tops = 0, 2
    is_data = True

    def __init__(self, lp, bottom_shapes=(), phase=pb.TRAIN, source_dir=None):
        self.seed = (torch.initial_seed() + zlib.crc32(lp.name.encode())) % (1 << 63)
        # Caffe opens relative names from the current directory; netspec's workers read later, from
        # threads, so the directory of setup is kept (a later chdir does not move the data).
        self.cwd = os.getcwd()
        super().__init__(lp, list(bottom_shapes), phase, source_dir=source_dir)
        self._reader = None
        self.served = 0   # batches forward has returned
        self._marks: dict = {}   # batch index -> the cursor before its job was made

    def find(self, name: str, what: str, extra_dirs=()) -> Path:
        return find_file(self, name, what, extra_dirs)

    def at_setup_cwd(self, path: str) -> str:
        """`path` as opened from the directory the layer was set up in."""
        return path if os.path.isabs(path) else os.path.join(self.cwd, path)

    def forward(self):
        if self._reader is None:
            self._reader = Prefetcher(self._job, start=self.served)
        data, label = self._reader.next()
        self._marks.pop(self.served, None)
        self.served += 1
        device = self._anchor.device
        return torch.from_numpy(data).to(device), torch.from_numpy(label).to(device)

    def _job(self, k: int):
        self._marks[k] = self.cursor()
        return self.make_job(k)

    def cursor(self):
        """What make_job advances; by default nothing (each batch's draws depend on (seed, k) alone)."""

    def set_cursor(self, cursor) -> None:
        """Put back what `cursor()` returned."""

    def data_state(self, net: str) -> pb.DataLayerState:
        """Batches served (`position` and `extra`) and the seed of this layer's draws (`rng_state`)."""
        return seeded_state(self, net, self.served, self.seed, self.served)

    def restore_data_state(self, state: pb.DataLayerState, rank: int = 0) -> None:
        seed, batches = read_seeded_state(self, state)
        self.close()
        if rank == 0:   # the state is rank 0's; another replica keeps its own draws, as the Data layer
            self.seed = seed
        self.served = batches
        self.rewind(batches)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
            if self.served in self._marks:   # prefetched batches were not served: take them again
                self.set_cursor(self._marks[self.served])
            self._marks.clear()

    def __getstate__(self):
        state = dict(super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__)
        state["_reader"] = None  # threads do not copy; a copy starts its own
        return state
