"""The next batch's host-to-device copy on a side stream, so that it overlaps the current step.

Caffe's DataLayer copies each prefetched batch to the GPU on its own stream in the prefetch thread
(BasePrefetchingDataLayer::InternalThreadEntry); here the copy of batch i+1 is queued on a side
stream when batch i is handed out, and the compute stream waits for that copy's event only when
it needs batch i+1. Batches come from pinned host buffers (the reader pins them on a CUDA layer):
torch's caching host allocator records the copy's event and does not hand a pinned buffer out
again before the copy has read it. The device tensors are allocated on the side stream and
`record_stream`ed on the compute stream, so their memory is not reused while compute reads it.
JPEG records decoded on the device (NETSPEC_DATA_DECODE=device) are decoded on the side stream too.
"""
from __future__ import annotations

import collections
import concurrent.futures

import torch


def to_device(host, device) -> tuple:
    """A host batch on `device`: its tensors copied, or an EncodedBatch (data/device_decode.py)
    decoded there."""
    if hasattr(host, "to_device"):
        return host.to_device(device)
    return tuple(t.to(device, non_blocking=True) for t in host)


class Stager:
    """Batches of `next_batch()` (tuples of pinned CPU tensors) on `device`, one batch in flight."""

    def __init__(self, next_batch, device):
        self.next_batch, self.device = next_batch, torch.device(device)
        self.stream = torch.cuda.Stream(device=self.device)
        self.staged = None   # (device tensors, event, host batch), a Future of it, or the error
        self.in_flight: collections.deque = collections.deque()   # (event, host batch) until copied
        self._decoder = None             # one thread for batches decoded on the device

    @property
    def ahead(self) -> int:
        """Batches taken from the reader but not handed out yet (0 or 1)."""
        return 0 if self.staged is None else 1

    def _copy(self, host):
        with torch.cuda.stream(self.stream):
            on_device = to_device(host, self.device)
            ready = torch.cuda.Event()
            ready.record(self.stream)
        return on_device, ready, host

    def _stage(self):
        try:
            host = self.next_batch()
            if not hasattr(host, "to_device"):
                return self._copy(host)
        except BaseException as e:       # raised when that batch is asked for, as without staging
            return e
        # Decoding may hold the host until the device is done with it (nvJPEG's batched decoder
        # does): in a thread of its own it overlaps this step whether or not it does.
        if self._decoder is None:
            self._decoder = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="netspec-decode")
        return self._decoder.submit(self._decode, host)

    def _decode(self, host):
        # torchvision decodes on a stream of its own into memory the side stream's pool hands out:
        # the side stream's earlier work (the last batch's crops) must be done before that memory is
        # written again. Waited for here, in the decoding thread, not by the step.
        self.stream.synchronize()
        return self._copy(host)

    def next(self) -> tuple:
        staged = self._stage() if self.staged is None else self.staged
        self.staged = None
        if isinstance(staged, concurrent.futures.Future):
            staged = staged.exception() or staged.result()
        if isinstance(staged, BaseException):
            raise staged
        tensors, ready, host = staged
        # A host buffer the reader recycles by reference count (shared-memory slots of worker
        # processes, page-locked with cudaHostRegister) stays referenced until its copy is done.
        while self.in_flight and self.in_flight[0][0].query():
            self.in_flight.popleft()
        self.in_flight.append((ready, host))
        compute = torch.cuda.current_stream(self.device)
        compute.wait_event(ready)
        for t in tensors:
            t.record_stream(compute)
        self.staged = self._stage()      # the next copy runs while this batch is computed on
        return tensors

    def close(self) -> None:
        if self._decoder is not None:
            self._decoder.shutdown(wait=True)
            self._decoder = None
