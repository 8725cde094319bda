"""InnerProduct, the fully connected layer (Caffe's inner_product_layer.cpp).

The bottom is flattened from `axis` on: K = product of those axes, and the top is
bottom.shape[:axis] + (num_output,). The weight blob is NxK, or KxN with `transpose: true`.
"""

from __future__ import annotations

import math

import torch.nn.functional as F

from .base import WeightBiasLayer, canonical_axis, register


@register("InnerProduct")
class InnerProduct(WeightBiasLayer):
    exact_bottoms = exact_tops = 1

    def setup(self, bottom_shapes):
        p, shape = self.param, bottom_shapes[0]
        if p.num_output == 0:
            raise self.error("num_output must be given and positive")
        self.axis = canonical_axis(p.axis, len(shape), self)
        self.k, self.n, self.transpose = math.prod(shape[self.axis :]), p.num_output, p.transpose
        self.new_weight_bias((self.k, self.n) if self.transpose else (self.n, self.k), self.n)

    def infer_top_shapes(self, bottom_shapes):
        shape = bottom_shapes[0]
        k = math.prod(shape[self.axis :])
        if k != self.k:
            raise self.shape_error(
                f"bottom '{self.lp.bottom[0]}' has shape {shape}, {k} inputs per row from axis "
                f"{self.axis}; the weights take {self.k}"
            )
        return [tuple(shape[: self.axis]) + (self.n,)]

    def forward(self, x):
        rows = x.reshape(tuple(x.shape[: self.axis]) + (self.k,))
        bias = self.bias if self.bias_term else None
        if not self.transpose:
            return F.linear(rows, self.weight, bias)
        y = rows @ self.weight
        return y + bias if bias is not None else y
