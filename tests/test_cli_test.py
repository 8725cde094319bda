"""netspec test (netspec/cli/cmd_test.py, netspec/evaluate.py): Caffe's `caffe test` lines against the
values real Caffe computed (tests/data/caffe), the 10-view test, one-line errors."""
import re
import subprocess
import sys
from pathlib import Path

import lmdb
import numpy as np
import pytest
import torch

from netspec import evaluate
from netspec.cli import main
from netspec.frontend import load_net
from netspec.graph import compile_net
from netspec.formats import read_binaryproto, write_caffemodel
from netspec.proto import pb

DATA = Path(__file__).parent / "data" / "caffe"
LINE = re.compile(r"^(\S+) = (\S+)( \(\* (\S+) = (\S+) loss\))?$")


def npy(tmp_path, name, array) -> str:
    path = tmp_path / f"{name}.npy"
    np.save(path, array)
    return str(path)


def run_cli(argv, capsys) -> tuple[int, list[str], str]:
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out.splitlines(), out.err


def summary(lines) -> tuple[float, list[tuple]]:
    """('Loss: L' value, [(blob, mean, weight, weighted)] in printed order)."""
    loss = [float(x.split(": ")[1]) for x in lines if x.startswith("Loss: ")]
    rows = []
    for x in lines:
        m = LINE.match(x)
        if m and not x.startswith(("Batch ", "top-")):
            rows.append((m[1], float(m[2]), m[4] and float(m[4]), m[5] and float(m[5])))
    return loss[0], rows


def loss_net_test(tmp_path, capsys, iterations=3):
    blobs = np.load(DATA / "loss_net_blobs.npz")
    rc, lines, err = run_cli(["test", "-model", str(DATA / "loss_net.prototxt"), "-weights",
                              str(DATA / "loss_net.caffemodel"), "-iterations", str(iterations),
                              "--input", f"data={npy(tmp_path, 'data', blobs['data'])}",
                              "--input", f"label={npy(tmp_path, 'label', blobs['label'])}"], capsys)
    assert rc == 0, err
    return blobs, lines


def test_loss_net_prints_caffes_loss_and_accuracy(tmp_path, capsys):
    blobs, lines = loss_net_test(tmp_path, capsys)
    # Caffe's outputs are sorted by name: acc before loss; one line per element per batch
    assert [x.split(" = ")[0] for x in lines if x.startswith("Batch")] == \
        ["Batch 0, acc", "Batch 0, loss", "Batch 1, acc", "Batch 1, loss", "Batch 2, acc", "Batch 2, loss"]
    loss, rows = summary(lines)
    want = float(blobs["loss"])
    assert abs(loss - want) <= 1e-4 * want, f"Loss: {loss} vs Caffe's {want}"
    assert [r[0] for r in rows] == ["acc", "loss"]
    assert rows[0][1] == pytest.approx(float(blobs["acc"]), abs=1e-6) and rows[0][2] is None
    assert abs(rows[1][1] - want) <= 1e-4 * want, f"loss blob {rows[1][1]} vs Caffe's {want}"
    assert rows[1][2] == 1 and abs(rows[1][3] - want) <= 1e-4 * want
    assert f"loss = {evaluate.fmt(rows[1][1])} (* 1 = {evaluate.fmt(rows[1][1])} loss)" in lines
    assert not any(x.startswith("top-") for x in lines), "loss_net's Accuracy has top_k 2"


def test_layers_net_every_output_element_matches_caffe(tmp_path, capsys):
    blobs = np.load(DATA / "layers_net_blobs.npz")
    rc, lines, err = run_cli(["test", "-model", str(DATA / "layers_net.prototxt"), "-weights",
                              str(DATA / "layers_net.caffemodel"), "-iterations", "2",
                              "--input", f"data={npy(tmp_path, 'data', blobs['data'])}"], capsys)
    assert rc == 0, err
    outputs = sorted(["tanh", "sig", "ip2a", "ip2b", "gpool_r", "prob"])
    want = [(b, float(v)) for b in outputs for v in blobs[b].ravel()]
    loss, rows = summary(lines)
    assert loss == 0 and [r[0] for r in rows] == [b for b, _ in want]
    worst = max(abs(r[1] - v) / max(1.0, abs(v)) for r, (_, v) in zip(rows, want))
    assert worst < 1e-4, f"worst relative error of the printed means {worst}"
    batch0 = [x for x in lines if x.startswith("Batch 0, ")]
    assert len(batch0) == len(want) and len([x for x in lines if x.startswith("Batch 1, ")]) == len(want)
    worst = max(abs(float(x.split(" = ")[1]) - v) / max(1.0, abs(v)) for x, (_, v) in zip(batch0, want))
    assert worst < 1e-4, f"worst relative error of batch 0 {worst}"


@pytest.mark.parametrize("value, text", [
    (0.92324966, "0.92325"), (1.0, "1"), (0.0, "0"), (1e-5, "1e-05"), (123456789.0, "1.23457e+08"),
    (-0.5, "-0.5"), (0.1, "0.1"), (2.5e-7, "2.5e-07"), (100000.0, "100000"), (1234567.0, "1.23457e+06")])
def test_numbers_print_as_cpp_ostream(value, text):
    assert evaluate.fmt(value) == text


def test_unfed_input_is_zeros_as_in_caffe(capsys, caplog):
    rc, lines, err = run_cli(["test", "-model", str(DATA / "layers_net.prototxt"), "-weights",
                              str(DATA / "layers_net.caffemodel"), "-iterations", "1", "--no-batch-lines"],
                             capsys)
    assert rc == 0 and "input blob 'data' is not fed" in caplog.text
    net = compile_net(load_net(DATA / "layers_net.prototxt"), source=str(DATA / "layers_net.prototxt"))
    from netspec.formats import load_weights
    load_weights(net.params(), DATA / "layers_net.caffemodel")
    with torch.no_grad():
        prob = net(data=torch.zeros(2, 3, 35, 35))["prob"].numpy().ravel()
    got = [r[1] for r in summary(lines)[1] if r[0] == "prob"]
    assert np.allclose(got, prob, rtol=1e-5, atol=1e-6), (got, prob)


# ---- a small Data-layer net over Caffe's lmdb_raw (12 records of 64x64, labels 0..2) ----------------

TINY = """name: "tiny"
layer {{ name: "data" type: "Data" top: "data" top: "label"
  transform_param {{ crop_size: 57 mean_file: "{mean}" scale: 0.0078125 }}
  data_param {{ source: "{lmdb}" batch_size: 4 backend: LMDB }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 4 kernel_size: 5 stride: 4
    weight_filler {{ type: "gaussian" std: 0.3 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"
  inner_product_param {{ num_output: 6 weight_filler {{ type: "gaussian" std: 0.3 }} }} }}
{prob}
layer {{ name: "top1" type: "Accuracy" bottom: "fc" bottom: "label" top: "top1" }}
layer {{ name: "top5" type: "Accuracy" bottom: "fc" bottom: "label" top: "top5"
  accuracy_param {{ top_k: 5 }} }}
"""
PROB = 'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }'


@pytest.fixture
def tiny(tmp_path):
    """(prototxt, caffemodel) of a random 6-class net over lmdb_raw; with or without a Softmax output."""
    def make(with_prob=True, seed=5):
        model = tmp_path / f"tiny_{with_prob}.prototxt"
        model.write_text(TINY.format(mean=DATA / "mean.binaryproto", lmdb=DATA / "lmdb_raw",
                                     prob=PROB if with_prob else ""))
        param = load_net(model)
        net = compile_net(param, seed=seed, source=str(model))
        weights = tmp_path / f"tiny_{with_prob}.caffemodel"
        write_caffemodel(weights, param, net.params())
        return str(model), str(weights)
    return make


def test_ten_views_are_the_corner_and_centre_crops_mirrored():
    images = torch.arange(2 * 3 * 9 * 11, dtype=torch.float32).reshape(2, 3, 9, 11)
    views = evaluate.ten_views(images, 6).numpy()
    x = images.numpy()
    crops = [x[..., 0:6, 0:6], x[..., 0:6, 5:11], x[..., 3:9, 0:6], x[..., 3:9, 5:11], x[..., 1:7, 2:8]]
    assert views.shape == (10, 2, 3, 6, 6)
    for i, c in enumerate(crops):
        assert np.array_equal(views[i], c), f"view {i}"
        assert np.array_equal(views[i + 5], c[..., ::-1]), f"view {i + 5} (mirrored)"


def test_top_k_follows_caffes_accuracy_rule():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.4, 0.4, 0.2], [0.1, 0.2, 0.7]])
    labels = torch.tensor([1.0, 1.0, 0.0])
    assert evaluate.topk_correct(probs, labels, 1) == (0, 3)  # a tie counts against the label
    assert evaluate.topk_correct(probs, labels, 2) == (2, 3)
    assert evaluate.topk_correct(probs, labels, 2, ignore_label=0) == (2, 2)


def records(n):
    """The first n records of lmdb_raw as float arrays and labels, read with lmdb and protobuf only."""
    env = lmdb.open(str(DATA / "lmdb_raw"), readonly=True, lock=False)
    with env.begin() as txn:
        items = [pb.Datum.FromString(v) for _, v in list(txn.cursor())[:n]]
    env.close()
    images = np.stack([np.frombuffer(d.data, np.uint8).reshape(d.channels, d.height, d.width) for d in items])
    return images.astype(np.float32), np.array([d.label for d in items], np.float32)


def test_view_probabilities_are_the_softmax_of_each_numpy_crop(tiny):
    model, weights = tiny(with_prob=False)       # no Softmax output: softmax of Accuracy's bottom
    net = compile_net(load_net(model), source=model)
    from netspec.formats import load_weights
    load_weights(net.params(), weights)
    images, labels = records(4)
    full = (images - read_binaryproto(DATA / "mean.binaryproto").reshape(1, 3, 64, 64)) * 0.0078125
    probs = evaluate.view_probabilities(net, torch.from_numpy(full), torch.from_numpy(labels)).numpy()
    off = [(0, 0), (0, 7), (7, 0), (7, 7), (3, 3)]
    for v in range(10):
        y, x = off[v % 5]
        crop = full[..., y:y + 57, x:x + 57]
        crop = crop[..., ::-1] if v >= 5 else crop
        with torch.no_grad():
            fc = net.run_steps({"data": torch.from_numpy(crop.copy()), "label": torch.from_numpy(labels)},
                               start=1)["fc"].numpy()
        e = np.exp(fc - fc.max(1, keepdims=True))
        err = np.abs(probs[v] - e / e.sum(1, keepdims=True)).max()
        assert err < 1e-6, f"view {v}: worst error {err}"


def test_oversample_reports_errors_of_the_averaged_probabilities(tiny):
    model, weights = tiny(with_prob=True)
    net = compile_net(load_net(model), source=model)
    from netspec.formats import load_weights
    load_weights(net.params(), weights)
    images, labels = records(12)
    full = torch.from_numpy((images - read_binaryproto(DATA / "mean.binaryproto").reshape(1, 3, 64, 64))
                            * 0.0078125)
    probs = torch.cat([evaluate.view_probabilities(net, full[i:i + 4], torch.from_numpy(labels[i:i + 4]))
                       for i in range(0, 12, 4)], 1).numpy()

    def error(p, k):
        mine = p[np.arange(12), labels.astype(int)]
        return 1 - np.mean((p >= mine[:, None]).sum(1) - 1 < k)

    result = evaluate.oversample(net, 3)
    assert result.images == 12 and result.crop == 57 and result.image_shape == (4, 3, 64, 64)
    for k in (1, 5):
        assert result.ten[k] == pytest.approx(error(probs.mean(0), k)), f"10-view top-{k}"
        assert result.centre[k] == pytest.approx(error(probs[4], k)), f"centre top-{k}"
    for layer in net.layers.values():
        getattr(layer, "close", lambda: None)()


def test_cli_oversample_centre_crop_equals_caffes_test_accuracy(tiny, capsys):
    model, weights = tiny(with_prob=True)
    rc, lines, err = run_cli(["test", "-model", model, "-weights", weights, "-iterations", "3",
                              "--oversample", "--no-batch-lines"], capsys)
    assert rc == 0, err
    errors = dict(re.match(r"top-(\d) error = (\S+) \((\w+)\)", x).group(1, 2)
                  for x in lines if x.startswith("top-"))
    centre = next(x for x in lines if x.startswith("centre crop: "))
    assert centre == f"centre crop: top-1 error = {errors['1']}, top-5 error = {errors['5']}"
    assert any(x.startswith("10 views: top-1 error = ") for x in lines)
    assert any("12 images, 10 views of 57x57 from 64x64" in x for x in lines)


def test_oversample_needs_a_cropping_data_layer(capsys, tmp_path):
    blobs = np.load(DATA / "loss_net_blobs.npz")
    rc, _, err = run_cli(["test", "-model", str(DATA / "loss_net.prototxt"), "-weights",
                          str(DATA / "loss_net.caffemodel"), "-iterations", "1", "--oversample",
                          "--no-batch-lines",
                          "--input", f"data={npy(tmp_path, 'd', blobs['data'])}"], capsys)
    assert rc == 1 and "--oversample needs a net whose first layer is a Data layer" in err


# ---- one-line errors -------------------------------------------------------------------------------

def one_line_error(argv, capsys) -> str:
    rc, _, err = run_cli(argv, capsys)
    lines = [x for x in err.splitlines() if x.startswith("netspec test: error: ")]
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_bad_weights_are_one_line_errors(tmp_path, capsys):
    model = str(DATA / "loss_net.prototxt")
    base = ["test", "-model", model, "-iterations", "1"]
    assert "nope.caffemodel: no such file" in one_line_error(
        base + ["-weights", str(tmp_path / "nope.caffemodel")], capsys)
    assert "loss_net.prototxt: this is a text prototxt, not a binary .caffemodel" in one_line_error(
        base + ["-weights", model], capsys)
    err = one_line_error(base + ["-weights", str(DATA / "layers_net.caffemodel")], capsys)
    assert "layer 'conv1'" in err and "8×3×5×5 in the file" in err and "8×3×3×3 in the net" in err, err
    data = (DATA / "loss_net.caffemodel").read_bytes()
    (tmp_path / "cut.caffemodel").write_bytes(data[: len(data) // 2])
    assert "cut.caffemodel: file is truncated" in one_line_error(
        base + ["-weights", str(tmp_path / "cut.caffemodel")], capsys)


def test_missing_flags_and_files_are_one_line_errors(tmp_path, capsys):
    w = str(DATA / "loss_net.caffemodel")
    assert "-model is required" in one_line_error(["test", "-weights", w], capsys)
    model = str(DATA / "loss_net.prototxt")
    assert "-weights is required" in one_line_error(["test", "-model", model], capsys)
    assert "nope.prototxt: no such file" in one_line_error(["test", "-model", str(tmp_path / "nope.prototxt"),
                                                             "-weights", w], capsys)
    err = one_line_error(["test", "-model", str(DATA / "loss_net.prototxt"), "-weights", w,
                          "--input", f"image={npy(tmp_path, 'x', np.zeros(3))}"], capsys)
    assert "--input image: net 'loss_net' has no such input blob (its inputs: data, label)" in err
    (tmp_path / "bad.npy").write_text("not numpy")
    assert "bad.npy: not a .npy array" in one_line_error(
        ["test", "-model", model, "-weights", w, "--input", f"data={tmp_path / 'bad.npy'}"],
        capsys)


def test_subprocess_error_has_no_traceback(tmp_path):
    argv = ["test", "-model", str(DATA / "loss_net.prototxt"),
            "-weights", str(DATA / "layers_net.caffemodel")]
    proc = subprocess.run([sys.executable, "-m", "netspec.cli", *argv], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    errors = [x for x in proc.stderr.splitlines() if "error:" in x]
    assert len(errors) == 1 and "layer 'conv1'" in errors[0] and "in the net" in errors[0], proc.stderr
    assert proc.stdout == ""


@pytest.mark.cuda
def test_gpu_gives_caffes_numbers(tmp_path, capsys):
    blobs = np.load(DATA / "loss_net_blobs.npz")
    rc, lines, err = run_cli(["test", "-model", str(DATA / "loss_net.prototxt"), "-weights",
                              str(DATA / "loss_net.caffemodel"), "-iterations", "2", "-gpu", "0",
                              "--input", f"data={npy(tmp_path, 'data', blobs['data'])}",
                              "--input", f"label={npy(tmp_path, 'label', blobs['label'])}"], capsys)
    assert rc == 0, err
    loss, rows = summary(lines)
    assert abs(loss - float(blobs["loss"])) <= 1e-4 * float(blobs["loss"]), f"GPU Loss: {loss}"
    assert rows[0] == ("acc", float(blobs["acc"]), None, None)


@pytest.mark.cuda
def test_gpu_oversample_equals_cpu(tiny, capsys):
    model, weights = tiny(with_prob=True)
    outs = []
    for gpu in ([], ["-gpu", "0"]):
        rc, lines, err = run_cli(["test", "-model", model, "-weights", weights, "-iterations", "3",
                                  "--oversample", "--no-batch-lines", *gpu], capsys)
        assert rc == 0, err
        outs.append([x for x in lines if x.startswith(("centre crop", "10 views", "top-"))])
    assert outs[0] == outs[1]
