"""pycaffe's `caffe.Layer`: the base class of Python layers (python/caffe/_caffe.cpp's Layer binding
and include/caffe/layers/python_layer.hpp).

    class Scale10(caffe.Layer):
        def setup(self, bottom, top): self.k = float(self.param_str or 10)
        def reshape(self, bottom, top): top[0].reshape(*bottom[0].data.shape)
        def forward(self, bottom, top): top[0].data[...] = self.k * bottom[0].data
        def backward(self, top, propagate_down, bottom): bottom[0].diff[...] = self.k * top[0].diff

A prototxt names it with `type: "Python" python_param { module: "mymodule" layer: "Scale10" }`;
the module is imported from sys.path (PYTHONPATH). Before `setup` netspec sets `param_str`, `phase`
(TRAIN 0, TEST 1) and `blobs` (`self.blobs.add_blob(*shape)` adds a learnable blob). The running
layer is netspec.layers.python_layer.
"""


class Layer:
    """Subclass and override setup, reshape, forward and backward (each does nothing by default)."""

    def __init__(self, layer_param=None):
        # pycaffe builds the layer from its LayerParameter; netspec keeps it for the user's code.
        self.layer_param = layer_param
        self.param_str = layer_param.python_param.param_str if layer_param is not None else ""
        self.blobs = []
        self.phase = 0

    @property
    def type(self) -> str:
        return "Python"

    def setup(self, bottom, top):
        """Once, when the net is built: read `param_str`, add blobs, check the bottoms."""

    def reshape(self, bottom, top):
        """Before every forward: give each top its shape with `top[i].reshape(*shape)`."""

    def forward(self, bottom, top):
        """Write `top[i].data` from `bottom[j].data`."""

    def backward(self, top, propagate_down, bottom):
        """Write `bottom[i].diff` (where propagate_down[i]) and blob diffs from `top[j].diff`."""
