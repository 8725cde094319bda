"""`netspec demo` (netspec/demo.py, netspec/cli/cmd_demo.py): one small end-to-end run checked for every
artefact and a test accuracy above chance, a rerun that reuses the data, and the pieces on their own
(prototxt rewriting, the TEST batch, the data stamp, the device flag)."""
from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from netspec import demo
from netspec.cli import main
from netspec.data import db as dbmod
from netspec.data.datum import parse, to_array
from netspec.data.mean import load_mean
from netspec.errors import NetspecError
from netspec.frontend import read_text_file
from netspec.formats import read_solverstate
from netspec.proto import pb
from netspec.solver.log import parse_log

CLASSES, PER_CLASS, VAL_PER_CLASS, ITERATIONS = 6, 30, 10, 200
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


STDERR: dict[str, str] = {}


def run_cli(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    STDERR[" ".join(argv)] = err.getvalue()
    return rc, out.getvalue()


def demo_argv(work: Path, iterations: int) -> list[str]:
    return ["demo", "--workdir", str(work), "--iterations", str(iterations), "--classes", str(CLASSES),
            "--per-class", str(PER_CLASS), "--val-per-class", str(VAL_PER_CLASS), "--gpu", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo") / "netspec_demo"
    rc, out = run_cli(demo_argv(work, ITERATIONS))
    assert rc == 0, out
    return work, out


def first_record_shape(db_path: Path) -> tuple:
    key, value = next(dbmod.iter_records(db_path))
    return to_array(parse(value, key, db_path), key=key).shape


@pytest.mark.slow
def test_the_training_log_goes_to_its_file_only(demo_run):
    work, out = demo_run
    err = STDERR[" ".join(demo_argv(work, ITERATIONS))]
    log = (work / "train.log").read_text()
    assert re.search(r"Iteration 0 .*, loss = ", log) and "Iteration" not in err and "Iteration" not in out
    assert "\r" not in err and all(line[0] in "IWEF" for line in err.splitlines()), err


@pytest.mark.slow
def test_demo_writes_data_snapshot_log_and_curves(demo_run):
    work, _ = demo_run
    data = work / "toy_imagenet"
    assert dbmod.count(data / "train_lmdb") == CLASSES * PER_CLASS
    assert dbmod.count(data / "val_lmdb") == CLASSES * VAL_PER_CLASS
    assert first_record_shape(data / "train_lmdb") == (3, demo.RECORD_SIZE, demo.RECORD_SIZE)
    assert load_mean(data / "mean.binaryproto").shape == (3, demo.RECORD_SIZE, demo.RECORD_SIZE)
    state = read_solverstate(work / f"toy_caffenet_iter_{ITERATIONS}.solverstate")
    assert state.iter == ITERATIONS
    assert Path(state.learned_net) == work / f"toy_caffenet_iter_{ITERATIONS}.caffemodel"
    assert Path(state.learned_net).stat().st_size > 0
    log = parse_log(work / "train.log")
    assert log.loss and log.loss[-1][0] == ITERATIONS, log.loss[-3:]
    assert log.test_series(0, "accuracy")[0][-1] == ITERATIONS
    png = (work / "curves.png").read_bytes()
    assert png[:8] == PNG_SIGNATURE and len(png) > 10_000, f"{len(png)} bytes starting {png[:8]!r}"


@pytest.mark.slow
def test_demo_accuracy_is_well_above_chance(demo_run):
    _, out = demo_run
    top1 = re.search(r"top-1 accuracy = ([0-9.]+)", out)
    assert top1, out
    assert float(top1.group(1)) > 2 / CLASSES, out
    assert re.search(r"top-1 error = [0-9.e-]+ \(accuracy\)", out), out
    assert re.search(r"top-5 error = [0-9.e-]+ \(accuracy_top5\)", out), out


@pytest.mark.slow
def test_demo_prototxts_point_into_the_workdir(demo_run):
    work, out = demo_run
    sp = read_text_file(work / "toy_solver.prototxt", pb.SolverParameter())
    assert Path(sp.net) == work / "toy_train_val.prototxt"
    assert Path(sp.snapshot_prefix) == work / "toy_caffenet"
    assert sp.max_iter == ITERATIONS and list(sp.test_iter) == [CLASSES * VAL_PER_CLASS // 30]
    net = read_text_file(work / "toy_train_val.prototxt", pb.NetParameter())
    sources = sorted(lp.data_param.source for lp in net.layer if lp.type == "Data")
    assert sources == [str(work / "toy_imagenet" / "train_lmdb"), str(work / "toy_imagenet" / "val_lmdb")]
    assert [lp for lp in net.layer if lp.name == "fc8"][0].inner_product_param.num_output == CLASSES
    assert str(work / "train.log") in out and str(work / "curves.png") in out


@pytest.mark.slow
def test_demo_rerun_reuses_data_and_trains_afresh(demo_run, tmp_path):
    work = tmp_path / "moved_demo"
    shutil.copytree(demo_run[0], work)  # a copy, so the other tests see the first run untouched
    mdb = work / "toy_imagenet" / "train_lmdb" / "data.mdb"
    before = mdb.stat().st_mtime_ns
    rc, out = run_cli(demo_argv(work, 10))
    assert rc == 0, out
    assert "reused from an earlier run: toy images, train_lmdb, val_lmdb, mean" in out, out
    assert mdb.stat().st_mtime_ns == before
    assert read_solverstate(work / "toy_caffenet_iter_10.solverstate").iter == 10
    assert parse_log(work / "train.log").loss[-1][0] == 10


@pytest.mark.slow
def test_demo_help_from_python_m_and_the_console_script():
    commands = [[sys.executable, "-m", "netspec", "demo", "--help"]]
    script = Path(sys.executable).parent / "netspec"
    if script.is_file():
        commands.append([str(script), "demo", "--help"])
    for cmd in commands:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0 and "--workdir" in p.stdout and "--iterations" in p.stdout, (cmd, p.stderr)


# ---- the pieces ---------------------------------------------------------------------------------------
def test_test_batch_divides_the_validation_set():
    assert [demo.test_batch(n) for n in (200, 100, 60, 7, 53, 1)] == [50, 50, 30, 7, 1, 1]


def template(kind):
    folder = demo.template_dir()
    if kind == "net":
        return read_text_file(folder / demo.TEMPLATE_NET, pb.NetParameter())
    return read_text_file(folder / demo.TEMPLATE_SOLVER, pb.SolverParameter())


def test_demo_net_drops_top5_below_five_classes_and_sizes_fc8(tmp_path):
    for classes, tops in ((4, [1]), (10, [1, 5])):
        net = demo.demo_net(template("net"), tmp_path, classes, classes * 10)
        assert [lp.accuracy_param.top_k for lp in net.layer if lp.type == "Accuracy"] == tops
        assert [lp for lp in net.layer if lp.name == "fc8"][0].inner_product_param.num_output == classes
        test_data = [lp for lp in net.layer if lp.type == "Data" and lp.include[0].phase == pb.TEST][0]
        assert test_data.data_param.batch_size == demo.test_batch(classes * 10)
        assert test_data.transform_param.mean_file == str(tmp_path / "mean.binaryproto")


def test_demo_solver_scales_the_schedule_with_iterations(tmp_path):
    t = template("solver")
    sp = demo.demo_solver(t, tmp_path / "n.prototxt", tmp_path / "p", 3, t.max_iter // 2, torch.device("cpu"))
    assert (sp.max_iter, sp.stepsize, sp.test_interval) == (t.max_iter // 2, round(t.stepsize / 2),
                                                            round(t.test_interval / 2))
    assert list(sp.test_iter) == [3] and sp.solver_mode == pb.SolverParameter.CPU
    same = demo.demo_solver(t, tmp_path / "n.prototxt", tmp_path / "p", 3, None, torch.device("cpu"))
    assert (same.max_iter, same.stepsize) == (t.max_iter, t.stepsize)


def test_make_images_reuses_a_matching_tree_and_remakes_on_new_options(tmp_path):
    cfg = demo.Config(workdir=tmp_path, classes=2, per_class=1, val_per_class=1)
    root = tmp_path / "toy_imagenet"
    assert demo.make_images(cfg, root, print) is True
    assert demo.make_images(cfg, root, print) is False
    cfg.classes = 3
    assert demo.make_images(cfg, root, print) is True
    assert len((root / "train.txt").read_text().split("\n")) - 1 == 3


def test_make_images_refuses_a_folder_it_did_not_make(tmp_path):
    root = tmp_path / "toy_imagenet"
    root.mkdir()
    (root / "mine.txt").write_text("keep me")
    with pytest.raises(NetspecError, match="not made by netspec demo"):
        demo.make_images(demo.Config(workdir=tmp_path), root, print)
    assert (root / "mine.txt").read_text() == "keep me"


def test_gpu_flag():
    assert demo.choose_device("cpu") == torch.device("cpu")
    assert demo.choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(NetspecError, match="CUDA device"):
        demo.choose_device(str(torch.cuda.device_count()))
