"""Caffe's learning-rate policies (SGDSolver::GetLearningRate in src/caffe/solvers/sgd_solver.cpp).

`learning_rate(solver_param, iter, current_step)` returns the rate for iteration `iter` (the number of
updates done so far) and the new `current_step`, which Caffe keeps in the solver and in .solverstate.

Precision follows Caffe's float solver: the small sums are float32, `pow`/`exp` run in double (C++
promotes `pow(float, int)`), and the rate is rounded to float32 at the end, as Caffe's `Dtype rate`.
"""
from __future__ import annotations

import numpy as np

from ..errors import NetspecError

f32 = np.float32


def _pow(base: float, exponent: float) -> float:
    """C's pow in double (NaN or inf where Python's ** would give a complex number or raise)."""
    with np.errstate(all="ignore"):
        return float(np.power(np.float64(base), np.float64(exponent)))


def _check(ok: bool, what: str, file) -> None:
    if not ok:
        raise NetspecError(what, file=file)


def _step(p, iter, current_step, file):
    _check(p.stepsize > 0, f"lr_policy 'step' needs stepsize > 0, found {p.stepsize}", file)
    _check(p.gamma >= 0, f"lr_policy 'step' needs gamma >= 0, found {p.gamma}", file)
    current_step = iter // p.stepsize
    return float(p.base_lr) * _pow(p.gamma, current_step), current_step


def _multistep(p, iter, current_step, file):
    # Caffe advances at most one step per call (an `if`, not a loop); stepvalues must be increasing.
    if current_step < len(p.stepvalue) and iter >= p.stepvalue[current_step]:
        current_step += 1
    _check(p.gamma >= 0, f"lr_policy 'multistep' needs gamma >= 0, found {p.gamma}", file)
    return float(p.base_lr) * _pow(p.gamma, current_step), current_step


def _exp(p, iter, current_step, file):
    _check(p.gamma >= 0, f"lr_policy 'exp' needs gamma >= 0, found {p.gamma}", file)
    return float(p.base_lr) * _pow(p.gamma, iter), current_step


def _inv(p, iter, current_step, file):
    _check(p.gamma >= 0, f"lr_policy 'inv' needs gamma >= 0, found {p.gamma}", file)
    base = f32(1) + f32(p.gamma) * f32(iter)
    return float(p.base_lr) * _pow(base, -float(p.power)), current_step


def _poly(p, iter, current_step, file):
    _check(p.max_iter > 0, f"lr_policy 'poly' needs max_iter > 0, found {p.max_iter}", file)
    base = f32(1) - f32(iter) / f32(p.max_iter)
    return float(p.base_lr) * _pow(base, p.power), current_step


def _sigmoid(p, iter, current_step, file):
    _check(p.gamma >= 0, f"lr_policy 'sigmoid' needs gamma >= 0, found {p.gamma}", file)
    _check(p.stepsize > 0, f"lr_policy 'sigmoid' needs stepsize > 0, found {p.stepsize}", file)
    arg = -f32(p.gamma) * (f32(iter) - f32(p.stepsize))
    with np.errstate(over="ignore"):
        decay = 1.0 / (1.0 + np.exp(np.float64(arg)))
    return float(p.base_lr) * float(decay), current_step


POLICIES = {
    "fixed": lambda p, iter, current_step, file: (float(p.base_lr), current_step),
    "step": _step,
    "exp": _exp,
    "inv": _inv,
    "multistep": _multistep,
    "poly": _poly,
    "sigmoid": _sigmoid,
    # netspec's extension: the rate before any drop; the solver applies the drops (solver/plateau.py).
    "plateau": lambda p, iter, current_step, file: (float(p.base_lr), current_step),
}


def learning_rate(solver_param, iter: int, current_step: int = 0, file=None) -> tuple[float, int]:
    """The rate at iteration `iter` under `solver_param.lr_policy`, and the updated current_step.

    The rate is a Python float holding a float32 value (Caffe's `Dtype rate`).
    """
    policy = solver_param.lr_policy
    if policy not in POLICIES:
        found = f"'{policy}'" if policy else "no lr_policy"
        raise NetspecError(f"unknown lr_policy: expected one of {', '.join(POLICIES)}, found {found}",
                           file=file)
    rate, current_step = POLICIES[policy](solver_param, iter, current_step, file)
    return float(f32(rate)), current_step
