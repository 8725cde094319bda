"""Fork layers through ONNX export: the elementwise and indexing ones export and agree with eager
in ONNX's reference evaluator; DetectionOutput and ROIPooling, whose outputs depend on the data
through host code, are refused in one line (a trace would freeze one input's answer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from netspec.errors import NetspecError
from netspec.export_onnx import export_onnx
from netspec.frontend import load_net
from netspec.graph import compile_net

FORK_NET = """
layer { name: "in" type: "Input" top: "pool" top: "mask"
  input_param { shape { dim: 1 dim: 4 dim: 3 dim: 3 } } }
layer { name: "up" type: "Upsample" bottom: "pool" bottom: "mask" top: "up" upsample_param { scale: 2 } }
layer { name: "dw" type: "ConvolutionDepthwise" bottom: "up" top: "dw"
  convolution_param { kernel_size: 3 pad: 1 weight_filler { type: "gaussian" } bias_filler { type: "gaussian" } } }
layer { name: "sh" type: "ShuffleChannel" bottom: "dw" top: "sh" shuffle_channel_param { group: 2 } }
layer { name: "nm" type: "Normalize" bottom: "sh" top: "nm"
  norm_param { across_spatial: false channel_shared: false scale_filler { type: "gaussian" } } }
layer { name: "gap" type: "Pooling" bottom: "nm" top: "gap" pooling_param { pool: AVE global_pooling: true } }
layer { name: "ax" type: "Axpy" bottom: "gap" bottom: "nm" bottom: "sh" top: "ax" }
layer { name: "pm" type: "Permute" bottom: "ax" top: "pm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
"""


def compiled(tmp_path, text):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    net = compile_net(load_net(str(path)), source=str(path))
    net.fill(0)
    return net


@pytest.mark.slow
def test_fork_layers_export_to_onnx_and_agree_with_eager(tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    from onnx_reference import evaluator

    net = compiled(tmp_path, FORK_NET)
    export_onnx(net, str(tmp_path / "fork.onnx"), outputs=["pm"])
    model = onnx.load(str(tmp_path / "fork.onnx"))
    rng = np.random.default_rng(0)
    pool = rng.normal(size=(1, 4, 3, 3)).astype(np.float32)
    # a 2×2 max-pooling mask: each cell names one position of its own window in the 6×6 map
    mask = (np.arange(3)[:, None] * 12 + np.arange(3) * 2 + rng.integers(0, 2, (1, 4, 3, 3))
            + 6 * rng.integers(0, 2, (1, 4, 3, 3))).astype(np.float32)
    names = [i.name for i in model.graph.input]
    got = evaluator(model).run(None, dict(zip(names, (pool, mask))))[-1]
    with torch.no_grad():
        want = net.graph_module(outputs=["pm"])(torch.from_numpy(pool), torch.from_numpy(mask))["pm"].numpy()
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-5


@pytest.mark.parametrize("layer, text", [
    ("det", ('layer { name: "in" type: "Input" top: "loc" top: "conf" top: "prior" input_param { shape { dim: 1 '
             'dim: 4 } shape { dim: 1 dim: 2 } shape { dim: 1 dim: 2 dim: 4 } } }\n'
             'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior" top: "det" '
             'detection_output_param { num_classes: 2 } }')),
    ("roi", ('layer { name: "in" type: "Input" top: "x" top: "rois" input_param { shape { dim: 1 dim: 2 dim: 4 '
             'dim: 4 } shape { dim: 3 dim: 5 } } }\n'
             'layer { name: "roi" type: "ROIPooling" bottom: "x" bottom: "rois" top: "roi" '
             'roi_pooling_param { pooled_h: 2 pooled_w: 2 } }')),
])
def test_data_dependent_fork_layers_are_refused_in_one_line(tmp_path, layer, text):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    net = compiled(tmp_path, text)
    with pytest.raises(NetspecError, match=f"layer\\(s\\) {layer} .* cannot be exported to ONNX") as e:
        export_onnx(net, str(tmp_path / "x.onnx"))
    assert "\n" not in str(e.value)
