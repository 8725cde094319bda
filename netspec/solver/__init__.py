"""Training with Caffe's exact solver rules: learning-rate policies, per-blob update rules, and the
Solver that runs Caffe's Step/Test/Snapshot loop over compiled nets.

    rate, current_step = learning_rate(solver_param, iter, current_step, file=solver_path)
    rule = make_update_rule(solver_param, file=solver_path)   # "SGD", "Nesterov", "AdaGrad", ...
    rule.init(net.learnable_params())
    rule.apply(net.learnable_params(), rate, iter)            # grads in .grad, weights updated in place
"""
import importlib

# Names are imported on first use: the CLI's help and light modules (atomic, log) must not pay for torch.
_LAZY = {
    **dict.fromkeys(['POLICIES', 'learning_rate'], '.lr_policy'),
    **dict.fromkeys(['RULES', 'UpdateRule', 'make_update_rule', 'solver_type'], '.update'),
    **dict.fromkeys(['NonFiniteLoss', 'Solver'], '.solver'),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


__all__ = ["POLICIES", "RULES", "UpdateRule", "learning_rate", "make_update_rule", "solver_type", "Solver",
           "NonFiniteLoss"]
