"""Every Caffe layer type netspec knows, registered by importing its family module.

`layer_class("Convolution")` gives the class; `REGISTRY` maps every Caffe type string to its class.
"""

from importlib import import_module

from . import activation, conv, inner_product, inputs, loss, norm, pooling, structure  # noqa: F401
from .base import REGISTRY, Layer, layer_class, register

try:  # the Data layer (LMDB reader) lives with its transforms and prefetch
    import_module("netspec.layers.data_layer")
except ImportError as e:
    if e.name != "netspec.layers.data_layer":
        raise

__all__ = ["REGISTRY", "Layer", "layer_class", "register"]
