"""pycaffe's `caffe.draw` under netspec's name (`import netspec.draw`, `netspec.draw.draw_net_to_file`):
pydot graphs of a NetParameter. The implementation is netspec/pycaffe/draw.py; netspec's own
renderer (`netspec draw`) is netspec.diagram."""
from .pycaffe.draw import (BLOB_STYLE, LAYER_STYLE_DEFAULT, NEURON_LAYER_STYLE,  # noqa: F401
                           choose_color_by_layertype, draw_net, draw_net_to_file, get_edge_label,
                           get_layer_label, get_layer_lr_mult, get_pooling_types_dict, get_pydot_graph)

__all__ = ["choose_color_by_layertype", "draw_net", "draw_net_to_file", "get_edge_label", "get_layer_label",
           "get_layer_lr_mult", "get_pooling_types_dict", "get_pydot_graph"]
