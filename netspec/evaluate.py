"""Scoring a trained net: Caffe's `caffe test` (tools/caffe.cpp test()) and the paper's 10-view test.

`score` runs a compiled net N times as caffe test does: each forward's loss and every element of every
output blob are summed (float32, as Caffe's `float` accumulators), then divided by N. Output blobs are
in Caffe's order, sorted by name (Net::Init keeps the unconsumed blobs in a std::set<string>).
`batch_lines` / `summary_lines` print them in Caffe's words and number format (C++ ostream's
6 significant digits); `error_lines` adds top-1/top-5 error for Accuracy layers with top_k 1 or 5.

`oversample` is the test of Krizhevsky et al. 2012, section 4.1: for every image the four corner
crops and the centre crop, each also mirrored (10 views), and the softmax probabilities averaged
over the views. Procedure, for a net whose first layer is a Data layer with crop_size:
  1. records are read by the Data layer's own reader in its own order (wrapping as Caffe's cursor),
     transformed by its DataTransformer with crop and mirror switched off: the mean file (or
     mean_value) is subtracted at full size and the scale applied, so every crop below sees the
     same values Caffe's transformer would give it (it indexes the mean at the source pixel);
  2. `ten_views` cuts crops at offsets (0, 0), (0, W-c), (H-c, 0), (H-c, W-c) and Caffe's TEST
     centre ((H-c)/2, (W-c)/2) rounded down, then the same five flipped left-right;
  3. each view (a whole batch at a time, so every blob keeps its compiled shape) runs through the
     layers after the Data layer; the probabilities are the net's Softmax output if it has one, else
     the softmax of the scores the first Accuracy layer reads;
  4. the 10 probability vectors of an image are averaged; a label counts as right at top-k when
     fewer than k other classes score >= its score (Caffe's AccuracyLayer rule, ties count against
     it), skipping Accuracy's ignore_label. The centre-crop figures come from view 5 alone (the
     unmirrored centre crop, what Caffe's TEST transform gives when mirror is off).
Errors are fractions over all images read (iterations x batch_size, records repeat after a wrap).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from .data.reader import BatchReader
from .data.transform import DataTransformer
from .errors import NetspecError
from .graph.inference import inference_module
from .layers.loss import label_error, label_flags
from .proto import pb
from .solver.log import g6

log = logging.getLogger("netspec.evaluate")

TOP_KS = (1, 5)


def fmt(value) -> str:
    """A float as C++'s `ostream << float` prints it (%g, 6 significant digits)."""
    return g6(np.float32(value))


def error_text(accuracy) -> str:
    """1 - accuracy, from the accuracy as printed: an accuracy printed 0.99 gives error 0.01, where
    float32 arithmetic (1 - 0.99f) would print 0.00999999."""
    return g6(1.0 - float(fmt(accuracy)))


# ---- caffe test ------------------------------------------------------------------------------------

@dataclass
class Scores:
    """What `score` gathered: float32 sums over `iterations` forwards."""
    iterations: int
    outputs: list[str]
    loss_weights: dict[str, float]
    loss_sum: np.float32 = np.float32(0)
    sums: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def loss(self) -> np.float32:
        return np.float32(self.loss_sum / np.float32(self.iterations))

    def mean(self, blob: str) -> np.ndarray:
        return (self.sums[blob] / np.float32(self.iterations)).astype(np.float32)


def caffe_outputs(net) -> list[str]:
    """The net's output blobs in Caffe's order (sorted by name)."""
    return sorted(net.output_names)


def score(net, iterations: int, inputs: dict | None = None, on_batch=None) -> Scores:
    """Run `net` `iterations` times (Data layers draw their batches; Input blobs from `inputs`).
    `on_batch(i, {blob: flat float32 values})` is called after every forward."""
    if iterations <= 0:
        raise NetspecError(f"-iterations must be positive, got {iterations}")
    scores = Scores(iterations, caffe_outputs(net), dict(net.loss_weights))
    inputs = inputs or {}
    run = net
    if net.phase == pb.TEST and all(b in inputs for b in net.input_names):
        # the inference graph (folded BatchNorm, no Dropout), computing only what is scored
        graph = inference_module(net, sorted(set(scores.outputs) | set(net.loss_weights)))
        run = lambda **given: graph(*[given[b] for b in net.input_names])  # noqa: E731
    with torch.no_grad():
        for i in range(iterations):
            blobs = run(**inputs)
            loss = np.float32(net.total_loss(blobs).item()) if net.loss_weights else np.float32(0)
            scores.loss_sum = np.float32(scores.loss_sum + loss)
            values = {b: blobs[b].detach().to("cpu", torch.float32).numpy().ravel() for b in scores.outputs}
            for layer, flag in label_flags(net):  # read with the outputs: no extra wait
                error = label_error(layer, flag.tolist(), f"batch {i}")
                if error is not None:
                    raise error
            for b, v in values.items():
                scores.sums[b] = v.copy() if i == 0 else scores.sums[b] + v
            if on_batch is not None:
                on_batch(i, values)
    return scores


def batch_lines(i: int, values: dict[str, np.ndarray]) -> list[str]:
    """Caffe's per-batch lines: one per element of every output blob, the blob's name for each."""
    return [f"Batch {i}, {b} = {fmt(x)}" for b, v in values.items() for x in v]


def summary_lines(scores: Scores) -> list[str]:
    """'Loss: L' and each output element's mean, with ' (* w = w·mean loss)' for loss blobs."""
    lines = [f"Loss: {fmt(scores.loss)}"]
    for b in scores.outputs:
        w = np.float32(scores.loss_weights.get(b, 0.0))
        for m in scores.mean(b):
            extra = f" (* {fmt(w)} = {fmt(w * m)} loss)" if w else ""
            lines.append(f"{b} = {fmt(m)}{extra}")
    return lines


def accuracy_tops(net) -> list[tuple[int, str]]:
    """(top_k, accuracy blob) of the net's Accuracy layers with top_k 1 or 5."""
    return [(lp.accuracy_param.top_k, lp.top[0]) for lp in net.layer_params
            if lp.type == "Accuracy" and lp.accuracy_param.top_k in TOP_KS]


def error_lines(net, scores: Scores) -> list[str]:
    """'top-k error = 1 - accuracy (blob)' for every Accuracy output with top_k 1 or 5."""
    return [f"top-{k} error = {error_text(scores.mean(b)[0])} ({b})"
            for k, b in accuracy_tops(net) if b in scores.sums]


# ---- the 10-view test --------------------------------------------------------------------------------

def ten_views(images: torch.Tensor, crop: int) -> torch.Tensor:
    """(10, N, C, crop, crop) from N×C×H×W: corners TL, TR, BL, BR, centre, then those five mirrored."""
    h, w = images.shape[-2:]
    if crop > h or crop > w:
        raise NetspecError(f"crop_size {crop} is larger than the {h}x{w} images")
    offsets = [(0, 0), (0, w - crop), (h - crop, 0), (h - crop, w - crop), ((h - crop) // 2, (w - crop) // 2)]
    crops = [images[..., y:y + crop, x:x + crop] for y, x in offsets]
    return torch.stack(crops + [c.flip(-1) for c in crops])


def topk_correct(probs: torch.Tensor, labels: torch.Tensor, k: int, ignore_label=None) -> tuple[int, int]:
    """(right, counted) under Caffe's Accuracy rule: fewer than k other classes score >= the label's."""
    labels = labels.to(torch.long)
    keep = torch.ones_like(labels, dtype=torch.bool) if ignore_label is None else labels != ignore_label
    probs, labels = probs[keep], labels[keep]
    mine = probs.gather(1, labels[:, None])
    better = (probs >= mine).sum(1) - 1
    return int((better < k).sum()), int(labels.numel())


@dataclass
class Oversampled:
    """Top-k errors of the centre crop and of the 10-view average, over `images` images."""
    images: int
    crop: int
    image_shape: tuple
    prob_blob: str
    centre: dict[int, float]
    ten: dict[int, float]
    records: int = 0

    def lines(self) -> list[str]:
        h, w = self.image_shape[-2:]
        head = (f"oversample: {self.images} images, 10 views of {self.crop}x{self.crop} from {h}x{w} "
                f"(4 corners + centre, each mirrored), probabilities of '{self.prob_blob}' averaged")
        if self.records and self.images > self.records:
            head += (f"; the LMDB holds {self.records} records, so reading wrapped to its start as Caffe's "
                     f"Data layer does and {self.images - self.records} images were scored twice or more")
        return [head] + [f"{name}: " + ", ".join(f"top-{k} error = {fmt(e)}" for k, e in errs.items())
                         for name, errs in (("centre crop", self.centre), ("10 views", self.ten))]


def _data_layer(net):
    step = net.steps[0] if net.steps else None
    if step is None or step.layer.type != "Data" or not step.layer.transformer.crop:
        raise NetspecError("--oversample needs a net whose first layer is a Data layer with "
                           "transform_param.crop_size (it crops the views from the full records)")
    if len(step.tops) != 2:
        raise NetspecError("--oversample needs the Data layer's label top to score the views",
                           layer=step.layer.name)
    return step


def _probability_source(net):
    """(blob, class axis, whether to softmax it, ignore_label) for the 10-view average."""
    acc = next((s for s in net.steps if s.layer.type == "Accuracy"), None)
    ignore = acc.layer.ignore_label if acc is not None else None
    for step in net.steps:
        if step.layer.type == "Softmax" and step.tops[0] in net.output_names:
            return step.tops[0], step.layer.axis, False, ignore
    if acc is not None:
        return acc.bottoms[0], acc.layer.axis, True, ignore
    raise NetspecError("--oversample needs a Softmax output (such as 'prob') or an Accuracy layer whose "
                       "scores it can turn into probabilities")


def _as_rows(x: torch.Tensor, axis: int, softmax: bool, n: int, blob: str) -> torch.Tensor:
    """N×K probabilities from a blob with classes on `axis`."""
    x = x.detach().float().movedim(axis, 1)
    if x.shape[0] != n or x[0].numel() != x.shape[1]:
        raise NetspecError(f"--oversample: blob '{blob}' has shape {tuple(x.shape)}; expected one score "
                           f"vector per image ({n} images)")
    x = x.reshape(n, -1)
    return torch.softmax(x, 1) if softmax else x


def full_size_reader(layer) -> BatchReader:
    """The Data layer's records in its order, mean-subtracted and scaled, neither cropped nor mirrored."""
    tp = pb.TransformationParameter()
    tp.CopyFrom(layer.transformer.param)
    tp.crop_size, tp.mirror = 0, False
    mean = layer.resolve(tp.mean_file, "mean_file") if tp.mean_file else None
    transformer = DataTransformer(tp, pb.TEST, mean, name=layer.name)
    dp = layer.lp.data_param
    return BatchReader(layer.source, layer.batch_size, transformer, phase=pb.TEST, rand_skip=dp.rand_skip,
                       prefetch=dp.prefetch, seed=layer.seed)


def view_probabilities(net, data: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """(10, N, K) probabilities of the 10 views of one full-size batch (CPU float32)."""
    step = _data_layer(net)
    blob, axis, softmax, _ = _probability_source(net)
    out = []
    with torch.no_grad():
        for view in ten_views(data, step.layer.transformer.crop):
            blobs = net.run_steps({step.tops[0]: view.to(step.device), step.tops[1]: label.to(step.device)},
                                  start=1)
            out.append(_as_rows(blobs[blob], axis, softmax, len(label), blob).cpu())
    return torch.stack(out)


def oversample(net, iterations: int) -> Oversampled:
    """The 10-view test over `iterations` batches of the net's Data layer (see the module docstring)."""
    step = _data_layer(net)
    blob, _, _, ignore = _probability_source(net)
    right: dict[str, dict[int, int]] = {"centre": {}, "ten": {}}
    counted, shape = 0, None
    reader = full_size_reader(step.layer)
    records = reader.cursor.entries
    try:
        for _ in range(iterations):
            data, label = reader.next()
            shape = tuple(data.shape)
            probs = view_probabilities(net, data, label)
            for name, p in (("centre", probs[4]), ("ten", probs.mean(0))):
                for k in (k for k in TOP_KS if k <= probs.shape[-1]):
                    ok, n = topk_correct(p, label, k, ignore)
                    right[name][k] = right[name].get(k, 0) + ok
            counted += n
    finally:
        reader.close()
    errors = {name: {k: 1.0 - r / max(counted, 1) for k, r in ks.items()} for name, ks in right.items()}
    return Oversampled(iterations * step.layer.batch_size, step.layer.transformer.crop, shape, blob,
                       errors["centre"], errors["ten"], records)
