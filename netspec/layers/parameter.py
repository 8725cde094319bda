"""Parameter: a learnable blob as a layer's top (Caffe's parameter_layer.hpp).

The layer has no bottoms and one blob of parameter_param.shape; its top is that blob, so the
gradient reaching the top is the blob's diff and the solver updates it. Caffe allocates the blob
without a filler, so it starts at zero; a caffemodel or a pycaffe write gives it values.
"""

from __future__ import annotations

from .base import Layer, register


@register("Parameter")
class Parameter(Layer):
    exact_bottoms, exact_tops = 0, 1
    blob_names = ("value",)

    def setup(self, bottom_shapes):
        shape = tuple(self.param.shape.dim)
        if any(d < 0 for d in shape):
            raise self.error(f"parameter_param shape {list(shape)} has a negative dim")
        self.new_blob("value", shape)

    def infer_top_shapes(self, bottom_shapes):
        return [tuple(self.value.shape)]

    def forward(self):
        # A view, not the Parameter itself: the top is a graph node whose gradient reaches the blob,
        # so callers that detach source tops (data) can tell this one apart by its grad_fn.
        return self.value.view(self.value.shape)
