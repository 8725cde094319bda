"""SSD's layers: Permute, PriorBox, Normalize and DetectionOutput (weiliu89/caffe, branch ssd:
permute_layer.cpp, prior_box_layer.cpp, normalize_layer.cpp, detection_output_layer.cpp and the
decoding and NMS of util/bbox_util.cpp). Their messages are schema extensions at SSD's own field
numbers (protos/netspec.proto, README "Fork layers").

PriorBox and DetectionOutput have no backward in SSD; PriorBox's top depends only on shapes, and
DetectionOutput runs without a graph. DetectionOutput's top is 1×1×K×7 rows of [image, label, score,
xmin, ymin, xmax, ymax], K known only after NMS (shape inference says K = 1, as SSD's Reshape).
Detection post-processing runs in float32 numpy on the host, as SSD does it on the CPU.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..proto import pb
from .base import Layer, register

CodeType = pb.PriorBoxParameter.CodeType


@register("Permute")
class Permute(Layer):
    """The bottom's axes reordered: `order` first, then the unlisted axes in their own order."""

    exact_bottoms = exact_tops = 1

    def setup(self, bottom_shapes):
        n, order = len(bottom_shapes[0]), []
        for axis in self.param.order:
            if axis >= n:
                raise self.error(f"permute_param order {axis} is past the {n} axes of bottom "
                                 f"'{self.lp.bottom[0]}' {bottom_shapes[0]}")
            if axis in order:
                raise self.error(f"permute_param order lists axis {axis} twice")
            order.append(axis)
        self.order = tuple(order + [i for i in range(n) if i not in order])

    def infer_top_shapes(self, bottom_shapes):
        return [tuple(bottom_shapes[0][i] for i in self.order)]

    def forward(self, x):
        return x.permute(self.order).contiguous()


@register("PriorBox")
class PriorBox(Layer):
    """1×2×(H·W·priors·4): every cell's prior boxes as normalised corners, then their variances.

    Per cell and per min_size the boxes are: the min_size square, the sqrt(min·max) square (when
    max_size is given), then one box per aspect ratio other than 1. SSD reads the sizes into ints."""

    exact_bottoms, exact_tops = 2, 1

    def setup(self, bottom_shapes):
        p = self.param
        if len(bottom_shapes[0]) != 4:
            raise self.shape_error(f"bottom '{self.lp.bottom[0]}' has shape {bottom_shapes[0]}; "
                                   "PriorBox needs a 4-axis feature map")
        self.min_sizes, self.max_sizes = list(p.min_size), list(p.max_size)
        if not self.min_sizes or min(self.min_sizes) <= 0:
            raise self.error("prior_box_param needs min_size, every one positive")
        if self.max_sizes and (len(self.max_sizes) != len(self.min_sizes)
                               or any(mx <= mn for mn, mx in zip(self.min_sizes, self.max_sizes))):
            raise self.error(f"max_size {self.max_sizes} must pair with min_size {self.min_sizes}, "
                             "each larger than its min_size")
        self.ratios = self._aspect_ratios(p)
        self.num_priors = len(self.ratios) * len(self.min_sizes) + len(self.max_sizes)
        self.variance = self._variance(p)
        self.img = self._pair(p, "img_size", "img_h", "img_w")
        self.step = self._pair(p, "step", "step_h", "step_w")
        self.clip, self.offset = p.clip, p.offset
        self._cache = {}

    @staticmethod
    def _aspect_ratios(p) -> list[float]:
        ratios = [1.0]
        for ar in p.aspect_ratio:
            if all(abs(ar - r) >= 1e-6 for r in ratios):  # SSD drops near-duplicates
                ratios.append(ar)
                if p.flip:
                    ratios.append(float(np.float32(1.0 / ar)))
        return ratios

    def _variance(self, p) -> list[float]:
        v = list(p.variance) or [0.1]
        if len(v) not in (1, 4) or min(v) <= 0:
            raise self.error(f"prior_box_param variance {list(p.variance)}: give 1 or 4 positive values")
        return v

    def _pair(self, p, one: str, h: str, w: str) -> tuple[float, float]:
        """(h, w) from `one` or `h`/`w` (0, 0: taken from the bottoms at run time)."""
        if p.HasField(h) or p.HasField(w):
            if p.HasField(one):
                raise self.error(f"give either {one} or {h}/{w}, not both")
            pair = (getattr(p, h), getattr(p, w))
        else:
            pair = (getattr(p, one),) * 2 if p.HasField(one) else (0, 0)
        if (p.HasField(one) or p.HasField(h) or p.HasField(w)) and min(pair) <= 0:
            raise self.error(f"{one} (or {h}/{w}) must be positive, found {pair}")
        return pair

    def infer_top_shapes(self, bottom_shapes):
        h, w = bottom_shapes[0][2:]
        return [(1, 2, h * w * self.num_priors * 4)]

    def _cell_boxes(self) -> np.ndarray:
        """(priors, 2) widths and heights of one cell's boxes, in SSD's order."""
        sizes = []
        for s, mn in enumerate(self.min_sizes):
            mn = int(mn)
            sizes.append((mn, mn))
            if self.max_sizes:
                side = math.sqrt(mn * int(self.max_sizes[s]))
                sizes.append((side, side))
            sizes += [(mn * math.sqrt(ar), mn / math.sqrt(ar)) for ar in self.ratios if abs(ar - 1.0) >= 1e-6]
        return np.asarray(sizes, np.float32).astype(np.float64)

    def _priors(self, layer_hw, image_hw) -> np.ndarray:
        img_h, img_w = (self.img if min(self.img) > 0 else image_hw)
        lh, lw = layer_hw
        step_h, step_w = self.step if min(self.step) > 0 else (np.float32(img_h) / np.float32(lh),
                                                               np.float32(img_w) / np.float32(lw))
        cy = ((np.arange(lh, dtype=np.float32) + np.float32(self.offset)) * np.float32(step_h)).astype(np.float64)
        cx = ((np.arange(lw, dtype=np.float32) + np.float32(self.offset)) * np.float32(step_w)).astype(np.float64)
        wh = self._cell_boxes()
        cx, cy = cx[None, :, None], cy[:, None, None]
        bw, bh = wh[None, None, :, 0] / 2.0, wh[None, None, :, 1] / 2.0
        boxes = np.stack(np.broadcast_arrays((cx - bw) / img_w, (cy - bh) / img_h,
                                             (cx + bw) / img_w, (cy + bh) / img_h), -1).reshape(-1)
        if self.clip:
            boxes = boxes.clip(0.0, 1.0)
        variances = np.resize(np.asarray(self.variance, np.float64), boxes.size)
        return np.stack([boxes, variances])[None]

    def forward(self, x, image):
        key = (tuple(x.shape[2:]), tuple(image.shape[2:]), x.dtype, x.device)
        if key not in self._cache:
            priors = self._priors(tuple(x.shape[2:]), tuple(image.shape[-2:]))
            self._cache = {key: torch.as_tensor(priors, dtype=x.dtype, device=x.device)}
        return self._cache[key]


@register("Normalize")
class Normalize(Layer):
    """x / sqrt(Σx² + eps) over the channels of each position (over the whole sample with
    across_spatial), times a learned scale: one value (channel_shared) or one per channel."""

    exact_bottoms = exact_tops = 1
    blob_names = ("scale",)

    def setup(self, bottom_shapes):
        p, shape = self.param, bottom_shapes[0]
        if len(shape) < 2:
            raise self.shape_error(f"bottom '{self.lp.bottom[0]}' has shape {shape}; Normalize needs 2+ axes")
        self.across_spatial, self.channel_shared, self.eps = p.across_spatial, p.channel_shared, p.eps
        self.new_blob("scale", () if p.channel_shared else (shape[1],))

    def filler(self, blob_name):
        if self.param.HasField("scale_filler"):
            return self.param.scale_filler
        return pb.FillerParameter(type="constant", value=1.0)

    def infer_top_shapes(self, bottom_shapes):
        return [bottom_shapes[0]]

    def forward(self, x):
        rows = x.reshape(x.shape[0], x.shape[1], -1)
        dims = (1, 2) if self.across_spatial else (1,)
        norm = torch.sqrt((rows * rows).sum(dims, keepdim=True) + self.eps)
        scale = self.scale if self.channel_shared else self.scale.reshape(1, -1, 1)
        return (rows / norm * scale).reshape(x.shape)


@register("DetectionOutput")
class DetectionOutput(Layer):
    """SSD's detections from location predictions, class confidences and priors (inference only)."""

    no_onnx = True  # data-dependent host work; netspec/export_onnx.py refuses it
    exact_bottoms, exact_tops = 3, 1

    def setup(self, bottom_shapes):
        p = self.param
        if not p.HasField("num_classes") or p.num_classes < 1:
            raise self.error("detection_output_param needs num_classes (at least 1)")
        nms = p.nms_param
        if nms.nms_threshold < 0 or not 0 < nms.eta <= 1:
            raise self.error(f"nms_param: nms_threshold {nms.nms_threshold} must be >= 0 and "
                             f"eta {nms.eta} in (0, 1]")
        if p.save_output_param.output_directory:
            raise self.error("save_output_param output_directory: netspec writes no detection files; "
                             "read the top blob instead")
        self.classes, self.share = p.num_classes, p.share_location
        self.loc_classes = 1 if p.share_location else p.num_classes
        self.background, self.code, self.in_target = p.background_label_id, p.code_type, p.variance_encoded_in_target
        self.keep_top_k, self.nms_threshold, self.eta = p.keep_top_k, nms.nms_threshold, nms.eta
        self.top_k = nms.top_k if nms.HasField("top_k") else -1
        self.threshold = p.confidence_threshold if p.HasField("confidence_threshold") else -np.finfo(np.float32).max
        self._check_shapes(bottom_shapes)

    def _check_shapes(self, shapes):
        loc, conf, prior = shapes
        if len(prior) < 3 or prior[1] != 2 or prior[2] % 4:
            raise self.shape_error(f"bottom '{self.lp.bottom[2]}' has shape {prior}; priors are 1×2×(4·P)")
        priors = prior[2] // 4
        for i, (s, per) in enumerate(((loc, self.loc_classes * 4), (conf, self.classes))):
            if len(s) < 2 or math.prod(s[1:]) != priors * per or s[0] != loc[0]:
                raise self.shape_error(f"bottom '{self.lp.bottom[i]}' has shape {s}; {priors} priors "
                                       f"need N×{priors * per} with N as bottom 0's")

    def infer_top_shapes(self, bottom_shapes):
        return [(1, 1, 1, 7)]

    def forward(self, loc, conf, prior):
        with torch.no_grad():
            num = loc.shape[0]
            loc_np = loc.detach().float().cpu().numpy().reshape(num, -1, self.loc_classes, 4)
            conf_np = conf.detach().float().cpu().numpy().reshape(num, -1, self.classes)
            priors = prior.shape[2] // 4  # SSD reads the first 2·4·P values only
            prior_np = prior.detach().float().cpu().numpy().reshape(-1)[: 8 * priors].reshape(2, priors, 4)
            rows = [self._image(i, loc_np[i], conf_np[i], prior_np) for i in range(num)]
            rows = np.concatenate(rows) if any(len(r) for r in rows) else self._none(num)
            return torch.as_tensor(rows, dtype=loc.dtype, device=loc.device).reshape(1, 1, -1, 7)

    @staticmethod
    def _none(num: int) -> np.ndarray:
        """SSD's top when nothing is detected: one row of -1 per image, its image id first."""
        rows = np.full((num, 7), -1.0, np.float32)
        rows[:, 0] = np.arange(num)
        return rows

    def _image(self, i, loc, conf, prior) -> np.ndarray:
        boxes = [decode_boxes(prior[0], prior[1], loc[:, c], self.code, self.in_target, self)
                 for c in range(self.loc_classes)]
        kept = {}
        for c in range(self.classes):
            if c == self.background:
                continue
            kept[c] = nms(boxes[0 if self.share else c], conf[:, c], self.threshold,
                          self.nms_threshold, self.eta, self.top_k)
        kept = self._keep_top_k(kept, conf)
        out = [np.column_stack([np.full(len(idx), i), np.full(len(idx), c), conf[idx, c],
                                boxes[0 if self.share else c][idx]]) for c, idx in sorted(kept.items())]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 7), np.float32)

    def _keep_top_k(self, kept: dict, conf) -> dict:
        """The keep_top_k best of all classes' survivors, each class's in descending score. SSD sorts
        with std::sort (ties in any order); a stable sort keeps ties in label, then NMS, order."""
        total = sum(len(v) for v in kept.values())
        if self.keep_top_k <= -1 or total <= self.keep_top_k:
            return kept
        pairs = [(c, j) for c in sorted(kept) for j in kept[c]]
        scores = np.asarray([conf[j, c] for c, j in pairs], np.float32)
        best = np.argsort(-scores, kind="stable")[: self.keep_top_k]
        out: dict = {}
        for k in best:
            c, j = pairs[k]
            out.setdefault(c, []).append(j)
        return {c: np.asarray(v, np.int64) for c, v in out.items()}


def decode_boxes(priors, variances, loc, code, in_target: bool, layer: Layer) -> np.ndarray:
    """bbox_util's DecodeBBox for every prior at once (float32, as SSD stores NormalizedBBox)."""
    f = np.float32
    priors, variances, loc = priors.astype(f), variances.astype(f), loc.astype(f)
    var = np.ones_like(variances) if in_target else variances
    if code == CodeType.CORNER:
        return (priors + var * loc).astype(f)
    pw, ph = priors[:, 2] - priors[:, 0], priors[:, 3] - priors[:, 1]
    if (pw <= 0).any() or (ph <= 0).any():
        raise layer.run_error(f"a prior box has no width or height; {CodeType.Name(code)} decoding needs both")
    if code == CodeType.CORNER_SIZE:
        return (priors + var * loc * np.stack([pw, ph, pw, ph], 1)).astype(f)
    cx = (var[:, 0] * loc[:, 0] * pw + (priors[:, 0] + priors[:, 2]) / f(2)).astype(np.float64)
    cy = (var[:, 1] * loc[:, 1] * ph + (priors[:, 1] + priors[:, 3]) / f(2)).astype(np.float64)
    w = (np.exp(var[:, 2] * loc[:, 2]) * pw).astype(np.float64)
    h = (np.exp(var[:, 3] * loc[:, 3]) * ph).astype(np.float64)
    return np.stack([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], 1).astype(f)


def _sizes(boxes) -> np.ndarray:
    """BBoxSize: width·height, 0 for an inverted box."""
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return np.where((w < 0) | (h < 0), np.float32(0), w * h).astype(np.float32)


def jaccard(box, boxes) -> np.ndarray:
    """JaccardOverlap of one normalised box with many (0 where they do not intersect)."""
    w = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    h = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = (w * h).astype(np.float32)
    union = _sizes(box[None])[0] + _sizes(boxes) - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((w > 0) & (h > 0), inter / union, np.float32(0))


def nms(boxes, scores, threshold, nms_threshold, eta, top_k) -> np.ndarray:
    """ApplyNMSFast: scores above `threshold`, best first (stable), at most top_k; a box is kept when
    its overlap with every kept box is <= the (eta-adaptive) threshold."""
    order = np.nonzero(scores > threshold)[0]
    order = order[np.argsort(-scores[order], kind="stable")]
    if -1 < top_k < len(order):
        order = order[:top_k]
    kept, limit = [], nms_threshold
    for idx in order:
        if kept and jaccard(boxes[idx], boxes[kept]).max() > limit:
            continue
        kept.append(int(idx))
        if eta < 1 and limit > 0.5:
            limit *= eta
    return np.asarray(kept, np.int64)
