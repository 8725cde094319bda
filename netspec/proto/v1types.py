"""Legacy Caffe layer types -> current type strings (follows src/caffe/util/upgrade_proto.cpp).

V1 nets (2014-2015, e.g. the BVLC AlexNet and CaffeNet .caffemodel files) store layers in
NetParameter.layers as V1LayerParameter with an enum `type` (UpgradeV1LayerType). V0 nets (before
2014) wrap a V0LayerParameter with a lower-case string `type` (UpgradeV0LayerType, via the V1 enum).
"""
from __future__ import annotations

from . import pb

# UpgradeV1LayerType: V1LayerParameter.LayerType name -> type string.
V1_LAYER_TYPES = {
    "NONE": "", "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution", "DATA": "Data", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN", "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}

# The same table keyed by the enum's number, as it appears in binary files. A number the schema does
# not know reads as NONE, as protobuf stores it as an unknown field and `type` keeps its default.
V1_LAYER_TYPES_BY_NUMBER = {
    pb.V1LayerParameter.LayerType.Value(name): type_name for name, type_name in V1_LAYER_TYPES.items()
}

# UpgradeV0LayerType: V0 type string -> V1 enum name ("padding" layers have no blobs and are merged
# into the next convolution by Caffe's UpgradeV0PaddingLayers).
V0_LAYER_TYPES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION", "data": "DATA",
    "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS", "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT", "im2col": "IM2COL", "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS", "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING", "relu": "RELU",
    "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS", "split": "SPLIT",
    "tanh": "TANH", "window_data": "WINDOW_DATA",
}


def v1_type(number: int) -> str:
    """The type string of a V1LayerParameter.type number."""
    return V1_LAYER_TYPES_BY_NUMBER.get(number, "")


def v0_type(name: str) -> str:
    """The type string of a V0LayerParameter.type ("conv" -> "Convolution"); unknown names pass through
    unchanged so that errors can show them."""
    return V1_LAYER_TYPES[V0_LAYER_TYPES[name]] if name in V0_LAYER_TYPES else name
