"""The other loss layers of Caffe: ContrastiveLoss, HingeLoss, InfogainLoss, MultinomialLogisticLoss and
SigmoidCrossEntropyLoss (Caffe's contrastive_loss_layer.cpp, hinge_loss_layer.cpp, infogain_loss_layer.cpp,
multinomial_logistic_loss_layer.cpp, sigmoid_cross_entropy_loss_layer.cpp and loss_layer.cpp).

Each loss is a scalar top with a default loss weight of 1. Losses are computed in float32 at least (half
and bfloat16 inputs are widened) so that autocast never narrows them. Where Caffe's hand-written backward differs from the exact
derivative of its forward (probabilities floored at 1e-20 before the log, ContrastiveLoss's 1e-4 in
the distance), the forward keeps Caffe's value and the gradient is made to be Caffe's.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..formats.binaryproto import read_binaryproto
from ..proto import pb
from .base import Layer, canonical_axis, register
from .loss import add_label_flag, note_bad_labels

log = logging.getLogger("netspec")
N = pb.LossParameter
_LOG_THRESHOLD = 1e-20  # Caffe's kLOG_THRESHOLD


def _wide(x):
    """x in float32 at least: half and bfloat16 widen (autocast), float64 stays for gradient checks."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _value_with_grad(value, grad_path):
    """A tensor equal to `value` whose gradient is that of `grad_path` (Caffe's backward differs from
    the derivative of its forward in a few clamps)."""
    return grad_path + (value - grad_path).detach()


def _floored_log(p):
    """log(max(p, 1e-20)) whose gradient is 1/max(p, 1e-20) everywhere, as Caffe's backward uses."""
    floored = p.clamp(min=_LOG_THRESHOLD)
    return torch.log(_value_with_grad(floored, p))


def _normalizer(mode: int, outer: int, inner: int, valid):
    """Caffe's LossLayer get_normalizer (SoftmaxWithLoss, Infogain, SigmoidCE), with its floor of 1."""
    if mode == N.VALID:
        return valid.sum().to(torch.float32).clamp(min=1.0)
    return max(1.0, {N.FULL: float(outer * inner), N.BATCH_SIZE: float(outer), N.NONE: 1.0}[mode])


def _checked_at_once(labels) -> bool:
    """Labels on the CPU are checked as they come: reading the check costs nothing there."""
    return labels.device.type == "cpu"


def _labels_in_range(layer: Layer, labels, classes: int, valid=None):
    """Labels outside [0, classes), where Caffe would read past the row (or DCHECK): on the CPU a
    one-line error at once; on a GPU the first one is kept in `label_flag` for the solver's next
    read (no host wait every iteration) and the labels come back clamped, so that nothing indexes
    past the row meanwhile. Returns the labels to use."""
    if torch.compiler.is_compiling() or labels.device.type == "meta":
        return labels
    bad = (labels < 0) | (labels >= classes)
    if valid is not None:
        bad &= valid
    if not _checked_at_once(labels):
        layer.classes = classes
        note_bad_labels(layer.label_flag, labels, bad)
        return labels.clamp(0, classes - 1)
    if bool(bad.any()):
        found = labels[bad][0].item()
        raise layer.run_error(f"label {found} is out of range: bottom '{layer.lp.bottom[1]}' must hold "
                              f"class indices in [0, {classes})")
    return labels


class _Loss(Layer):
    """LossLayer: a scalar top, loss weight 1 by default, bottoms 0 and 1 agree on their first axis."""

    exact_tops = 1
    default_loss_weight = 1.0

    def infer_top_shapes(self, bottom_shapes):
        a, b = bottom_shapes[0], bottom_shapes[1]
        if a[:1] != b[:1]:
            raise self.shape_error(f"bottoms '{self.lp.bottom[0]}' {tuple(a)} and '{self.lp.bottom[1]}' "
                                   f"{tuple(b)} must have the same first axis (Caffe's LossLayer)")
        self.check_shapes(bottom_shapes)
        return [()] + [tuple(bottom_shapes[0])] * (len(self.lp.top) - 1)

    def check_shapes(self, bottom_shapes) -> None:
        """Layer-specific shape checks (Caffe's Reshape CHECKs)."""


def _ones_after_axis(shape, start: int) -> bool:
    """Caffe's legacy channels()/height()/width() == 1 from `start` on (missing axes count as 1)."""
    return all(d == 1 for d in tuple(shape)[start:4]) and len(shape) <= 4


@register("ContrastiveLoss")
class ContrastiveLoss(_Loss):
    """Siamese loss over pairs (a_i, b_i) with similarity y_i: Σ [y d² + (1-y) max(m - d, 0)²] / 2N, or
    with legacy_version max(m - d², 0) for dissimilar pairs. a, b are N×C×1×1, y is N×1×1×1."""

    exact_bottoms = 3

    def setup(self, bottom_shapes):
        p = self.param
        self.margin, self.legacy = float(p.margin), p.legacy_version

    def check_shapes(self, bottom_shapes):
        a, b, y = (tuple(s) for s in bottom_shapes)
        if len(a) < 2 or len(b) < 2 or a[1] != b[1] or not (_ones_after_axis(a, 2) and _ones_after_axis(b, 2)):
            raise self.shape_error(f"bottoms 0 and 1 must be N×C×1×1 with the same C; found {a} and {b}")
        if not _ones_after_axis(y, 1) or y[:1] != a[:1]:
            raise self.shape_error(f"bottom 2 (similarity) must be N×1×1×1 for N = {a[0]}; found {y}")

    def forward(self, a, b, y):
        n = a.shape[0]
        diff = (_wide(a) - _wide(b)).reshape(n, -1)
        dist_sq = (diff * diff).sum(1)
        similar = y.detach().reshape(n).to(torch.int64) != 0  # Caffe truncates y to int
        if self.legacy:
            apart = (self.margin - dist_sq).clamp(min=0)
        else:
            apart = (self.margin - self._distance(diff, dist_sq)).clamp(min=0) ** 2
        return torch.where(similar, dist_sq, apart).sum() / n / 2

    @staticmethod
    def _distance(diff, dist_sq):
        """sqrt(dist²), differentiated as diff / (dist + 1e-4) the way Caffe's backward does (so also
        finite when a pair coincides)."""
        dist = dist_sq.detach().sqrt()
        surrogate = (diff * (diff / (dist + 1e-4).unsqueeze(1)).detach()).sum(1)
        return _value_with_grad(dist, surrogate)


@register("HingeLoss")
class HingeLoss(_Loss):
    """One-vs-all hinge: t = max(0, 1 + x·δ), δ = -1 at the label and +1 elsewhere; Σ t / N (L1) or
    Σ t² / N (L2). Bottom 0 is N×(dim...), bottom 1 N labels."""

    exact_bottoms = 2

    def setup(self, bottom_shapes):
        self.squared = self.param.norm == pb.HingeLossParameter.L2
        add_label_flag(self)

    def forward(self, x, label):
        n = x.shape[0]
        rows = _wide(x).reshape(n, -1)
        labels = label.detach().reshape(-1)[:n].to(torch.int64)  # Caffe reads the first N values
        labels = _labels_in_range(self, labels, rows.shape[1])
        sign = 1.0 - 2.0 * F.one_hot(labels, rows.shape[1]).to(rows.dtype)
        t = (1.0 + rows * sign).clamp(min=0)
        return (t * t if self.squared else t).sum() / n


@register("MultinomialLogisticLoss")
class MultinomialLogisticLoss(_Loss):
    """-Σ log(max(p[label], 1e-20)) / N over probabilities p (N×dim); labels are N×1×1×1."""

    exact_bottoms = 2

    def setup(self, bottom_shapes):
        add_label_flag(self)

    def check_shapes(self, bottom_shapes):
        if not _ones_after_axis(bottom_shapes[1], 1):
            raise self.shape_error(f"bottom 1 '{self.lp.bottom[1]}' (labels) must be N×1×1×1; "
                                   f"found {tuple(bottom_shapes[1])}")

    def forward(self, prob, label):
        n = prob.shape[0]
        rows = _wide(prob).reshape(n, -1)
        labels = label.detach().reshape(n).to(torch.int64)
        labels = _labels_in_range(self, labels, rows.shape[1])
        picked = rows.gather(1, labels.unsqueeze(1)).squeeze(1)
        return -_floored_log(picked).sum() / n


def _normalization(layer: Layer, default: int) -> int:
    """loss_param's normalization, its legacy `normalize` flag, or the layer's default."""
    lp = layer.lp.loss_param
    if lp.HasField("normalization"):
        return lp.normalization
    if lp.HasField("normalize"):
        return N.VALID if lp.normalize else N.BATCH_SIZE
    return default


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(_Loss):
    """Cross-entropy of sigmoid(x) against targets t in [0, 1] of the same count; targets equal to
    ignore_label are left out. Without loss_param it normalizes by the batch size (Caffe's default for
    this layer, unlike SoftmaxWithLoss)."""

    exact_bottoms = 2

    def setup(self, bottom_shapes):
        lp = self.lp.loss_param
        self.ignore_label = lp.ignore_label if lp.HasField("ignore_label") else None
        self.normalization = _normalization(self, N.BATCH_SIZE)

    def check_shapes(self, bottom_shapes):
        x, t = bottom_shapes
        if math.prod(x) != math.prod(t):
            raise self.shape_error(f"bottoms must have the same count; '{self.lp.bottom[0]}' {tuple(x)} has "
                                   f"{math.prod(x)}, '{self.lp.bottom[1]}' {tuple(t)} has {math.prod(t)}")

    def forward(self, x, target):
        n = x.shape[0]
        x = _wide(x).reshape(n, -1)
        t = target.detach().to(x.dtype).reshape(n, -1)
        if self.ignore_label is None:
            valid = torch.ones_like(t, dtype=torch.bool)
        else:
            valid = t.to(torch.int64) != self.ignore_label  # Caffe compares int(target)
        # (1 - t) x + log(1 + e^-x), computed stably; its gradient is sigmoid(x) - t as in Caffe
        terms = F.binary_cross_entropy_with_logits(x, torch.where(valid, t, 0.0), reduction="none")
        loss = (terms * valid).sum()
        return loss / _normalizer(self.normalization, n, x.shape[1], valid)


@register("InfogainLoss")
class InfogainLoss(_Loss):
    """-Σ_l H[label, l] log(max(softmax(x)_l, 1e-20)) over the positions of `axis`, normalized per
    loss_param. H (K×K) is bottom 2 or read from infogain_loss_param.source (a binaryproto). Caffe at
    9b89154 applies the softmax inside the layer; top 1 (optional) is that softmax."""

    min_bottoms, max_bottoms = 2, 3
    exact_tops, min_tops, max_tops = None, 1, 2

    def setup(self, bottom_shapes):
        p, lp = self.param, self.lp.loss_param
        if lp.HasField("normalize"):
            raise self.error("loss_param.normalize is deprecated for InfogainLoss; use normalization")
        self.normalization = lp.normalization
        self.ignore_label = lp.ignore_label if lp.HasField("ignore_label") else None
        add_label_flag(self)
        self.axis = canonical_axis(p.axis, len(bottom_shapes[0]), self)
        classes = bottom_shapes[0][self.axis]
        if len(bottom_shapes) == 3:
            self._check_h(bottom_shapes[2], classes, f"bottom 2 '{self.lp.bottom[2]}'")
            self.h_from_file = None
            return
        if not p.source:
            raise self.error("the infogain matrix H needs infogain_loss_param.source or a third bottom")
        h = read_binaryproto(self._find(p.source))
        self._check_h(h.shape, classes, f"source '{p.source}'")
        self.register_buffer("h_from_file", torch.from_numpy(h.reshape(classes, classes).copy()),
                             persistent=False)

    def _find(self, source: str) -> Path:
        """The source file from the current directory as Caffe, else from the prototxt's folder."""
        if Path(source).is_file():
            return Path(source)
        fallback = Path(self.source_dir or ".") / source
        if fallback.is_file():
            log.info("layer '%s': infogain source '%s' not in the current directory; using '%s' "
                     "(relative to the prototxt)", self.name, source, fallback)
            return fallback
        raise self.error(f"infogain_loss_param.source '{source}' does not exist")

    def _check_h(self, shape, classes: int, what: str) -> None:
        if math.prod(shape) != classes * classes:
            raise self.shape_error(f"{what} has shape {tuple(shape)}; H must hold {classes}×{classes} values "
                                   f"for the {classes} classes on axis {self.axis}")

    def check_shapes(self, bottom_shapes):
        x, label = bottom_shapes[0], bottom_shapes[1]
        outer, inner = math.prod(x[: self.axis]), math.prod(x[self.axis + 1:])
        if math.prod(label) != outer * inner:
            raise self.shape_error(f"bottom 1 '{self.lp.bottom[1]}' has {math.prod(label)} labels; scores "
                                   f"{tuple(x)} with classes on axis {self.axis} need {outer * inner}")

    def forward(self, x, label, h=None):
        shape = x.shape
        outer, classes = math.prod(shape[: self.axis]), shape[self.axis]
        scores = _wide(x).reshape(outer, classes, -1)
        labels = label.detach().reshape(outer, -1).to(torch.int64)
        valid = torch.ones_like(labels, dtype=torch.bool) if self.ignore_label is None \
            else labels != self.ignore_label
        labels = _labels_in_range(self, labels, classes, valid)
        h = (self.h_from_file if h is None else h.detach()).to(scores.dtype).reshape(classes, classes)
        prob = F.softmax(scores, dim=1)
        # Caffe floors the probability at 1e-20 in the value only; its gradient is p·ΣH[y] - H[y]
        logp = _value_with_grad(_floored_log(prob.detach()), F.log_softmax(scores, dim=1))
        rows = h[torch.where(valid, labels, 0)].permute(0, 2, 1)  # (outer, classes, inner): H[y, l]
        loss = -(rows * logp * valid.unsqueeze(1)).sum()
        loss = loss / _normalizer(self.normalization, outer, labels.shape[1], valid)
        if self.num_tops == 1:
            return loss
        # Caffe's backward reads only the loss top's diff: nothing flows back through the prob top
        return loss, prob.detach().reshape(shape).to(x.dtype)
