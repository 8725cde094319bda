"""Caffe-format logs: glog prefixes as Caffe's tools/extra/extract_seconds.py reads them, and
parse_log on netspec's own log and on a Caffe 1.0 log (hand-written in Caffe's exact format)."""
import datetime
import io
import logging
import re

import pytest

from netspec.solver.log import g6, glog_to_stderr, parse_log

CAFFE_LOG = """\
I0902 13:35:56.474269 16020 caffe.cpp:218] Using GPUs 0
I0902 13:35:56.728484 16020 solver.cpp:310] Solving LeNet
I0902 13:35:56.728489 16020 solver.cpp:311] Learning Rate Policy: inv
I0902 13:35:56.729123 16020 solver.cpp:362] Iteration 0, Testing net (#0)
I0902 13:35:58.009428 16020 solver.cpp:429]     Test net output #0: accuracy = 0.0954
I0902 13:35:58.009466 16020 solver.cpp:429]     Test net output #1: loss = 2.33955 (* 1 = 2.33955 loss)
I0902 13:35:58.028308 16020 solver.cpp:219] Iteration 0 (-1.4013e-45 iter/s, 1.29921s/100 iters), loss = 2.30581
I0902 13:35:58.028345 16020 solver.cpp:238]     Train net output #0: loss = 2.30581 (* 1 = 2.30581 loss)
I0902 13:35:58.028367 16020 sgd_solver.cpp:105] Iteration 0, lr = 0.01
I0902 13:36:00.163830 16020 solver.cpp:219] Iteration 100 (46.8244 iter/s, 2.13564s/100 iters), loss = 0.205887
I0902 13:36:00.163862 16020 solver.cpp:238]     Train net output #0: loss = 0.205887 (* 1 = 0.205887 loss)
I0902 13:36:00.163873 16020 sgd_solver.cpp:105] Iteration 100, lr = 0.00992565
I0902 13:36:02.290002 16020 solver.cpp:362] Iteration 200, Testing net (#0)
I0902 13:36:03.000000 16020 solver.cpp:429]     Test net output #0: accuracy = 0.9709
I0902 13:36:03.000001 16020 solver.cpp:429]     Test net output #1: loss = 0.0902 (* 1 = 0.0902 loss)
I0902 13:36:03.100000 16020 solver.cpp:447] Snapshotting to binary proto file lenet_iter_200.caffemodel
I0902 13:36:03.200000 16020 solver.cpp:310] Iteration 200, loss = 0.0711
I0902 13:36:03.200000 16020 solver.cpp:315] Optimization Done.
"""


def extract_datetime_from_line(line: str, year: int) -> datetime.datetime:
    """What Caffe's tools/extra/extract_seconds.py does with a log line (re-expressed)."""
    fields = line.strip().split()
    month, day = int(fields[0][1:3]), int(fields[0][3:5])
    stamp = fields[1]
    pos = stamp.rfind(".")
    h, m, s = (int(x) for x in stamp[:pos].split(":"))
    return datetime.datetime(year, month, day, h, m, s, int(stamp[pos + 1:]))


def test_glog_prefix_as_caffes_tools_read_it():
    out = io.StringIO()
    with glog_to_stderr(logging.INFO, stream=out):
        logging.getLogger("netspec.solver.solver").info("Iteration %d, lr = %s", 100, g6(0.00992565))
        logging.getLogger("netspec.solver.solver").warning("careful")
    info, warning = out.getvalue().splitlines()
    assert re.match(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} [ \d]{5} test_solver_log\.py:\d+\] "
                    r"Iteration 100, lr = 0\.00992565$", info), info
    assert warning.startswith("W") and warning.endswith("] careful")
    when = extract_datetime_from_line(info, datetime.date.today().year)
    assert abs((datetime.datetime.now() - when).total_seconds()) < 60


def test_glog_handler_is_removed_afterwards():
    logger = logging.getLogger("netspec")
    before = (list(logger.handlers), logger.propagate, logger.level)
    with glog_to_stderr(stream=io.StringIO()):
        assert logger.propagate is False
    assert (list(logger.handlers), logger.propagate, logger.level) == before


def test_g6_is_cpp_default_float_output():
    assert [g6(v) for v in (0.01, 1e-5, 2.30581234, 46.82441, 123456789.0, float("nan"), float("inf"))] == \
        ["0.01", "1e-05", "2.30581", "46.8244", "1.23457e+08", "nan", "inf"]


def test_parse_caffe_log(tmp_path):
    path = tmp_path / "caffe.log"
    path.write_text(CAFFE_LOG)
    parsed = parse_log(path)
    assert parsed.loss == [(0, 2.30581), (100, 0.205887), (200, 0.0711)]
    assert parsed.lr == [(0, 0.01), (100, 0.00992565)]
    assert parsed.train_series("loss") == ([0, 100], [2.30581, 0.205887])
    assert parsed.test_names(0) == ["accuracy", "loss"]
    assert parsed.test_series(0, "accuracy") == ([0, 200], [0.0954, 0.9709])
    # seconds from the "Solving" line, as Caffe's parse_log.py
    assert parsed.test[0][1].seconds == pytest.approx(62.290002 - 56.728484, abs=1e-6)


def test_parse_netspec_log(tmp_path):
    from netspec.frontend import load_solver
    from netspec.solver.solver import Solver

    (tmp_path / "net.prototxt").write_text("""name: "t"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }
""")
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt" test_iter: 1 test_interval: 4 base_lr: 0.1 lr_policy: "step" gamma: 0.5 '
        'stepsize: 3 display: 2 max_iter: 8 snapshot_after_train: false random_seed: 1 test_compute_loss: true')
    out = io.StringIO()
    with glog_to_stderr(stream=out):
        sp, path = load_solver(tmp_path / "solver.prototxt")
        Solver(sp, path).solve()
    (tmp_path / "train.log").write_text(out.getvalue())
    parsed = parse_log(tmp_path / "train.log")
    assert [i for i, _ in parsed.loss] == [0, 2, 4, 6, 8]
    assert parsed.lr == [(0, 0.1), (2, 0.1), (4, 0.05), (6, 0.025)]
    assert [r.iteration for r in parsed.test[0]] == [0, 4, 8]
    assert set(parsed.test_names(0)) == {"loss", "acc", "Test loss"}
    assert parsed.train_names() == ["acc", "loss"]     # Caffe orders net outputs by name
    assert all(r.seconds is not None and r.seconds >= 0 for r in parsed.test[0])
