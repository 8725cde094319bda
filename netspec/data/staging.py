"""The next batch's host-to-device copy on a side stream, so that it overlaps the current step.

Caffe's DataLayer copies each prefetched batch to the GPU on its own stream in the prefetch thread
(BasePrefetchingDataLayer::InternalThreadEntry); here the copy of batch i+1 is queued on a side
stream when batch i is handed out, and the compute stream waits for that copy's event only when
it needs batch i+1. Batches come from pinned host buffers (the reader pins them on a CUDA layer):
torch's caching host allocator records the copy's event and does not hand a pinned buffer out
again before the copy has read it. The device tensors are allocated on the side stream and
`record_stream`ed on the compute stream, so their memory is not reused while compute reads it.
"""
from __future__ import annotations

import collections

import torch


class Stager:
    """Batches of `next_batch()` (tuples of pinned CPU tensors) on `device`, one batch in flight."""

    def __init__(self, next_batch, device):
        self.next_batch, self.device = next_batch, torch.device(device)
        self.stream = torch.cuda.Stream(device=self.device)
        self.staged = None               # (device tensors, event), or the error preparing them
        self.in_flight: collections.deque = collections.deque()   # (event, host batch) until copied

    @property
    def ahead(self) -> int:
        """Batches taken from the reader but not handed out yet (0 or 1)."""
        return 0 if self.staged is None else 1

    def _stage(self):
        try:
            host = self.next_batch()
        except BaseException as e:       # raised when that batch is asked for, as without staging
            return e
        with torch.cuda.stream(self.stream):
            on_device = tuple(t.to(self.device, non_blocking=True) for t in host)
            ready = torch.cuda.Event()
            ready.record(self.stream)
        # A host buffer the reader recycles by reference count (shared-memory slots of worker
        # processes, page-locked with cudaHostRegister) stays referenced until its copy is done.
        while self.in_flight and self.in_flight[0][0].query():
            self.in_flight.popleft()
        self.in_flight.append((ready, host))
        return on_device, ready

    def next(self) -> tuple:
        staged = self._stage() if self.staged is None else self.staged
        self.staged = None
        if isinstance(staged, BaseException):
            raise staged
        tensors, ready = staged
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(ready)
        for t in tensors:
            t.record_stream(compute)
        self.staged = self._stage()      # the next copy runs while this batch is computed on
        return tensors
