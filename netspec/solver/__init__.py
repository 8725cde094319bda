"""Training with Caffe's exact solver rules: learning-rate policies, per-blob update rules, and the
Solver that runs Caffe's Step/Test/Snapshot loop over compiled nets.

    rate, current_step = learning_rate(solver_param, iter, current_step, file=solver_path)
    rule = make_update_rule(solver_param, file=solver_path)   # "SGD", "Nesterov", "AdaGrad", ...
    rule.init(net.learnable_params())
    rule.apply(net.learnable_params(), rate, iter)            # grads in .grad, weights updated in place
"""
from ..lazy import lazy_getattr

# Names are imported on first use (netspec/lazy.py).
_LAZY = {
    **dict.fromkeys(['POLICIES', 'learning_rate'], '.lr_policy'),
    **dict.fromkeys(['RULES', 'UpdateRule', 'make_update_rule', 'solver_type'], '.update'),
    **dict.fromkeys(['NonFiniteLoss', 'Solver'], '.solver'),
}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = ["POLICIES", "RULES", "UpdateRule", "learning_rate", "make_update_rule", "solver_type", "Solver",
           "NonFiniteLoss"]
