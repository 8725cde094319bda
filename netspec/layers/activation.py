"""Element-wise activations, Dropout and Softmax (Caffe's relu_layer.cpp, sigmoid_layer.cpp,
tanh_layer.cpp, dropout_layer.cpp, softmax_layer.cpp, and the smaller neuron layers).

Each is one top per bottom, same shape, and usually runs in place in Caffe's prototxt
(`bottom: "x" top: "x"`); torch's autograd makes that distinction irrelevant here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..proto import pb
from .base import Layer, canonical_axis, register


class _Neuron(Layer):
    exact_bottoms = exact_tops = 1

    def infer_top_shapes(self, bottom_shapes):
        return [bottom_shapes[0]]


@register("ReLU")
class ReLU(_Neuron):
    """max(x, 0) + negative_slope·min(x, 0); the gradient at 0 is negative_slope, as in Caffe."""

    def setup(self, bottom_shapes):
        self.slope = self.param.negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.slope) if self.slope else F.relu(x)


@register("Sigmoid")
class Sigmoid(_Neuron):
    def forward(self, x):
        return torch.sigmoid(x)


@register("TanH")
class TanH(_Neuron):
    def forward(self, x):
        return torch.tanh(x)


@register("Dropout")
class Dropout(_Neuron):
    """TRAIN: zero each unit with probability p and scale the kept ones by 1/(1-p). TEST: identity."""

    def setup(self, bottom_shapes):
        self.ratio = self.param.dropout_ratio
        if not 0.0 < self.ratio < 1.0:
            raise self.error(f"dropout_ratio must be in (0, 1), found {self.ratio}")

    def forward(self, x):
        if self.phase != pb.TRAIN:
            return x
        return F.dropout(x, self.ratio, training=True)


@register("Softmax")
class Softmax(_Neuron):
    def setup(self, bottom_shapes):
        self.axis = canonical_axis(self.param.axis, len(bottom_shapes[0]), self)

    def forward(self, x):
        return F.softmax(x, dim=self.axis, dtype=torch.float32).to(x.dtype)   # exp in float32 under autocast


@register("AbsVal")
class AbsVal(_Neuron):
    def forward(self, x):
        return x.abs()


@register("BNLL")
class BNLL(_Neuron):
    """log(1 + eˣ), the binomial normal log likelihood."""

    def forward(self, x):
        return F.softplus(x)


@register("ELU")
class ELU(_Neuron):
    def setup(self, bottom_shapes):
        self.alpha = self.param.alpha

    def forward(self, x):
        return F.elu(x, self.alpha)


@register("Power")
class Power(_Neuron):
    """(shift + scale·x)^power."""

    def setup(self, bottom_shapes):
        p = self.param
        self.power, self.scale, self.shift = p.power, p.scale, p.shift

    def forward(self, x):
        return (self.shift + self.scale * x).pow(self.power)


class _BaseNeuron(_Neuron):
    """Exp and Log read base (-1 meaning e), scale and shift."""

    def setup(self, bottom_shapes):
        p = self.param
        if p.base != -1 and p.base <= 0:
            raise self.error(f"base must be -1 (for e) or positive, found {p.base}")
        self.ln_base = 1.0 if p.base == -1 else math.log(p.base)
        self.scale, self.shift = p.scale, p.shift


@register("Exp")
class Exp(_BaseNeuron):
    """base^(shift + scale·x)."""

    def forward(self, x):
        return torch.exp(self.ln_base * (self.shift + self.scale * x))


@register("Log")
class Log(_BaseNeuron):
    """log_base(shift + scale·x)."""

    def forward(self, x):
        return torch.log(self.shift + self.scale * x) / self.ln_base


@register("Threshold")
class Threshold(_Neuron):
    """1 where x > threshold, else 0; no gradient (Caffe has no backward for it)."""

    def setup(self, bottom_shapes):
        self.threshold = self.param.threshold

    def forward(self, x):
        return (x.detach() > self.threshold).to(x.dtype)


@register("Clip")
class Clip(_Neuron):
    def setup(self, bottom_shapes):
        self.min, self.max = self.param.min, self.param.max

    def forward(self, x):
        return x.clamp(self.min, self.max)


@register("Swish")
class Swish(_Neuron):
    """x · sigmoid(β·x)."""

    def setup(self, bottom_shapes):
        self.beta = self.param.beta

    def forward(self, x):
        return x * torch.sigmoid(self.beta * x)


@register("PReLU")
class PReLU(_Neuron):
    """max(x, 0) + a·min(x, 0) with learned slopes a, one per channel or one shared (a scalar blob)."""

    blob_names = ("slope",)

    def setup(self, bottom_shapes):
        shape = bottom_shapes[0]
        if len(shape) < 2:
            raise self.shape_error(
                f"bottom '{self.lp.bottom[0]}' has shape {shape}; PReLU needs a channel axis"
            )
        self.shared = self.param.channel_shared
        self.new_blob("slope", () if self.shared else (shape[1],))

    def filler(self, blob_name):
        p = self.param
        return p.filler if p.HasField("filler") else pb.FillerParameter(type="constant", value=0.25)

    def forward(self, x):
        a = self.slope if self.shared else self.slope.reshape((1, -1) + (1,) * (x.dim() - 2))
        return torch.where(x > 0, x, x * a)
