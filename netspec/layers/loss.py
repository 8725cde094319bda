"""Losses and Accuracy (Caffe's softmax_loss_layer.cpp, euclidean_loss_layer.cpp, accuracy_layer.cpp).

Scores are (outer, C, inner...) with C on `axis`; labels hold outer·inner class indices (stored as
floats, as Caffe stores them). Loss tops are scalars with a default loss weight of 1.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import NetspecError
from ..proto import pb
from .base import Layer, canonical_axis, register

N = pb.LossParameter
_LOG_FLT_MIN = math.log(1.1754943508222875e-38)  # Caffe clamps prob at FLT_MIN before the log


class _Classify(Layer):
    """Shared bookkeeping: class axis, outer/inner sizes (recomputed per call, as Caffe's Reshape
    does, so the batch size may change), label count check."""

    exact_bottoms = 2

    def _geometry(self, scores, labels) -> tuple[int, int, int]:
        """(outer, classes, inner) of a scores shape, checking the labels shape against it."""
        outer, inner = math.prod(scores[: self.axis]), math.prod(scores[self.axis + 1 :])
        if math.prod(labels) != outer * inner:
            raise self.shape_error(
                f"bottom 1 '{self.lp.bottom[1]}' has shape {tuple(labels)} ({math.prod(labels)} labels); "
                f"scores {tuple(scores)} with classes on axis {self.axis} need {outer * inner}"
            )
        return outer, scores[self.axis], inner

    def _setup_axis(self, bottom_shapes, axis: int):
        self.axis = canonical_axis(axis, len(bottom_shapes[0]), self)
        self.classes = self._geometry(*bottom_shapes)[1]
        add_label_flag(self)

    def _split(self, x, label):
        """Scores as (outer, C, inner) and labels as (outer, inner) int64."""
        outer, classes, inner = self._geometry(x.shape, label.shape)
        return x.reshape(outer, classes, inner), label.reshape(outer, inner).long()

    def _valid(self, labels):
        """The (outer, inner) mask of labels that count: all but ignore_label."""
        if self.ignore_label is None:
            return torch.ones_like(labels, dtype=torch.bool)
        return labels != self.ignore_label

    # ---- label range (Caffe: CHECK_LT(label_value, prob_.shape(softmax_axis_))) --------------------
    def _usable(self, labels, valid, classes: int):
        """`valid` without the labels outside [0, classes); the first such label is kept on the device
        in `label_flag` ([1, label], else [0, 0]), for the solver to read at display time (a check here
        would make the host wait for the device every iteration)."""
        bad = valid & ((labels < 0) | (labels >= classes))
        if labels.device.type != "meta" and self.label_flag.device == labels.device:
            note_bad_labels(self.label_flag, labels, bad)
        return valid & ~bad


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(_Classify):
    """Mean of -log softmax(x)[label]; top 1 (optional) is the softmax itself."""

    min_tops, max_tops = 1, 2
    default_loss_weight = 1.0

    def setup(self, bottom_shapes):
        self._setup_axis(bottom_shapes, self.param.axis)
        lp = self.lp.loss_param
        self.ignore_label = lp.ignore_label if lp.HasField("ignore_label") else None
        if not lp.HasField("normalization") and lp.HasField("normalize"):
            self.normalization = N.VALID if lp.normalize else N.BATCH_SIZE
        else:
            self.normalization = lp.normalization

    def infer_top_shapes(self, bottom_shapes):
        self._geometry(*bottom_shapes)
        return [()] + [bottom_shapes[0]] * (len(self.lp.top) - 1)

    def _normalizer(self, valid):
        """Caffe's get_normalizer, including its floor of 1; `valid` is the (outer, inner) mask."""
        outer, inner = valid.shape
        # Sizes stay ints (symbolic under torch.export): float() would fix an exported graph's batch.
        n = {N.FULL: outer * inner, N.BATCH_SIZE: outer, N.NONE: 1}.get(self.normalization)
        if n is None:  # VALID
            return valid.sum().to(torch.float32).clamp(min=1.0)
        return torch.sym_max(1, n)

    def forward(self, x, label):
        scores, labels = self._split(x.float(), label)     # float32 under fp16/bf16 autocast too
        valid = self._usable(labels, self._valid(labels), scores.shape[1])
        logp = F.log_softmax(scores, dim=1).gather(1, torch.where(valid, labels, 0).unsqueeze(1)).squeeze(1)
        # The clamp changes the value only (log(FLT_MIN) floor); the gradient stays prob - 1 as in Caffe.
        logp = logp + (logp.clamp(min=_LOG_FLT_MIN) - logp).detach()
        loss = -(logp * valid).sum() / self._normalizer(valid)
        if self.num_tops == 1:
            return loss
        # Caffe's Backward reads only the loss top's diff: whatever reaches the prob top (a second
        # loss on it, its own loss_weight) counts in the loss but sends no gradient to the scores.
        return loss, F.softmax(x.detach(), dim=self.axis, dtype=torch.float32).to(x.dtype)


@register("EuclideanLoss")
class EuclideanLoss(Layer):
    """Σ (a - b)² / (2·N), N = the first axis."""

    exact_bottoms, exact_tops = 2, 1
    default_loss_weight = 1.0

    def infer_top_shapes(self, bottom_shapes):
        a, b = bottom_shapes
        if math.prod(a[1:]) != math.prod(b[1:]) or a[:1] != b[:1]:
            raise self.shape_error(f"bottoms have shapes {a} and {b}; they must have the same count per item")
        return [()]

    def forward(self, a, b):
        # float32: a squared difference of 256 already overflows float16
        return ((a.float() - b.reshape(a.shape).float()) ** 2).sum() / (2.0 * a.shape[0])


@register("Accuracy")
class Accuracy(_Classify):
    """Top-k accuracy: a label counts as right when fewer than top_k other scores are ≥ its score.

    Ties therefore count against the label. Top 1 (optional) holds the accuracy per class.
    Accuracy has no gradient.
    """

    min_tops, max_tops = 1, 2

    def setup(self, bottom_shapes):
        p = self.param
        self._setup_axis(bottom_shapes, p.axis)
        self.top_k = p.top_k
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None
        if self.top_k > self.classes:
            raise self.shape_error(
                f"top_k {self.top_k} is more than the {self.classes} classes of bottom "
                f"'{self.lp.bottom[0]}' {bottom_shapes[0]}"
            )

    def infer_top_shapes(self, bottom_shapes):
        classes = self._geometry(*bottom_shapes)[1]
        return [()] + [(classes,)] * (len(self.lp.top) - 1)

    def forward(self, x, label):
        with torch.no_grad():
            scores, labels = self._split(x.detach(), label.detach())
            valid = self._usable(labels, self._valid(labels), scores.shape[1])
            true = scores.gather(1, torch.where(valid, labels, 0).unsqueeze(1))
            better = (scores >= true).sum(dim=1) - 1  # the true class counts itself once
            right = (better < self.top_k) & valid
            acc = right.sum() / valid.sum().clamp(min=1)
            acc = acc.to(x.dtype)
            if self.num_tops == 1:
                return acc
            onehot = labels.unsqueeze(-1) == torch.arange(scores.shape[1], device=x.device)
            seen = (onehot & valid.unsqueeze(-1)).sum(dim=(0, 1))
            hits = (onehot & right.unsqueeze(-1)).sum(dim=(0, 1))
            per_class = torch.where(seen > 0, hits / seen.clamp(min=1), torch.zeros((), device=x.device))
            return acc, per_class.to(x.dtype)


def add_label_flag(layer: Layer) -> None:
    """`label_flag`: the first out-of-range label ([1, label], else [0, 0]) kept on the layer's
    device by note_bad_labels, and read by the solver and `netspec test` (label_flags)."""
    layer.register_buffer("label_flag", torch.zeros(2, dtype=torch.int64), persistent=False)


def note_bad_labels(flag: torch.Tensor, labels: torch.Tensor, bad: torch.Tensor) -> None:
    """Keep the first out-of-range label in `flag` ([1, label]; left as it is once set), on the
    labels' device: no host read."""
    flat, bad_flat = labels.reshape(-1), bad.reshape(-1)
    first = flat.gather(0, bad_flat.to(torch.int64).argmax().reshape(1))
    note = torch.cat([bad_flat.any().reshape(1).to(torch.int64), first])
    flag.copy_(torch.where(flag[0] > 0, flag, note))


def label_flags(net) -> list:
    """(layer, its label_flag) for every layer of `net` that checks its label range on the device."""
    return [(step.layer, step.layer.label_flag) for step in net.steps
            if isinstance(getattr(step.layer, "label_flag", None), torch.Tensor)]


def label_error(layer, flag, where: str) -> NetspecError | None:
    """An error for a label_flag read on the host (None if it holds no out-of-range label); the flag
    is cleared, so that a caller who goes on is told only of new ones."""
    if not flag[0]:
        return None
    layer.label_flag.zero_()
    return NetspecError(f"{where}: label {int(flag[1])} is outside [0, {layer.classes}) (the classes of bottom "
                        f"'{layer.lp.bottom[0]}'); fix the data or set ignore_label",
                        layer=layer.name)
