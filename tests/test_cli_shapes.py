"""`netspec shapes`: one row per layer with device, top shapes and parameters, the total, and data
layers whose LMDB is missing shown with assumed shapes (netspec/cli/cmd_shapes.py)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from netspec.cli import main
from netspec.frontend import load_net
from netspec.graph import compile_net

ROOT = Path(__file__).resolve().parent.parent
ALEXNET_DEPLOY = ROOT / "models" / "alexnet" / "deploy.prototxt"
CAFFENET_TRAIN_VAL = ROOT / "models" / "caffenet" / "train_val.prototxt"
FIXTURES = Path(__file__).resolve().parent / "data" / "caffe"


def shapes(capsys, *argv) -> tuple[int, dict[str, list[str]], str, str]:
    """Run the command; return its exit code, table rows by layer name, stdout and stderr."""
    rc = main(["shapes", *map(str, argv)])
    out, err = capsys.readouterr()
    rows = {}
    for line in out.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) >= 2 and not set(cells[0]) <= {"-"}:
            rows[cells[0]] = cells
    return rc, rows, out, err


def test_alexnet_deploy_table(capsys):
    rc, rows, out, _ = shapes(capsys, ALEXNET_DEPLOY)
    assert rc == 0
    net = compile_net(load_net(ALEXNET_DEPLOY), device_map="cpu", source=str(ALEXNET_DEPLOY))
    for lp in net.layer_params:
        assert lp.name in rows, f"layer {lp.name} missing from:\n{out}"
        assert rows[lp.name][1] == lp.type
    total = sum(p.tensor.numel() for p in net.learnable_params())
    assert rows["total"][-1] == f"{total:,}", rows["total"]
    # devices and the paper's spatial sizes, as printed
    assert rows["conv1_1"][2] == "gpu1" and rows["fc8"][2] == "gpu0" and rows["data"][2] == "-"
    for layer, size in (("conv1_0", 55), ("pool1_1", 27), ("conv2_0", 27), ("pool2_1", 13),
                        ("conv3_0", 13), ("conv4_1", 13), ("conv5_0", 13), ("pool5_1", 6)):
        assert re.search(rf"10[×x]\d+[×x]{size}[×x]{size}$", rows[layer][3]), rows[layer]
    assert rows["conv1_0"][-1] == f"{48 * 3 * 11 * 11 + 48:,}"
    assert rows["relu1_0"][-1] == "0"


def test_missing_lmdb_is_replaced_by_assumed_shapes(capsys):
    rc, rows, out, _ = shapes(capsys, CAFFENET_TRAIN_VAL, "-phase", "TRAIN")
    assert rc == 0
    assert rows["data"][1] == "Data*"
    assert re.search(r"data 128[×x]3[×x]227[×x]227, label 128$", rows["data"][3]), rows["data"]
    assert "does not exist" in out and "assumed top shapes" in out
    assert "accuracy" not in rows and "loss" in rows          # TRAIN phase only
    assert re.search(r"fc8 128[×x]1000$", rows["fc8"][3])


@pytest.mark.parametrize("spec", ["data=2,3,227,227", "data=2x3x227x227"])
def test_input_shape_overrides_the_assumed_batch(capsys, spec):
    rc, rows, _, _ = shapes(capsys, CAFFENET_TRAIN_VAL, "--input-shape", spec)
    assert rc == 0
    assert re.search(r"data 2[×x]3[×x]227[×x]227, label 2$", rows["data"][3]), rows["data"]
    assert "accuracy_top5" in rows                             # TEST is the default phase


def test_existing_lmdb_gives_the_records_shape(capsys, monkeypatch):
    # data_net.prototxt reads lmdb_raw relative to its own folder (64x64 records, crop 57, batch 5)
    monkeypatch.chdir(FIXTURES)
    rc, rows, out, _ = shapes(capsys, "data_net.prototxt")
    assert rc == 0
    data = next(cells for name, cells in rows.items() if cells[1].startswith("Data"))
    assert data[1] == "Data" and "*" not in out
    assert re.search(r"5[×x]3[×x]57[×x]57, label 5$", data[3]), data


@pytest.mark.parametrize("bad", ["data=2,3,a", "=1,2", "data=0,3,4,4", "data"])
def test_bad_input_shape_is_a_one_line_error(capsys, bad):
    rc = main(["shapes", str(CAFFENET_TRAIN_VAL), "--input-shape", bad])
    _, err = capsys.readouterr()
    assert rc == 1 and "--input-shape" in err and len(err.strip().splitlines()) == 1, err


def test_data_layer_without_crop_needs_an_input_shape(capsys, tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text('layer { name: "d" type: "Data" top: "data" top: "label"\n'
                   '  data_param { source: "nowhere_lmdb" batch_size: 4 backend: LMDB } }\n'
                   'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"\n'
                   '  inner_product_param { num_output: 3 } }\n')
    rc = main(["shapes", str(net)])
    _, err = capsys.readouterr()
    assert rc == 1 and "give --input-shape data=N,C,H,W" in err, err
    rc, rows, _, _ = shapes(capsys, net, "--input-shape", "data=4,1,5,5")
    assert rc == 0 and rows["ip"][-1] == f"{3 * 25 + 3:,}"


def test_shared_parameters_count_once(capsys, tmp_path):
    net = tmp_path / "shared.prototxt"
    ip = ('layer {{ name: "{0}" type: "InnerProduct" bottom: "data" top: "{0}" param {{ name: "w" }}\n'
          '  param {{ name: "b" }} inner_product_param {{ num_output: 3 }} }}\n')
    net.write_text('layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 } } }\n'
                   + ip.format("a") + ip.format("b"))
    rc, rows, _, _ = shapes(capsys, net)
    assert rc == 0
    assert (rows["a"][-1], rows["b"][-1], rows["total"][-1]) == ("15", "0", "15")


def test_phase_is_parsed_case_insensitively(capsys):
    rc, rows, _, _ = shapes(capsys, CAFFENET_TRAIN_VAL, "--phase", "train")
    assert rc == 0 and "accuracy" not in rows
