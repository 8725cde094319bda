"""Snapshots under faults (issue 14): one training per snapshot_prefix (a second one refuses with one
line naming the first one's pid, unless --force), temporary files of a killed run removed on the next
start, and a full disk while snapshotting as one line that leaves the earlier snapshot intact.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from reliability_helpers import one_line, small_fs

from netspec.cli import main
from netspec.errors import NetspecError
from netspec.frontend import load_solver
from netspec.solver.solver import Solver

NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 300 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def write_run(folder: Path, prefix: Path, max_iter: int = 4, snapshot: int = 2) -> Path:
    (folder / "net.prototxt").write_text(NET)
    (folder / "solver.prototxt").write_text(
        f'net: "{folder / "net.prototxt"}" base_lr: 0.01 lr_policy: "fixed" max_iter: {max_iter} '
        f'snapshot: {snapshot} snapshot_prefix: "{prefix}" random_seed: 1 solver_mode: CPU')
    return folder / "solver.prototxt"


def hold_lock(solver_file: Path) -> subprocess.Popen:
    """Another process that holds the prefix's lock until its stdin closes."""
    code = ("import sys; from netspec.frontend import load_solver; "
            "from netspec.solver.snapshot import lock_snapshot_prefix, upgrade_snapshot_prefix; "
            f"sp, path = load_solver({str(solver_file)!r}); upgrade_snapshot_prefix(sp, path); "
            "lock = lock_snapshot_prefix(sp); print('locked', flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def test_a_second_training_on_the_same_prefix_refuses_naming_the_first_pid(tmp_path, capsys):
    solver_file = write_run(tmp_path, tmp_path / "snap")
    first = hold_lock(solver_file)
    try:
        assert main(["train", str(solver_file), "--no-progress"]) == 1
        line = one_line(capsys.readouterr().err)
        assert line.endswith(f"snapshot_prefix '{tmp_path / 'snap'}' is in use by another training "
                             f"(pid {first.pid}); wait for it, choose another snapshot_prefix, or pass --force")
        assert not list(tmp_path.glob("snap_iter_*"))
        assert main(["train", str(solver_file), "--no-progress", "--force"]) == 0
        assert (tmp_path / "snap_iter_4.caffemodel").exists()
    finally:
        first.stdin.close()
        first.wait(30)


def test_the_lock_goes_with_the_run(tmp_path):
    # Two runs one after the other (and two solvers of one process) share the prefix freely; no lock
    # file stays behind.
    sp, path = load_solver(write_run(tmp_path, tmp_path / "snap"))
    for _ in range(2):
        Solver(sp, path, device="cpu").solve()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporary_files_of_a_killed_run_are_removed_on_start(tmp_path):
    sp, path = load_solver(write_run(tmp_path, tmp_path / "snap", max_iter=1, snapshot=0))
    stale = tmp_path / f".snap_iter_2.caffemodel.tmp-{dead_pid()}-0123abcd"
    stale.write_bytes(b"half a file")
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    writing = tmp_path / f".snap_iter_2.solverstate.tmp-{live.pid}-0123abcd"   # a live writer's: kept
    writing.write_bytes(b"being written")
    other = tmp_path / f".other_iter_2.caffemodel.tmp-{dead_pid()}-0123abcd"    # another prefix's: kept
    other.write_bytes(b"not ours")
    try:
        Solver(sp, path, device="cpu").solve()
        assert not stale.exists() and writing.exists() and other.exists()
    finally:
        live.stdin.close()
        live.wait(30)


def test_disk_full_while_snapshotting_keeps_the_earlier_snapshot(tmp_path):
    # 300x3 weights: a caffemodel of ~3.7 KB; 16 KiB hold the first pair, not every later one
    with small_fs(tmp_path / "full", size_kb=12) as full:
        sp, path = load_solver(write_run(tmp_path, full / "snap", max_iter=8, snapshot=1))
        solver = Solver(sp, path, device="cpu")
        with pytest.raises(NetspecError, match=r"full/snap_iter_\d+\.(caffemodel|solverstate): cannot write: "
                                               r"No space left on device"):
            solver.solve()
        written = sorted(p.name for p in full.iterdir())
        assert written and all(not n.startswith(".") or n == ".snap.lock" for n in written)
        first = full / "snap_iter_1.caffemodel"
        assert first.exists() and first.stat().st_size > 3000
