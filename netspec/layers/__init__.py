"""Every Caffe layer type netspec knows, registered by importing its family module.

`layer_class("Convolution")` gives the class; `REGISTRY` maps every Caffe type string to its class.
"""

from importlib import import_module

from . import activation, conv, inner_product, inputs, loss, norm, pooling, structure  # noqa: F401
from . import indexing, parameter, reduce, spatial  # noqa: F401  (issue 11's catalog)
from . import loss_extra, recurrent  # noqa: F401
from . import python_layer  # noqa: F401  (type "Python": a user's pycaffe-style layer)
from . import hdf5_layers, image_data, memory_data, window_data  # noqa: F401  (issue 11: data layers)
from . import fork, rcnn, ssd  # noqa: F401  (layers of Caffe forks: README "Fork layers")
from .base import REGISTRY, Layer, layer_class, register

try:  # the Data layer (LMDB reader) lives with its transforms and prefetch
    import_module("netspec.layers.data_layer")
except ImportError as e:
    if e.name != "netspec.layers.data_layer":
        raise

__all__ = ["REGISTRY", "Layer", "layer_class", "register"]
