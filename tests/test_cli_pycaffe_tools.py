"""pycaffe's scripts and Caffe's tools as netspec commands: classify, detect, extract-features,
upgrade-net, upgrade-solver, device-query, parse-log. Each result is checked against the library
driven by hand, Caffe's own output (parse_log.py's tables), or the command's documented contract."""
from __future__ import annotations

import csv
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest
from test_pycaffe_classifier import DEPLOY

import netspec as caffe
from netspec.classifier import Classifier
from netspec.cli import main
from netspec.data import db as dbmod
from netspec.data.datum import mat_to_datum
from netspec.detector import Detector
from netspec.proto import pb

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("tools")
    (d / "deploy.prototxt").write_text(DEPLOY)
    caffe.set_random_seed(5)
    caffe.Net(str(d / "deploy.prototxt"), caffe.TEST).save(str(d / "w.caffemodel"))
    rng = np.random.default_rng(0)
    for k in range(2):
        cv2.imwrite(str(d / f"im{k}.png"), cv2.GaussianBlur((rng.random((20, 24, 3)) * 255).astype(np.uint8),
                                                           (3, 3), 1))
    return d


def run_cmd(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_classify_saves_what_classifier_predicts(model, capsys, tmp_path):
    rc, out, _ = run_cmd(capsys, "classify", model / "im0.png", tmp_path / "p.npy", "--model_def",
                         model / "deploy.prototxt", "--pretrained_model", model / "w.caffemodel",
                         "--images_dim", "10,10", "--mean_file", "")
    assert rc == 0 and "CPU mode" in out and "Classifying 1 inputs." in out
    clf = Classifier(str(model / "deploy.prototxt"), str(model / "w.caffemodel"), image_dims=(10, 10),
                     raw_scale=255.0, channel_swap=(2, 1, 0))
    ref = clf.predict([caffe.io.load_image(str(model / "im0.png"))])
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), ref, rtol=1e-6)


def test_classify_a_folder_center_only_with_a_mean(model, capsys, tmp_path):
    mean = np.full((3, 8, 8), 100.0)
    np.save(tmp_path / "mean.npy", mean)
    rc, out, _ = run_cmd(capsys, "classify", model, tmp_path / "p.npy", "--model_def", model / "deploy.prototxt",
                         "--pretrained_model", model / "w.caffemodel", "--images_dim", "10,10", "--ext", "png",
                         "--mean_file", tmp_path / "mean.npy", "--center_only")
    assert rc == 0 and "Classifying 2 inputs." in out
    clf = Classifier(str(model / "deploy.prototxt"), str(model / "w.caffemodel"), image_dims=(10, 10),
                     mean=mean, raw_scale=255.0, channel_swap=(2, 1, 0))
    ims = [caffe.io.load_image(str(model / f"im{k}.png")) for k in range(2)]
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), clf.predict(ims, oversample=False), rtol=1e-6)


def test_classify_missing_image_is_one_line(model, capsys, tmp_path):
    rc, _, err = run_cmd(capsys, "classify", tmp_path / "none.jpg", tmp_path / "p.npy", "--model_def",
                         model / "deploy.prototxt", "--pretrained_model", model / "w.caffemodel", "--mean_file", "")
    assert rc == 1
    assert err.strip().splitlines()[-1] == f"netspec classify: error: load_image: '{tmp_path / 'none.jpg'}' does not exist"


def test_detect_csv_rows_equal_detector(model, capsys, tmp_path):
    rows = [("im0.png", 2, 1, 18, 15), ("im1.png", 0, 0, 10, 12), ("im0.png", 5, 6, 23, 19)]
    with open(tmp_path / "win.csv", "w") as f:
        f.write("filename,xmin,ymin,xmax,ymax\n")
        f.writelines(f"{model / n},{x0},{y0},{x1},{y1}\n" for n, x0, y0, x1, y1 in rows)
    rc, out, _ = run_cmd(capsys, "detect", tmp_path / "win.csv", tmp_path / "det.csv", "--model_def",
                         model / "deploy.prototxt", "--pretrained_model", model / "w.caffemodel",
                         "--mean_file", "", "--context_pad", "1")
    assert rc == 0 and "Processed 3 windows" in out
    det = Detector(str(model / "deploy.prototxt"), str(model / "w.caffemodel"), raw_scale=255.0,
                   channel_swap=(2, 1, 0), context_pad=1)
    ref = det.detect_windows([(str(model / "im0.png"), [np.array([1, 2, 15, 18]), np.array([6, 5, 19, 23])]),
                              (str(model / "im1.png"), [np.array([0, 0, 12, 10])])])
    with open(tmp_path / "det.csv") as f:
        got = list(csv.DictReader(f))
    assert list(got[0])[:5] == ["filename", "ymin", "xmin", "ymax", "xmax"] and len(got[0]) == 10
    for g, r in zip(got, ref):  # grouped by image in order of first appearance, as detect.py
        assert g["filename"] == r["filename"]
        assert [int(g[c]) for c in ("ymin", "xmin", "ymax", "xmax")] == list(r["window"])
        np.testing.assert_allclose([float(g[f"class{k}"]) for k in range(5)], r["prediction"], rtol=1e-6)


@pytest.fixture(scope="module")
def feature_net(tmp_path_factory):
    d = tmp_path_factory.mktemp("feat")
    w = dbmod.Writer(d / "lmdb")
    rng = np.random.default_rng(1)
    for i in range(10):
        w.put(dbmod.caffe_key(i, f"im{i}.png"),
              mat_to_datum((rng.random((6, 6, 3)) * 255).astype(np.uint8), i % 3).SerializeToString())
    w.close()
    (d / "net.prototxt").write_text(f"""name: "feat"
layer {{ name: "data" type: "Data" top: "data" top: "label"
  data_param {{ source: "{d / 'lmdb'}" backend: LMDB batch_size: 4 }} transform_param {{ scale: 0.00390625 }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param {{ num_output: 2 kernel_size: 3 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param {{ num_output: 3 weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
""")
    caffe.set_random_seed(2)
    caffe.Net(str(d / "net.prototxt"), caffe.TEST).save(str(d / "w.caffemodel"))
    return d


def read_datums(path):
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        items = [(k.decode(), pb.Datum.FromString(v)) for k, v in txn.cursor()]
    env.close()
    return items


def test_extract_features_reads_back_as_the_nets_blobs(feature_net, capsys, tmp_path):
    d = feature_net
    rc, out, _ = run_cmd(capsys, "extract-features", d / "w.caffemodel", d / "net.prototxt", "conv,ip",
                         f"{tmp_path / 'conv_db'},{tmp_path / 'ip_db'}", 3, "lmdb")
    assert rc == 0 and "Successfully extracted the features!" in out
    net = caffe.Net(str(d / "net.prototxt"), caffe.TEST, weights=str(d / "w.caffemodel"))
    ref = {"conv": [], "ip": []}
    for _ in range(3):  # 12 items over a 10-record LMDB: the Data layer wraps around, as in Caffe
        net.forward()
        for b in ref:
            ref[b] += list(net.blobs[b].data.copy())
    for blob, db, chw in (("conv", "conv_db", (2, 4, 4)), ("ip", "ip_db", (3, 1, 1))):
        items = read_datums(tmp_path / db)
        assert [k for k, _ in items] == [f"{i:010d}" for i in range(12)]
        for i, (_, datum) in enumerate(items):
            assert (datum.channels, datum.height, datum.width) == chw and not datum.data
            assert not datum.HasField("label") and not datum.HasField("encoded")
            np.testing.assert_array_equal(np.array(datum.float_data, np.float32), ref[blob][i].ravel(),
                                          err_msg=f"{blob} item {i}")


def test_extract_features_unknown_blob_is_one_line(feature_net, capsys, tmp_path):
    d = feature_net
    rc, _, err = run_cmd(capsys, "extract-features", d / "w.caffemodel", d / "net.prototxt", "fc7",
                         tmp_path / "out", 1)
    assert rc == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith("netspec extract-features: error: unknown feature blob name 'fc7' in the network")
    assert line.endswith("(blobs: data, label, conv, ip)")
    assert not (tmp_path / "out").exists()
    rc, _, err = run_cmd(capsys, "extract-features", d / "w.caffemodel", d / "net.prototxt", "ip",
                         tmp_path / "out", 1, "leveldb")
    assert rc == 1 and "netspec writes LMDB only" in err
    (tmp_path / "taken").mkdir()
    rc, _, err = run_cmd(capsys, "extract-features", d / "w.caffemodel", d / "net.prototxt", "ip",
                         tmp_path / "taken", 1)
    assert rc == 1 and err.strip().splitlines()[-1].endswith(
        f"output DB '{tmp_path / 'taken'}' already exists; remove it or choose another name")


V1_NET = """name: "v1"
input: "data"
input_dim: 1 input_dim: 3 input_dim: 12 input_dim: 12
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" blobs_lr: 1 blobs_lr: 2
  weight_decay: 1 weight_decay: 0 convolution_param { num_output: 4 kernel_size: 3 } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "pool" type: POOLING bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layers { name: "fc" type: INNER_PRODUCT bottom: "pool" top: "fc" inner_product_param { num_output: 5 } }
layers { name: "prob" type: SOFTMAX bottom: "fc" top: "prob" }
"""


def test_upgrade_net_text_equals_the_shapes_view_of_the_v1_file(capsys, tmp_path):
    (tmp_path / "v1.prototxt").write_text(V1_NET)
    rc, out, _ = run_cmd(capsys, "upgrade-net", tmp_path / "v1.prototxt", tmp_path / "new.prototxt")
    assert rc == 0 and "Wrote upgraded NetParameter text proto" in out
    text = (tmp_path / "new.prototxt").read_text()
    assert "layers {" not in text and "input_dim" not in text and 'type: "Convolution"' in text
    new = caffe.frontend.read_text_file(tmp_path / "new.prototxt", pb.NetParameter())
    assert [lp.type for lp in new.layer] == ["Input", "Convolution", "ReLU", "Pooling", "InnerProduct", "Softmax"]
    assert [(p.lr_mult, p.decay_mult) for p in new.layer[1].param] == [(1, 1), (2, 0)]
    views = []
    for name in ("v1.prototxt", "new.prototxt"):
        rc, out, _ = run_cmd(capsys, "shapes", tmp_path / name)
        assert rc == 0
        views.append(out.replace(name, "NET"))
    assert views[0] == views[1]
    assert "1×5" in views[1] or "1x5" in views[1]


def test_upgrade_net_binary_keeps_the_weights(capsys, tmp_path):
    v1 = caffe.frontend.parse_net_text(V1_NET)
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    v1.layers[0].blobs.add(num=4, channels=3, height=3, width=3, data=w.ravel())
    (tmp_path / "old.caffemodel").write_bytes(v1.SerializeToString())
    rc, _, _ = run_cmd(capsys, "upgrade-net", tmp_path / "old.caffemodel", tmp_path / "new.caffemodel")
    assert rc == 0
    new = pb.NetParameter.FromString((tmp_path / "new.caffemodel").read_bytes())
    assert not new.layers and new.layer[1].name == "conv" and new.layer[1].type == "Convolution"
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(new.layer[1].blobs[0]), w[None].reshape(4, 3, 3, 3))


def test_upgrade_solver_folds_solver_type(capsys, tmp_path):
    (tmp_path / "s.prototxt").write_text('net: "n.prototxt"\nbase_lr: 0.01\nsolver_type: ADAGRAD\n')
    rc, out, _ = run_cmd(capsys, "upgrade-solver", tmp_path / "s.prototxt", tmp_path / "new.prototxt")
    assert rc == 0 and "Wrote upgraded SolverParameter text proto" in out
    sp = caffe.frontend.read_text_file(tmp_path / "new.prototxt", pb.SolverParameter())
    assert sp.type == "AdaGrad" and not sp.HasField("solver_type") and sp.net == "n.prototxt"


def test_device_query_reports_what_torch_sees(capsys):
    import torch
    rc, out, _ = run_cmd(capsys, "device-query")
    assert rc == 0
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    assert "CUDA devices:" in out and out.split("CUDA devices:")[1].split()[0] == str(count)
    for i in range(count):
        assert torch.cuda.get_device_name(i) in out


def test_parse_log_writes_parse_log_py_tables_byte_for_byte(capsys, tmp_path):
    log = tmp_path / "caffe_train.log"
    log.write_bytes((DATA / "parse_log" / "caffe_train.log").read_bytes())
    rc, out, _ = run_cmd(capsys, "parse-log", log, tmp_path, "--verbose")
    assert rc == 0 and f"Wrote {log}.train" in out
    for suffix in (".train", ".test"):
        assert (tmp_path / f"caffe_train.log{suffix}").read_bytes() == \
            (DATA / "parse_log" / f"caffe_train.log{suffix}").read_bytes(), suffix


def test_parse_log_leaves_a_lone_first_row_out_as_parse_log_py(capsys, tmp_path):
    # the fixture's first 13 lines: one test and one train row at iteration 0; BVLC's parse_log.py
    # writes neither file for it ("Not writing ...; no lines to write")
    lines = (DATA / "parse_log" / "caffe_train.log").read_text().splitlines(keepends=True)
    (tmp_path / "short.log").write_text("".join(lines[:13]))
    rc, out, _ = run_cmd(capsys, "parse-log", tmp_path / "short.log", tmp_path, "--verbose")
    assert rc == 0
    assert out.splitlines() == [f"Not writing {tmp_path / 'short.log'}.train; no lines to write",
                                f"Not writing {tmp_path / 'short.log'}.test; no lines to write"]
    assert not list(tmp_path.glob("short.log.*"))


def test_detect_bad_inputs_are_one_line(model, capsys, tmp_path):
    common = ["--model_def", model / "deploy.prototxt", "--pretrained_model", model / "w.caffemodel", "--mean_file", ""]
    (tmp_path / "w.csv").write_text("filename,xmin,ymin\nim.png,1,2\n")
    rc, _, err = run_cmd(capsys, "detect", tmp_path / "w.csv", tmp_path / "o.csv", *common)
    assert rc == 1 and err.strip().splitlines()[-1].endswith("w.csv:1: the header lacks ymax, xmax (found filename, xmin, ymin)")
    (tmp_path / "list.txt").write_text(f"{model / 'im0.png'}\n")
    rc, _, err = run_cmd(capsys, "detect", tmp_path / "list.txt", tmp_path / "o.csv", "--crop_mode", "selective_search",
                         *common)
    assert rc == 1 and "needs the selective_search_ijcv_with_python package" in err.strip().splitlines()[-1]
