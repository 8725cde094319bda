"""Caffe's learning-rate policies against the formulas of SGDSolver::GetLearningRate, in plain numpy."""
import math

import numpy as np
import pytest

from netspec.errors import NetspecError
from netspec.proto import pb
from netspec.solver import learning_rate

BASE = dict(base_lr=0.01, gamma=0.5, power=0.75, stepsize=5, max_iter=40)


def _formula(policy, it, p):
    """Caffe's documented formula for one policy (multistep is checked separately)."""
    return {
        "fixed": lambda: p["base_lr"],
        "step": lambda: p["base_lr"] * p["gamma"] ** math.floor(it / p["stepsize"]),
        "exp": lambda: p["base_lr"] * p["gamma"] ** it,
        "inv": lambda: p["base_lr"] * (1 + p["gamma"] * it) ** -p["power"],
        "poly": lambda: p["base_lr"] * (1 - it / p["max_iter"]) ** p["power"],
        "sigmoid": lambda: p["base_lr"] / (1 + math.exp(-p["gamma"] * (it - p["stepsize"]))),
    }[policy]()


def _run(param, iters, current_step=0):
    rates = []
    for it in iters:
        rate, current_step = learning_rate(param, it, current_step)
        rates.append(rate)
    return np.array(rates), current_step


@pytest.mark.parametrize("policy", ["fixed", "step", "exp", "inv", "poly", "sigmoid"])
def test_policy_matches_caffe_formula(policy):
    param = pb.SolverParameter(lr_policy=policy, **BASE)
    iters = range(0, 31)
    got, _ = _run(param, iters)
    # float32 parameters as Caffe reads them from the protobuf
    p32 = {k: float(np.float32(v)) for k, v in BASE.items()}
    want = np.array([_formula(policy, it, p32) for it in iters])
    err = np.max(np.abs(got - want) / np.abs(want))
    assert err < 1e-6, f"lr_policy {policy}: worst relative error {err:.3g}"
    if policy != "fixed":
        assert len(np.unique(got)) > 3, f"lr_policy {policy}: rate never changes over 30 iterations"


def test_step_sets_current_step():
    param = pb.SolverParameter(lr_policy="step", **BASE)
    assert learning_rate(param, 12, 0)[1] == 2


def test_multistep_advances_at_each_stepvalue():
    param = pb.SolverParameter(lr_policy="multistep", base_lr=0.1, gamma=0.1, stepvalue=[3, 7, 15])
    got, current_step = _run(param, range(20))
    want = [0.1 * 0.1 ** sum(it >= s for s in (3, 7, 15)) for it in range(20)]
    err = np.max(np.abs(got - want) / np.abs(want))
    assert err < 1e-6, f"multistep: worst relative error {err:.3g}"
    assert current_step == 3


def test_multistep_moves_one_step_per_call_like_caffe():
    # Caffe tests only the next stepvalue on each call, so a jump past two of them takes two calls.
    param = pb.SolverParameter(lr_policy="multistep", base_lr=1.0, gamma=0.5, stepvalue=[2, 4])
    assert learning_rate(param, 10, 0) == (0.5, 1)
    assert learning_rate(param, 11, 1) == (0.25, 2)


def test_multistep_resumes_from_restored_current_step():
    param = pb.SolverParameter(lr_policy="multistep", base_lr=1.0, gamma=0.5, stepvalue=[2, 4, 8])
    assert learning_rate(param, 5, 2) == (0.25, 2)


def test_rate_is_float32_value():
    param = pb.SolverParameter(lr_policy="exp", base_lr=0.01, gamma=0.9)
    rate, _ = learning_rate(param, 3)
    assert rate == float(np.float32(rate))


def test_unknown_policy_names_solver_file():
    param = pb.SolverParameter(lr_policy="cosine", base_lr=0.1)
    with pytest.raises(NetspecError, match=r"^solver\.prototxt: .*lr_policy.*'cosine'") as e:
        learning_rate(param, 0, 0, file="solver.prototxt")
    assert "\n" not in str(e.value)


def test_missing_policy_is_an_error():
    with pytest.raises(NetspecError, match="no lr_policy"):
        learning_rate(pb.SolverParameter(base_lr=0.1), 0, 0)


def test_step_needs_positive_stepsize():
    param = pb.SolverParameter(lr_policy="step", base_lr=0.1, gamma=0.1)
    with pytest.raises(NetspecError, match="stepsize > 0"):
        learning_rate(param, 0, 0, file="s.prototxt")
