"""What commands write (netspec/cli/__init__.py's logging, netspec/evaluate.py's numbers): glog lines on
stderr for every command, no progress-bar redraws when stderr is a file, nothing said twice, --quiet,
errors printed as Caffe would print the accuracy they come from, and --oversample saying it wrapped."""
import re
import subprocess
import sys

import pytest

from netspec import evaluate

GLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] ")


def _netspec(*argv, cwd):
    done = subprocess.run([sys.executable, "-m", "netspec.cli", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


@pytest.fixture(scope="module")
def toy_runs(tmp_path_factory):
    """make-toy-imagenet, convert-imagenet and compute-image-mean with stdout and stderr to pipes."""
    d = tmp_path_factory.mktemp("out")
    runs = {"toy": _netspec("make-toy-imagenet", "toy", "--classes", "2", "--per-class", "3",
                            "--val-per-class", "1", cwd=d)}
    runs["convert"] = _netspec("convert-imagenet", "-resize_height=16", "-resize_width=16", "toy/train/",
                               "toy/train.txt", "db", cwd=d)
    runs["mean"] = _netspec("compute-image-mean", "db", "mean.binaryproto", cwd=d)
    runs["quiet"] = _netspec("compute-image-mean", "db", "m2.binaryproto", "--quiet", cwd=d)
    return runs


def test_logs_to_a_file_hold_glog_lines_and_no_carriage_returns(toy_runs):
    for name, (out, err) in toy_runs.items():
        assert "\r" not in err and "\r" not in out, f"{name}: a progress bar redrew into a file"
        for line in err.splitlines():
            assert GLOG.match(line), f"{name}: not a glog line: {line!r}"


def test_nothing_is_said_twice(toy_runs):
    for name, (out, err) in toy_runs.items():
        said = out.splitlines() + [GLOG.sub("", x) for x in err.splitlines()]
        assert len(said) == len(set(said)), f"{name} repeats a line: {said}"
    out, err = toy_runs["convert"]
    assert "Processed 6 files" in err and out == ""      # one closing line, the log's (Caffe's)
    out, err = toy_runs["mean"]
    assert len(re.findall(r"mean_value channel \[0\]", out + err)) == 1


def test_quiet_keeps_only_warnings(toy_runs):
    out, err = toy_runs["quiet"]
    assert err == "" and "written to m2.binaryproto" in out


@pytest.mark.parametrize("accuracy, text", [(0.99, "0.01"), (0.5, "0.5"), (1.0, "0"), (0.123456789, "0.876543")])
def test_error_is_one_minus_the_printed_accuracy(accuracy, text):
    import numpy as np

    assert evaluate.error_text(np.float32(accuracy)) == text


def test_oversample_says_when_it_wrapped():
    result = evaluate.Oversampled(100, 57, (50, 3, 64, 64), "prob", {1: 0.5}, {1: 0.25}, records=40)
    assert "the LMDB holds 40 records" in result.lines()[0] and "60 images were scored twice" in result.lines()[0]
    result.records = 100
    assert "wrapped" not in result.lines()[0]
