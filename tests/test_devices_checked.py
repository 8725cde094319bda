"""Devices named by a solver, a device map or -gpu are checked against this machine (a one-line
error instead of CUDA's 'invalid device ordinal'), the process group gets a timeout, and rank 0's
requests reach every rank without a per-iteration wait on CUDA (parallel.Agreement)."""
import datetime

import pytest
import torch

from netspec import parallel
from netspec.errors import NetspecError
from netspec.graph import compile_net
from netspec.graph.devices import DeviceMap, check_device
from netspec.parallel import Agreement, Placement, Rank
from google.protobuf import text_format

from netspec.proto import pb

MISSING = torch.cuda.device_count() + 3
NET = """name: "n" layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" device: "gpu1"
  inner_product_param { num_output: 2 } }"""


def test_a_gpu_this_machine_lacks_is_a_one_line_error():
    with pytest.raises(NetspecError, match=rf"device cuda:{MISSING}: this machine has "):
        check_device(f"cuda:{MISSING}")
    assert check_device("cpu") == torch.device("cpu")


def test_a_device_map_naming_a_missing_gpu_names_the_layer():
    net = text_format.Parse(NET, pb.NetParameter())
    with pytest.raises(NetspecError, match=rf"layer 'ip'.*cuda:{MISSING}: this machine has"):
        compile_net(net, pb.TEST, device_map=f"gpu1=cuda:{MISSING}")
    assert DeviceMap(f"gpu1=cuda:{MISSING}").bindings["gpu1"].index == MISSING   # parsing alone is fine


def test_solver_device_id_of_a_missing_gpu(tmp_path):
    from netspec.solver.solver import default_device
    sp = pb.SolverParameter(solver_mode=pb.SolverParameter.GPU, device_id=MISSING)
    if torch.cuda.is_available():
        with pytest.raises(NetspecError, match=rf"device_id: cuda:{MISSING}"):
            default_device(sp)
    else:
        assert default_device(sp) == torch.device("cpu")     # caffe.cpp's CPU fallback, with a warning


def test_process_group_has_a_timeout(monkeypatch):
    seen = {}
    monkeypatch.setattr(parallel.dist, "init_process_group", lambda *a, **k: seen.update(k))
    parallel.init_process_group(Placement(torch.device("cpu"), None, "gloo"), Rank())
    assert seen["timeout"] == datetime.timedelta(seconds=600)
    monkeypatch.setenv("NETSPEC_DIST_TIMEOUT", "42")
    parallel.init_process_group(Placement(torch.device("cpu"), None, "gloo"), Rank())
    assert seen["timeout"] == datetime.timedelta(seconds=42)
    monkeypatch.setenv("NETSPEC_DIST_TIMEOUT", "soon")
    with pytest.raises(NetspecError, match="NETSPEC_DIST_TIMEOUT: expected seconds, found 'soon'"):
        parallel.timeout()


def test_nccl_replica_on_a_missing_gpu_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(parallel.dist, "init_process_group", lambda *a, **k: None)
    placement = Placement(torch.device("cuda", MISSING), None, "nccl", (MISSING,))
    with pytest.raises(NetspecError, match=rf"replica 0's GPU cuda:{MISSING}"):
        parallel.init_process_group(placement, Rank())


def test_agreement_on_the_cpu_is_immediate():
    sent = []
    agree = Agreement("cpu", broadcast=lambda t: sent.append(int(t[0])))
    assert [agree(r) for r in ("none", "snapshot", "stop")] == ["none", "snapshot", "stop"]
    assert sent == [0, 1, 2]


@pytest.mark.cuda
def test_agreement_on_cuda_acts_lag_iterations_later_without_item(monkeypatch):
    agree = Agreement("cuda:0", lag=2, broadcast=lambda t: None)
    calls = []
    real = torch.Tensor.item
    monkeypatch.setattr(torch.Tensor, "item", lambda t: (calls.append(1), real(t))[1])
    got = [agree(r) for r in ("stop", "none", "snapshot", "none", "none")]
    assert got == ["none", "none", "stop", "none", "snapshot"] and not calls
    assert agree("stop", now=True) == "stop"
