"""Faster R-CNN's layers: ROIPooling and SmoothL1Loss (rbgirshick/caffe-fast-rcnn, branch
faster-rcnn: roi_pooling_layer.cpp/.cu, smooth_L1_loss_layer.cu). Their messages are schema
extensions at py-faster-rcnn's own field numbers (8266711, 8266712).

ROIPooling max-pools each region [batch, x1, y1, x2, y2] (image coordinates, times spatial_scale,
rounded half away from zero as C's round) into pooled_h × pooled_w bins: bin ph spans rows
[floor(ph·bin_h), ceil((ph+1)·bin_h)) of the region, bin_h = max(y2 - y1 + 1, 1) / pooled_h in the
blob's precision, clipped to the map; an empty bin gives 0. The first maximum in row-major order
wins, and the backward sends each bin's diff to that element only, and only when it lies within the
region's unclipped corners (the fork's GPU backward; its CPU backward is not implemented).
SmoothL1Loss is Σ w_out·f(w_in·(b0 - b1)) / N with f as in SmoothL1LossParameter; the weights get no
diff, and the fork ignores loss_param's normalization.
"""

from __future__ import annotations

import math

import torch

from .base import Layer, register


def _round_half_away(v: torch.Tensor) -> torch.Tensor:
    """C's round(): halves away from zero (torch.round rounds them to even)."""
    v = v.double()
    return (torch.sign(v) * torch.floor(v.abs() + 0.5)).long()


@register("ROIPooling")
class ROIPooling(Layer):
    no_onnx = True  # data-dependent host work; netspec/export_onnx.py refuses it
    exact_bottoms, exact_tops = 2, 1
    _CHUNK = 1 << 22  # gathered elements per block of regions (bounds the memory of one step)

    def setup(self, bottom_shapes):
        p = self.param
        if p.pooled_h <= 0 or p.pooled_w <= 0:
            raise self.error(f"roi_pooling_param pooled_h and pooled_w must be > 0, found "
                             f"{p.pooled_h} and {p.pooled_w}")
        self.pooled, self.scale = (p.pooled_h, p.pooled_w), p.spatial_scale
        feat, rois = bottom_shapes
        if len(feat) != 4:
            raise self.shape_error(f"bottom '{self.lp.bottom[0]}' has shape {feat}; ROIPooling needs N×C×H×W")
        if len(rois) < 2 or math.prod(rois[1:]) != 5:
            raise self.shape_error(f"bottom '{self.lp.bottom[1]}' has shape {rois}; regions are R×5 "
                                   "[batch index, x1, y1, x2, y2]")

    def infer_top_shapes(self, bottom_shapes):
        (_, c, _, _), rois = bottom_shapes
        return [(rois[0], c) + self.pooled]

    def _bins(self, start, end, pooled: int, size: int, dtype):
        """(R, pooled) first and one-past-last map index of every bin along one axis."""
        length = torch.clamp(end - start + 1, min=1).to(dtype)
        bin_size = length / pooled
        k = torch.arange(pooled, dtype=dtype, device=start.device)
        lo = torch.floor(k[None] * bin_size[:, None]).long() + start[:, None]
        hi = torch.ceil((k[None] + 1) * bin_size[:, None]).long() + start[:, None]
        return lo.clamp(0, size), hi.clamp(0, size)

    def _corners(self, rois, n: int):
        rois = rois.detach().reshape(-1, 5)
        batch = rois[:, 0].long()  # the fork's int cast truncates
        bad = (batch < 0) | (batch >= n)
        if bool(bad.any()):
            raise self.run_error(f"region {int(bad.nonzero()[0, 0])} has batch index "
                                 f"{rois[bad][0, 0].item():g}, outside the {n} images of bottom '{self.lp.bottom[0]}'")
        rois = rois if rois.dtype == torch.float64 else rois.float()
        x1, y1, x2, y2 = (_round_half_away(rois[:, i] * self.scale) for i in range(1, 5))
        return batch, x1, y1, x2, y2

    def _argmax(self, x, batch, hs, he, ws, we):
        """(R, C, PH, PW) flat map index of each bin's first maximum, and whether the bin is empty."""
        kh = max(int((he - hs).max()), 1)
        kw = max(int((we - ws).max()), 1)
        rows = hs[:, :, None] + torch.arange(kh, device=x.device)           # R, PH, kh
        cols = ws[:, :, None] + torch.arange(kw, device=x.device)           # R, PW, kw
        valid = ((rows < he[:, :, None])[:, :, None, :, None] & (cols < we[:, :, None])[:, None, :, None, :])
        pos = (rows.clamp(max=x.shape[2] - 1) * x.shape[3])[:, :, None, :, None] \
            + cols.clamp(max=x.shape[3] - 1)[:, None, :, None, :]        # R, PH, PW, kh, kw
        r, ph, pw = pos.shape[:3]
        pos, valid = pos.reshape(r, 1, ph, pw, -1), valid.reshape(r, 1, ph, pw, -1)
        flat = x.detach().reshape(x.shape[0], x.shape[1], -1)
        k = pos.shape[-1]
        best = pos.new_empty((r, x.shape[1], ph, pw))
        for b in torch.unique(batch).tolist():  # each image's regions read that image's map in place
            mine = (batch == b).nonzero().squeeze(1)
            step = max(1, self._CHUNK // (x.shape[1] * ph * pw * k))
            for lo in range(0, len(mine), step):  # blocks of regions, each gathered and reduced at once
                sel = mine[lo:lo + step]
                idx = pos[sel].reshape(1, -1).expand(x.shape[1], -1)
                vals = flat[b].gather(1, idx).reshape(x.shape[1], len(sel), ph, pw, k).transpose(0, 1)
                vals = vals.masked_fill(~valid[sel], float("-inf"))
                arg = vals.argmax(-1, keepdim=True)  # the first maximum, as the fork's strict '>'
                best[sel] = pos[sel].expand(-1, x.shape[1], -1, -1, -1).gather(-1, arg).squeeze(-1)
        empty = ~valid.any(-1)
        return best, empty

    def forward(self, x, rois):
        n, c, h, w = x.shape
        batch, x1, y1, x2, y2 = self._corners(rois, n)
        # bins in the blob's precision, as the fork's Dtype, but never coarser than float32
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        hs, he = self._bins(y1, y2, self.pooled[0], h, dtype)
        ws, we = self._bins(x1, x2, self.pooled[1], w, dtype)
        if batch.numel() == 0:
            return x.new_zeros((0, c) + self.pooled)
        with torch.no_grad():
            idx, empty = self._argmax(x, batch, hs, he, ws, we)
        flat = x.reshape(n, c, h * w)
        top = flat[batch[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None], idx]
        row, col = idx // w, idx % w
        inside = ((row >= y1[:, None, None, None]) & (row <= y2[:, None, None, None])
                  & (col >= x1[:, None, None, None]) & (col <= x2[:, None, None, None]))
        top = torch.where(inside, top, top.detach())
        return torch.where(empty, torch.zeros_like(top), top)


@register("SmoothL1Loss")
class SmoothL1Loss(Layer):
    min_bottoms, max_bottoms, exact_tops = 2, 4, 1
    default_loss_weight = 1.0

    def setup(self, bottom_shapes):
        if len(bottom_shapes) == 3:
            raise self.error("SmoothL1Loss weights come as a pair: give both inside and outside "
                             "weights (4 bottoms) or neither (2)")
        for i, s in enumerate(bottom_shapes[1:], 1):
            if tuple(s) != tuple(bottom_shapes[0]):
                raise self.shape_error(f"bottom {i} '{self.lp.bottom[i]}' has shape {s}, bottom 0 has "
                                       f"{bottom_shapes[0]}; SmoothL1Loss needs equal shapes")
        sigma = torch.tensor(self.param.sigma, dtype=torch.float32)
        self.sigma2 = float(sigma * sigma)  # the fork's float sigma2_

    def infer_top_shapes(self, bottom_shapes):
        return [()]

    def forward(self, pred, target, inside=None, outside=None):
        d = pred - target
        if inside is not None:
            d = inside.detach() * d
        small = d.abs() < 1.0 / self.sigma2
        # the quadratic piece only where it is used, so the other piece's gradient stays finite
        err = torch.where(small, 0.5 * self.sigma2 * d * d, d.abs() - 0.5 / self.sigma2)
        if outside is not None:
            err = outside.detach() * err
        return err.sum() / pred.shape[0]
