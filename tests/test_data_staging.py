"""data/staging.Stager: the next batch's copy is queued on a side stream when a batch is handed out,
the compute stream waits on its event, a failure reading a batch is raised when that batch is asked
for, and the Data layer's saved position does not count the batch copied ahead. The logic is
checked on the CPU with stand-ins for CUDA's streams and events; the real copies under `cuda`."""
import contextlib
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from netspec.data import staging
from netspec.layers.data_layer import DataLayer
from netspec.proto import pb

FIX = Path(__file__).parent / "data" / "caffe"


class _Fake:
    """What the stager touches of a stream, an event and a device tensor, logged."""

    def __init__(self, log, name):
        self.log, self.name = log, name

    def record(self, stream=None):
        self.log.append(("record", self.name))

    def query(self):
        return False

    def wait_event(self, event):
        self.log.append(("wait", event.name))

    def to(self, device, non_blocking=False):
        self.log.append(("copy", self.name, non_blocking))
        return self

    def record_stream(self, stream):
        self.log.append(("record_stream", self.name))


class _Side(str):
    """The side stream: equal to "side", and its synchronize() logged."""

    def __new__(cls, name, log):
        self = super().__new__(cls, name)
        self.log = log
        return self

    def synchronize(self):
        self.log.append(("synchronize", str(self)))


@pytest.fixture
def fake_cuda(monkeypatch):
    log, events = [], iter(range(100))
    monkeypatch.setattr(staging.torch.cuda, "Stream", lambda device: _Side("side", log))
    monkeypatch.setattr(staging.torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(staging.torch.cuda, "Event", lambda: _Fake(log, f"event{next(events)}"))
    monkeypatch.setattr(staging.torch.cuda, "current_stream", lambda device: _Fake(log, "compute"))
    return log


def test_the_next_copy_is_queued_when_a_batch_is_handed_out(fake_cuda):
    batches = iter([(_Fake(fake_cuda, "b0"),), (_Fake(fake_cuda, "b1"),), (_Fake(fake_cuda, "b2"),)])
    stager = staging.Stager(lambda: next(batches), "cuda:0")
    assert stager.ahead == 0
    (got,) = stager.next()
    assert got.name == "b0" and stager.ahead == 1
    assert fake_cuda == [("copy", "b0", True), ("record", "event0"), ("wait", "event0"),
                         ("record_stream", "b0"), ("copy", "b1", True), ("record", "event1")]
    # host batches are kept until copied: b0 among those in flight, b1 with its staged copy
    assert [host[0].name for _, host in stager.in_flight] == ["b0"] and stager.staged[2][0].name == "b1"


def test_a_failed_batch_is_raised_when_it_is_asked_for(fake_cuda):
    def batches():
        yield (_Fake(fake_cuda, "b0"),)
        raise RuntimeError("record 7 is damaged")

    it = batches()
    stager = staging.Stager(lambda: next(it), "cuda:0")
    assert stager.next()[0].name == "b0"          # the failure of batch 1 is not raised here
    with pytest.raises(RuntimeError, match="record 7 is damaged"):
        stager.next()



class _Encoded:
    """A batch that is decoded on the device (device_decode.EncodedBatch): `to_device` does it."""

    def __init__(self, log, name, fails=False):
        self.log, self.name, self.fails = log, name, fails

    def to_device(self, device):
        self.log.append(("decode", self.name, str(device), threading.current_thread().name))
        if self.fails:
            raise RuntimeError(f"{self.name} cannot be decoded")
        return (_Fake(self.log, self.name + " decoded"),)


def test_a_batch_decoded_on_the_device_is_decoded_on_the_side_stream_in_a_thread(fake_cuda, monkeypatch):
    streams = []
    monkeypatch.setattr(staging.torch.cuda, "stream", lambda s: streams.append(s) or contextlib.nullcontext())
    batches = iter([_Encoded(fake_cuda, "b0"), _Encoded(fake_cuda, "b1", fails=True)])
    stager = staging.Stager(lambda: next(batches), "cuda:0")
    (got,) = stager.next()
    assert got.name == "b0 decoded"
    assert fake_cuda[:4] == [("synchronize", "side"), ("decode", "b0", "cuda:0", "netspec-decode_0"),
                             ("record", "event0"), ("wait", "event0")]
    stager.staged.exception()        # b1's decoding, running beside the step, has ended
    assert streams == ["side", "side"] and fake_cuda[-1] == ("decode", "b1", "cuda:0", "netspec-decode_0")
    with pytest.raises(RuntimeError, match="b1 cannot be decoded"):    # raised at its own turn
        stager.next()
    stager.close()


def _layer(device):
    net = text_format.Parse((FIX / "data_net.prototxt").read_text(), pb.NetParameter())
    lp = next(lp for lp in net.layer if lp.include[0].phase == pb.TEST)
    return DataLayer(lp, [], pb.TEST, source_dir=FIX).to(device)


@pytest.mark.cuda
def test_cuda_batches_equal_cpu_batches_and_come_from_the_side_stream():
    cpu, gpu = _layer("cpu"), _layer("cuda")
    for _ in range(4):
        a, b = cpu(), gpu()
        assert b[0].is_cuda and np.array_equal(a[0].numpy(), b[0].cpu().numpy())
        assert np.array_equal(a[1].numpy(), b[1].cpu().numpy())
    assert gpu._stager.ahead == 1 and gpu._stager.stream != torch.cuda.current_stream()
    assert gpu.data_state("test").extra == cpu.data_state("test").extra   # the staged batch not counted


@pytest.mark.cuda
def test_a_data_layer_step_does_not_synchronise():
    gpu = _layer("cuda")
    gpu()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            data, label = gpu()
            (data.mean() + label.mean()).neg_()
    finally:
        torch.cuda.set_sync_debug_mode("default")
