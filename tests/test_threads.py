"""netspec/threads.py: the compute-thread choice (--threads, then OMP_NUM_THREADS, then the usable cores:
affinity capped by the cgroup quota) and the Data layer's share of the cores."""
import os

import pytest

from netspec import threads
from netspec.errors import NetspecError


def _cgroup(tmp_path, cpu_max: str):
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    return tmp_path


def test_flag_wins_over_the_environment(tmp_path):
    assert threads.choose(3, {"OMP_NUM_THREADS": "1"}, tmp_path) == (3, "--threads")


def test_omp_num_threads_wins_over_the_cores(tmp_path):
    assert threads.choose(None, {"OMP_NUM_THREADS": "5"}, tmp_path) == (5, "OMP_NUM_THREADS")


def test_without_either_the_affinity_mask_counts(tmp_path):
    n = len(os.sched_getaffinity(0))
    assert threads.choose(None, {}, tmp_path, load=0.0)[0] == n


def test_busy_cores_are_left_out():
    assert threads.idle_cores(2, load=0.4, cpus=2) == 2      # 1.6 idle -> 2
    assert threads.idle_cores(2, load=1.0, cpus=2) == 1      # one core busy
    assert threads.idle_cores(2, load=9.0, cpus=2) == 1      # never fewer than one
    assert threads.idle_cores(4, load=32.0, cpus=64) == 2    # host load scaled to this share
    assert threads.idle_cores(8, load=0.0, cpus=8) == 8


def test_cgroup_quota_caps_the_cores(tmp_path):
    root = _cgroup(tmp_path, "150000 100000")   # 1.5 CPUs -> 2 threads at most
    assert threads.cgroup_quota(root) == 1.5
    assert threads.usable_cores(root) == min(2, len(os.sched_getaffinity(0)))
    assert threads.cgroup_quota(_cgroup(tmp_path, "max 100000")) is None


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_quota(tmp_path) == 0.5 and threads.usable_cores(tmp_path) == 1


def test_affinity_is_honoured(tmp_path):
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no affinity API")
    saved = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(saved)})
        assert threads.choose(None, {}, tmp_path, load=0.0) == (1, "1 usable core")
    finally:
        os.sched_setaffinity(0, saved)


@pytest.mark.parametrize("bad", ["0", "two"])
def test_bad_values_are_one_line_errors(bad, tmp_path):
    with pytest.raises(NetspecError, match="OMP_NUM_THREADS|--threads"):
        if bad == "0":
            threads.choose(0, {}, tmp_path)
        else:
            threads.choose(None, {"OMP_NUM_THREADS": bad}, tmp_path)


def test_configure_sets_torch_and_logs(monkeypatch, caplog):
    import torch

    saved = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(threads, "_chosen", None)
    try:
        with caplog.at_level("INFO", logger="netspec.threads"):
            assert threads.configure(2) == 2
        assert torch.get_num_threads() == 2 and os.environ["OMP_NUM_THREADS"] == "2"
        assert "Using 2 compute threads (--threads)" in caplog.text
    finally:
        torch.set_num_threads(saved)


def test_data_workers_use_the_cores_left_over(monkeypatch):
    monkeypatch.setattr(threads, "usable_cores", lambda root=None: 4)
    monkeypatch.setattr(threads, "_chosen", 3)
    assert threads.data_workers(None, prefetch=4) == 1       # 4 cores - 3 compute threads
    monkeypatch.setattr(threads, "_chosen", 1)
    assert threads.data_workers(None, prefetch=2) == 2       # capped by prefetch
    monkeypatch.setattr(threads, "_chosen", 4)
    assert threads.data_workers(None, prefetch=4) == 1       # never zero
    assert threads.data_workers(6, prefetch=4) == 6          # as asked


def test_cli_flag_reaches_torch_and_the_log(monkeypatch, caplog, capsys, tmp_path):
    import torch

    from netspec.cli import main

    saved = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setattr(threads, "_chosen", None)
    net = tmp_path / "n.prototxt"
    net.write_text('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n')
    try:
        with caplog.at_level("INFO", logger="netspec.threads"):
            assert main(["shapes", str(net), "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1 and "Using 1 compute thread (--threads)" in caplog.text
    finally:
        torch.set_num_threads(saved)
