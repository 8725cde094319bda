"""Caffe's per-blob update rules (src/caffe/solvers/sgd_solver.cpp and its siblings for Nesterov,
AdaGrad, RMSProp, AdaDelta and Adam; the CUDA kernels in the .cu files compute the same values).

One `apply` is SGDSolver::ApplyUpdate after the learning rate is known: ClipGradients over all
learnable blobs, then per blob Normalize (iter_size), Regularize (L2/L1 weight decay) and
ComputeUpdateValue, and finally Net::Update (w -= diff). Gradients are read from `tensor.grad`
(Caffe's diff) and, as in Caffe, the final update value is left there afterwards.

Histories follow Caffe's SolverState layout: one blob per learnable param; AdaDelta and Adam append
a second set after the first, so `history[i + N]` is the second state of param `i`. Blobs with
lr_mult 0 keep their history slot and go through the same arithmetic with a zero rate.

Arithmetic is float32 in Caffe's operation order (caffe_cpu_axpby = scale then add, etc.). Blobs that
share (lr_mult, decay_mult, device) go through torch's multi-tensor (_foreach) kernels together: the
same per-element operations as blob by blob, in a handful of calls per step instead of several per
blob (what costs the most on small nets such as LeNet). The SGD trajectory tests hold to 1e-6.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from ..errors import NetspecError
from . import device_side

log = logging.getLogger(__name__)
f32 = np.float32

RULES: dict[str, type["UpdateRule"]] = {}
# SolverParameter.solver_type (deprecated enum) -> type string, as Caffe's UpgradeSolverType.
SOLVER_TYPE_NAMES = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}


def register(type_name: str):
    """Class decorator: register an UpdateRule under Caffe's solver type string."""

    def deco(cls):
        if type_name in RULES:
            raise ValueError(f"solver type '{type_name}' is registered twice")
        cls.type = type_name
        RULES[type_name] = cls
        return cls

    return deco


def solver_type(solver_param, file=None) -> str:
    """Caffe's solver type string, honouring the deprecated `solver_type` enum when `type` is unset."""
    if solver_param.HasField("solver_type"):
        if solver_param.HasField("type"):
            raise NetspecError("solver: expected either 'type' or the deprecated 'solver_type', found both "
                               f"(type: \"{solver_param.type}\", solver_type: "
                               f"{SOLVER_TYPE_NAMES.get(solver_param.solver_type)})", file=file)
        return SOLVER_TYPE_NAMES[solver_param.solver_type]
    return solver_param.type


def make_update_rule(solver_param, file=None) -> "UpdateRule":
    """The UpdateRule for `solver_param`'s solver type; an unknown type lists the known ones."""
    name = solver_type(solver_param, file)
    if name not in RULES:
        raise NetspecError(f"unknown solver type: expected one of {', '.join(RULES)}, found '{name}'",
                           file=file)
    return RULES[name](solver_param, file)


class UpdateRule:
    """SGD with momentum (SGDSolver); subclasses override `compute_update` and `states_per_param`."""

    states_per_param = 1

    def __init__(self, solver_param, file=None):
        self.param, self.file = solver_param, file
        self.momentum = f32(solver_param.momentum)
        self.history: list[torch.Tensor] = []
        self.check()
        if solver_param.weight_decay and solver_param.regularization_type not in ("L1", "L2"):
            raise NetspecError("unknown regularization_type: expected 'L2' or 'L1', found "
                               f"'{solver_param.regularization_type}'", file=file)

    def check(self) -> None:
        """Solver-specific parameter checks (Caffe's constructor_sanity_check)."""

    def init(self, params) -> None:
        """Zero histories shaped like each learnable blob (SGDSolver::PreSolve and the extra set)."""
        tensors = [p.tensor for p in params]
        # in each blob's own memory layout (channels_last weights get channels_last histories)
        self.history = [torch.zeros_like(t, dtype=torch.float32) for _ in range(self.states_per_param)
                        for t in tensors]

    @torch.no_grad()
    def apply(self, params, rate: float, iter: int, ok: torch.Tensor | None = None, defer=None) -> None:
        """One Caffe update of every blob in `params` (ParamInfo-like: .tensor .lr_mult .decay_mult).

        Blobs sharing (lr_mult, decay_mult) are updated together by torch's multi-tensor (_foreach)
        kernels: the same float32 operations as blob by blob, a handful of calls per step. `ok`, a
        0-dim bool tensor, guards the update on the device: where it is False the weights and the
        histories keep their values (a non-finite loss, an fp16 overflow) and the host reads nothing.
        `defer` (a DeferredReads) takes clip_gradients' log line until the solver's next display."""
        if len(self.history) != self.states_per_param * len(params):
            raise NetspecError(f"solver {self.type}: expected {self.states_per_param * len(params)} "
                               f"history blobs for {len(params)} learnable blobs, found "
                               f"{len(self.history)} (call init(params) first)", file=self.file)
        diffs = [_diff(p.tensor) for p in params]
        weights = [p.tensor for p in params]
        # SGD's own arithmetic can be made a no-op where `ok` is False (compute_updates); the other
        # rules keep copies of the weights and histories and put them back.
        multi_tensor = type(self).compute_update is UpdateRule.compute_update
        kept = None if multi_tensor else self._keep(weights, ok)
        self.clip_gradients(diffs, defer)
        for idx, lr_mult, decay_mult in _groups(params):
            group = [diffs[i] for i in idx]
            self.normalize_all(group)
            self.regularize_all([weights[i] for i in idx], group, decay_mult)
            self.compute_updates(idx, group, float(f32(rate) * f32(lr_mult)), iter,
                                 ok=ok if multi_tensor else None)
        _net_update(weights, diffs)
        if kept is not None:
            self._restore_unless(ok, weights + self.history, kept)

    def _keep(self, weights, ok):
        """Copies of the state the update writes (weights, histories), for a guarded update."""
        if ok is None:
            return None
        states = weights + self.history
        if getattr(self, "_scratch", None) is None or [s.shape for s in self._scratch] != [t.shape for t in states]:
            self._scratch = [torch.empty_like(t) for t in states]   # allocated once, reused every step
        torch._foreach_copy_(self._scratch, states)
        return self._scratch

    @staticmethod
    def _restore_unless(ok, states, kept) -> None:
        flags: dict = {}
        for t, k in zip(states, kept):
            flag = flags.get(t.device)
            if flag is None:
                flag = flags[t.device] = ok.to(t.device, non_blocking=True)
            torch.where(flag, t, k, out=t)

    def clip_gradients(self, diffs, defer=None) -> None:
        """Scale every diff by clip/norm when the global L2 norm exceeds clip_gradients (>= 0).

        The norm is reduced on the first diff's device (the blobs of a model-parallel net live on
        several) and the decision is taken there too; Caffe's log line is written when `defer` is
        flushed (at once without one)."""
        clip = f32(self.param.clip_gradients)
        if clip < 0 or not diffs:
            return
        # Caffe sums the per-blob dot products in float, blob by blob.
        dots = device_side.stack([torch.dot(d.reshape(-1), d.reshape(-1)) for d in diffs])
        norm = device_side.sequential_sum(dots).sqrt()
        limit = torch.full_like(norm, float(clip))
        scale = torch.where(norm > limit, limit / norm, torch.ones_like(norm))
        by_device: dict = {}
        for d in diffs:
            if d.device not in by_device:
                by_device[d.device] = scale.to(d.device, non_blocking=True)
            d.mul_(by_device[d.device])
        report = _clip_report(float(clip))
        if defer is None:
            report(norm.cpu().numpy())
        else:
            defer.add(norm, report)

    def normalize_all(self, diffs) -> None:
        """Undo the accumulation of iter_size backward passes (Caffe multiplies by 1/iter_size)."""
        if self.param.iter_size > 1:
            torch._foreach_mul_(diffs, float(f32(1) / f32(self.param.iter_size)))

    def regularize_all(self, weights, diffs, decay_mult) -> None:
        """Weight decay of blobs sharing one decay_mult: diff += decay * w (L2) or decay * sign(w) (L1)."""
        local_decay = f32(self.param.weight_decay) * f32(decay_mult)
        if not local_decay:
            return
        ws = [w.float() for w in weights]
        source = ws if self.param.regularization_type == "L2" else torch._foreach_sign(ws)
        torch._foreach_add_(diffs, source, alpha=float(local_decay))

    def compute_updates(self, idx, diffs, local_rate: float, iter: int, ok=None) -> None:
        """ComputeUpdateValue of blobs `idx` (one device) sharing one rate: SGD's with multi-tensor
        kernels, other rules blob by blob through their `compute_update`.

        SGD takes the guard `ok` itself, without copies of the state: where it is False the diffs
        are zeroed (NaNs too), the momentum is 1 and the update left in the diffs is 0; where it is
        True every added operation is a product by exactly 1, so the result is bit for bit the
        unguarded one's."""
        if type(self).compute_update is not UpdateRule.compute_update:
            for i, diff in zip(idx, diffs):
                self.compute_update(i, diff, local_rate, iter)
            return
        momentum = float(self.momentum)
        if ok is not None:
            flag = ok.to(diffs[0].device, non_blocking=True)
            for d in diffs:
                d.masked_fill_(~flag, 0.0)
            momentum = torch.where(flag, momentum, 1.0).to(torch.float32)
        h = [self.history[i] for i in idx]
        torch._foreach_mul_(h, momentum)
        torch._foreach_add_(h, diffs, alpha=local_rate)
        torch._foreach_copy_(diffs, h)
        if ok is not None:
            torch._foreach_mul_(diffs, flag.to(torch.float32))

    def compute_update(self, i: int, diff, local_rate: float, iter: int) -> None:
        """h = momentum * h + local_rate * diff; diff = h."""
        h = self.history[i]
        h.mul_(float(self.momentum)).add_(diff, alpha=local_rate)
        diff.copy_(h)

    def history_to_arrays(self) -> list[np.ndarray]:
        """The histories as float32 numpy arrays in SolverState.history order."""
        return [h.detach().cpu().numpy().astype(np.float32, copy=True) for h in self.history]

    def history_from_arrays(self, arrays) -> None:
        """Restore histories (after `init`) from arrays in SolverState.history order."""
        if len(arrays) != len(self.history):
            raise NetspecError(f"solver state: expected {len(self.history)} history blobs for solver "
                               f"{self.type}, found {len(arrays)}", file=self.file)
        for i, (h, a) in enumerate(zip(self.history, arrays)):
            a = np.asarray(a, dtype=np.float32)
            if a.size != h.numel():
                raise NetspecError(f"solver state: history blob {i} expected {h.numel()} values "
                                   f"(shape {tuple(h.shape)}), found {a.size} (shape {a.shape})",
                                   file=self.file)
            h.copy_(torch.from_numpy(a.reshape(tuple(h.shape))))


def _groups(params) -> list[tuple[list[int], float, float]]:
    """Indices of the blobs sharing each (lr_mult, decay_mult, device), in first-seen order (the
    multi-tensor kernels take one device's tensors at a time)."""
    groups: dict = {}
    for i, p in enumerate(params):
        groups.setdefault((p.lr_mult, p.decay_mult, p.tensor.device), []).append(i)
    return [(idx, lr, decay) for (lr, decay, _), idx in groups.items()]


def _net_update(weights, diffs) -> None:
    """Net::Update, w -= diff, leaving the update value in the diff as Caffe does."""
    if all(w.dtype == d.dtype and w.device == weights[0].device for w, d in zip(weights, diffs)):
        torch._foreach_sub_(weights, diffs)
    else:
        for w, d in zip(weights, diffs):
            w.sub_(d if d.dtype == w.dtype else d.to(w.dtype))
    for w, d in zip(weights, diffs):
        if w.grad is not None and w.grad is not d:
            w.grad.copy_(d)


def _clip_report(clip: float):
    def report(norm) -> None:
        norm = f32(norm)
        if norm > f32(clip):
            log.info("Gradient clipping: scaling down gradients (L2 norm %g > %g) by scale factor %g",
                     norm, clip, f32(clip) / norm)
    return report


def _diff(w: torch.Tensor) -> torch.Tensor:
    """The blob's diff as a float32 tensor to update in place (zeros when no gradient reached it)."""
    g = w.grad
    if g is None:
        return torch.zeros(w.shape, dtype=torch.float32, device=w.device)
    if g.dtype != torch.float32:
        return g.float()
    return g


register("SGD")(UpdateRule)


@register("Nesterov")
class Nesterov(UpdateRule):
    def compute_update(self, i, diff, local_rate, iter):
        """h_new = momentum * h + local_rate * diff; diff = (1 + momentum) * h_new - momentum * h."""
        h = self.history[i]
        update = h.clone()
        h.mul_(float(self.momentum)).add_(diff, alpha=local_rate)
        update.mul_(float(-self.momentum)).add_(h, alpha=float(f32(1) + self.momentum))
        diff.copy_(update)


def _momentum_must_be_zero(rule) -> None:
    if rule.momentum != 0:
        raise NetspecError(f"solver {rule.type}: expected momentum 0 (momentum cannot be used with "
                           f"{rule.type}), found {rule.param.momentum}", file=rule.file)


@register("AdaGrad")
class AdaGrad(UpdateRule):
    def check(self):
        _momentum_must_be_zero(self)

    def compute_update(self, i, diff, local_rate, iter):
        """h += diff^2; diff = local_rate * diff / (sqrt(h) + delta)."""
        h = self.history[i]
        h.add_(diff * diff)
        denom = h.sqrt().add_(float(f32(self.param.delta)))
        diff.div_(denom).mul_(local_rate)


@register("RMSProp")
class RMSProp(UpdateRule):
    def check(self):
        _momentum_must_be_zero(self)
        if not 0 <= self.param.rms_decay < 1:
            raise NetspecError(f"solver RMSProp: expected 0 <= rms_decay < 1, found {self.param.rms_decay}",
                               file=self.file)

    def compute_update(self, i, diff, local_rate, iter):
        """h = rms_decay * h + (1 - rms_decay) * diff^2; diff = local_rate * diff / (sqrt(h) + delta)."""
        decay = f32(self.param.rms_decay)
        h = self.history[i]
        h.mul_(float(decay)).add_(diff * diff, alpha=float(f32(1) - decay))
        denom = h.sqrt().add_(float(f32(self.param.delta)))
        diff.div_(denom).mul_(local_rate)


@register("AdaDelta")
class AdaDelta(UpdateRule):
    states_per_param = 2

    def compute_update(self, i, diff, local_rate, iter):
        """Zeiler's AdaDelta with Caffe's `delta` inside both square roots, then scaled by the rate:
        h = m*h + (1-m)*diff^2; diff *= sqrt((h2 + delta) / (h + delta)); h2 = m*h2 + (1-m)*diff^2."""
        m, one_minus_m = float(self.momentum), float(f32(1) - self.momentum)
        delta = float(f32(self.param.delta))
        h, h2 = self.history[i], self.history[i + len(self.history) // 2]
        h.mul_(m).add_(diff * diff, alpha=one_minus_m)
        ratio = (h2 + delta).div_(h + delta).sqrt_()
        diff.mul_(ratio)
        h2.mul_(m).add_(diff * diff, alpha=one_minus_m)
        diff.mul_(local_rate)


@register("Adam")
class Adam(UpdateRule):
    states_per_param = 2

    def compute_update(self, i, diff, local_rate, iter):
        """m, v moving averages; diff = local_rate * sqrt(1-b2^t)/(1-b1^t) * m / (sqrt(v) + delta)."""
        b1, b2 = self.momentum, f32(self.param.momentum2)
        t = iter + 1
        # Caffe computes the bias correction in double (pow(float, int)) and stores it as float.
        correction = f32(np.sqrt(1.0 - np.float64(b2) ** t) / (1.0 - np.float64(b1) ** t))
        m, v = self.history[i], self.history[i + len(self.history) // 2]
        m.mul_(float(b1)).add_(diff, alpha=float(f32(1) - b1))
        v.mul_(float(b2)).add_(diff * diff, alpha=float(f32(1) - b2))
        denom = v.sqrt().add_(float(f32(self.param.delta)))
        diff.copy_(m / denom).mul_(float(f32(local_rate) * correction))
