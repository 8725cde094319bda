"""The layer registry, and one smoke test over every registered layer type (netspec/layers)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from layer_runner import make_layer
from netspec.errors import NetspecError
from netspec.layers import REGISTRY, Layer, layer_class, register
from netspec.proto import pb

# type -> (LayerParameter text, bottom shapes, number of tops).
# Python layers' test module is found through sys.path, as Caffe finds them through PYTHONPATH.
sys.path.insert(0, str(Path(__file__).parent / "data" / "python_layers"))

SMOKE = {
    "AbsVal": ("", [(2, 3)], 1),
    "Python": ('python_param { module: "netspec_test_pylayers" layer: "Scale" param_str: "2" }', [(2, 3)], 1),
    "Accuracy": ("accuracy_param { top_k: 2 }", [(4, 3), (4,)], 2),
    "BNLL": ("", [(2, 3)], 1),
    "BatchNorm": ("", [(4, 3, 2, 2)], 1),
    "Bias": ("", [(2, 3, 4)], 1),
    "Clip": ("clip_param { min: -1 max: 1 }", [(2, 3)], 1),
    "Concat": ("", [(2, 3, 4), (2, 1, 4)], 1),
    "Convolution": (
        "convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 group: 2 }",
        [(2, 6, 7, 7)],
        1,
    ),
    "Deconvolution": (
        "convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 }",
        [(2, 6, 5, 5)],
        1,
    ),
    "Dropout": ("", [(2, 3)], 1),
    "DummyData": ("dummy_data_param { shape { dim: 2 dim: 3 } data_filler { type: 'gaussian' } }", [], 1),
    "ELU": ("", [(2, 3)], 1),
    "Eltwise": ("eltwise_param { operation: MAX }", [(2, 3), (2, 3), (2, 3)], 1),
    "EuclideanLoss": ("", [(2, 3), (2, 3)], 1),
    "Exp": ("", [(2, 3)], 1),
    "Flatten": ("", [(2, 3, 4)], 1),
    "InnerProduct": ("inner_product_param { num_output: 5 }", [(2, 3, 4)], 1),
    "Input": ("input_param { shape { dim: 2 dim: 3 } }", [], 2),
    "LRN": ("lrn_param { local_size: 3 }", [(2, 4, 3, 3)], 1),
    "Log": ("log_param { shift: 10 }", [(2, 3)], 1),
    "PReLU": ("", [(2, 3, 4)], 1),
    "Pooling": ("pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 }", [(2, 3, 6, 6)], 2),
    "Power": ("power_param { power: 2 }", [(2, 3)], 1),
    "ReLU": ("", [(2, 3)], 1),
    "Reshape": ("reshape_param { shape { dim: -1 } }", [(2, 3)], 1),
    "Scale": ("scale_param { bias_term: true }", [(2, 3, 4)], 1),
    "Sigmoid": ("", [(2, 3)], 1),
    "Silence": ("", [(2, 3)], 0),
    "Slice": ("slice_param { axis: 0 }", [(4, 3)], 2),
    "Softmax": ("", [(2, 3)], 1),
    "SoftmaxWithLoss": ("", [(2, 3, 2), (2, 2)], 2),
    "Split": ("", [(2, 3)], 3),
    "Swish": ("", [(2, 3)], 1),
    "TanH": ("", [(2, 3)], 1),
    "Threshold": ("", [(2, 3)], 1),
    "ArgMax": ("argmax_param { top_k: 2 }", [(2, 3, 4)], 1),
    "BatchReindex": ("", [(3, 2), (4,)], 1),
    "Crop": ("crop_param { axis: 1 offset: 1 }", [(2, 5, 6), (2, 3, 4)], 1),
    "Embed": ("embed_param { input_dim: 2 num_output: 3 }", [(2, 3)], 1),
    "Filter": ("", [(4, 3), (4,)], 1),
    "Im2col": ("convolution_param { kernel_size: 2 }", [(2, 3, 4, 4)], 1),
    "MVN": ("", [(2, 3, 4)], 1),
    "Parameter": ("parameter_param { shape { dim: 2 dim: 3 } }", [], 1),
    "Reduction": ("reduction_param { operation: MEAN axis: 1 }", [(2, 3, 4)], 1),
    "SPP": ("spp_param { pyramid_height: 2 }", [(2, 3, 5, 5)], 1),
    "Tile": ("tile_param { tiles: 2 }", [(2, 3)], 1),
    "ContrastiveLoss": ("", [(4, 3, 1, 1), (4, 3, 1, 1), (4, 1, 1, 1)], 1),
    "HingeLoss": ("hinge_loss_param { norm: L2 }", [(4, 3), (4,)], 1),
    "InfogainLoss": ("infogain_loss_param { axis: 1 }", [(4, 3), (4,), (3, 3)], 2),
    "MultinomialLogisticLoss": ("", [(4, 3), (4,)], 1),
    "SigmoidCrossEntropyLoss": ("loss_param { ignore_label: 1 }", [(4, 3), (4, 3)], 1),
    "LSTM": ("recurrent_param { num_output: 5 }", [(3, 2, 4), (3, 2)], 1),
    "RNN": ("recurrent_param { num_output: 5 expose_hidden: true }", [(3, 2, 4), (3, 2), (1, 2, 5)], 2),
    "LSTMUnit": ("", [(1, 2, 3), (1, 2, 12), (1, 2)], 2),
    # fork layers (README "Fork layers"); one prior and two classes make exactly one detection
    "Permute": ("permute_param { order: 0 order: 2 order: 3 order: 1 }", [(2, 3, 4, 5)], 1),
    "PriorBox": ("prior_box_param { min_size: 4 max_size: 8 aspect_ratio: 2 }", [(1, 2, 3, 3), (1, 3, 12, 12)], 1),
    "Normalize": ("norm_param { channel_shared: false }", [(2, 3, 2, 2)], 1),
    "DetectionOutput": ("detection_output_param { num_classes: 2 }", [(1, 4), (1, 2), (1, 2, 4)], 1),
    "ROIPooling": ("roi_pooling_param { pooled_h: 2 pooled_w: 2 }", [(1, 3, 4, 4), (3, 5)], 1),
    "SmoothL1Loss": ("", [(2, 3), (2, 3), (2, 3), (2, 3)], 1),
    "Upsample": ("upsample_param { scale: 2 }", [(1, 2, 2, 2), (1, 2, 2, 2)], 1),
    "ShuffleChannel": ("shuffle_channel_param { group: 2 }", [(1, 4, 2, 2)], 1),
    "ConvolutionDepthwise": ("convolution_param { kernel_size: 3 pad: 1 }", [(1, 4, 3, 3)], 1),
    "Axpy": ("", [(2, 3, 1, 1), (2, 3, 2, 2), (2, 3, 2, 2)], 1),
}
# bottom 1 holds class labels, or 0/1 indices (BatchReindex's rows, Filter's selector)
LABELLED = {"Accuracy", "SoftmaxWithLoss", "BatchReindex", "Filter", "HingeLoss", "InfogainLoss",
            "MultinomialLogisticLoss"}
IDS = {"Embed"}  # bottom 0 holds ids < 2
DATA_BATCH = {"Filter"}  # the tops' batch size depends on the data (the whole batch before any)
NEEDS_FILES = {"Data": "reads an LMDB; tested in the Data layer's own tests",
               "HDF5Data": "reads .h5 files; tested in test_layers_hdf5.py",
               "HDF5Output": "writes an .h5 file; tested in test_layers_hdf5.py",
               "ImageData": "reads image files; tested in test_layers_image_data.py",
               "WindowData": "reads a window file and images; tested in test_layers_window_data.py",
               "MemoryData": "serves arrays given by Net.set_input_arrays; tested in test_layers_memory_data.py"}


def _bottoms(type_name, shapes):
    return [
        torch.randint(0, 2, s).float() if (i == 1 and type_name in LABELLED) or (i == 0 and type_name in IDS)
        else torch.rand(s)
        for i, s in enumerate(shapes)
    ]


@pytest.mark.parametrize("phase", [pb.TRAIN, pb.TEST], ids=["TRAIN", "TEST"])
@pytest.mark.parametrize("type_name", sorted(REGISTRY))
def test_every_type_builds_and_runs(type_name, phase):
    if type_name in NEEDS_FILES:
        pytest.skip(NEEDS_FILES[type_name])
    assert type_name in SMOKE, f"layer type '{type_name}' has no smoke case in SMOKE: add one"
    text, shapes, tops = SMOKE[type_name]
    layer = make_layer(f'type: "{type_name}" {text}', shapes, phase=phase, tops=tops)
    layer.fill(torch.Generator().manual_seed(0))
    bottoms = _bottoms(type_name, shapes)
    out = layer(*bottoms)
    out = out if isinstance(out, tuple) else (out,)
    if type_name in DATA_BATCH:
        assert [tuple(t.shape[1:]) for t in out] == [s[1:] for s in layer.top_shapes], type_name
    else:
        assert [tuple(t.shape) for t in out] == layer.top_shapes, type_name
    assert all(torch.isfinite(t).all() for t in out), type_name
    assert len(layer.blobs) == len(layer.blob_names)


@pytest.mark.cuda
@pytest.mark.parametrize("type_name", sorted(SMOKE))
def test_every_type_runs_on_cuda_as_on_cpu(type_name):
    text, shapes, tops = SMOKE[type_name]
    layer = make_layer(f'type: "{type_name}" {text}', shapes, phase=pb.TEST, tops=tops)
    layer.fill(torch.Generator().manual_seed(0))
    bottoms = _bottoms(type_name, shapes)
    want = layer(*bottoms)
    got = layer.cuda()(*[b.cuda() for b in bottoms])
    want, got = (t if isinstance(t, tuple) else (t,) for t in (want, got))
    for w, g in zip(want, got):
        assert g.device.type == "cuda" and g.shape == w.shape, type_name
        if type_name != "DummyData":  # random draws
            assert torch.allclose(g.cpu(), w, rtol=1e-4, atol=1e-5), type_name


def test_duplicate_registration_raises():
    with pytest.raises(ValueError, match="'ReLU' is registered twice"):
        register("ReLU")(type("AnotherReLU", (Layer,), {}))
    assert REGISTRY["ReLU"].__name__ == "ReLU"


def test_unknown_type_lists_known_ones():
    with pytest.raises(
        NetspecError, match=r"layer 'x': unknown layer type 'Convolutoin' \(known types: .*Convolution"
    ):
        layer_class("Convolutoin", "x")


def test_arity_is_checked_with_the_layer_name():
    with pytest.raises(NetspecError, match=r"layer 'test': ReLU takes 1 bottom blob\(s\), found 2"):
        make_layer('type: "ReLU"', [(2,), (2,)])
