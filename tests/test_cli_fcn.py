"""An FCN-style net as FCN's voc-fcn32s builds it — a padded convolution, a score layer, a
Deconvolution upsampling by 2, and a Crop back onto the data blob — trains from `netspec train`,
learns, snapshots, and resumes to the very weights of a straight run."""

from __future__ import annotations

import os
import re

import numpy as np

from netspec.cli import main
from netspec.formats.caffemodel import read_weights

NET = """name: "fcn_tiny"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 2 dim: 3 dim: 16 dim: 16 } shape { dim: 2 dim: 1 dim: 16 dim: 16 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 10 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "score" type: "Convolution" bottom: "pool1" top: "score"
  convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { name: "upscore" type: "Deconvolution" bottom: "score" top: "upscore" param { lr_mult: 0 }
  convolution_param { num_output: 2 kernel_size: 4 stride: 2 group: 2 bias_term: false weight_filler { type: "bilinear" } } }
layer { name: "crop" type: "Crop" bottom: "upscore" bottom: "data" top: "crop" crop_param { axis: 2 offset: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "crop" bottom: "label" top: "loss" }
"""
SOLVER = ('net: "net.prototxt" base_lr: 0.1 momentum: 0.9 lr_policy: "fixed" display: 1 max_iter: 8 '
          'snapshot: 4 snapshot_prefix: "snap/fcn" random_seed: 3 solver_mode: CPU\n')


def test_fcn_style_net_trains_snapshots_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "snap").mkdir()
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    assert main(["train", "solver.prototxt"]) == 0
    err = capsys.readouterr().err
    losses = [float(v) for v in re.findall(r"Iteration \d+ \(.*?\), loss = ([\d.e+-]+)", err)]
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0], err[-2000:]
    straight = read_weights(tmp_path / "snap" / "fcn_iter_8.caffemodel")
    # the Deconvolution kept its bilinear weights (lr_mult 0): 2x upsampling kernel of FCN
    k = np.array([0.25, 0.75, 0.75, 0.25], np.float32)
    np.testing.assert_array_equal(straight["upscore"][1][0][0, 0], np.outer(k, k))
    os.remove(tmp_path / "snap" / "fcn_iter_8.caffemodel")
    assert main(["train", "solver.prototxt", "-snapshot", "snap/fcn_iter_4.solverstate"]) == 0
    assert "Resuming from snap/fcn_iter_4.solverstate" in capsys.readouterr().err
    resumed = read_weights(tmp_path / "snap" / "fcn_iter_8.caffemodel")
    for name in ("conv1", "score"):
        for a, b in zip(straight[name][1], resumed[name][1]):
            assert np.array_equal(a, b), f"{name}: worst difference {np.abs(a - b).max()}"
