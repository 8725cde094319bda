"""lr_policy "plateau": the AlexNet paper's own schedule (Krizhevsky, Sutskever and Hinton 2012,
section 5: "divide the learning rate by 10 when the validation error rate stopped improving with the
current learning rate"), a netspec extension that Caffe lacks.

The rule watches one output of one test net (`plateau_param`, SolverParameter field 10006) and is
decided only when that test net has run, so every rank decides the same thing from rank 0's numbers.
It follows PyTorch's ReduceLROnPlateau with a relative threshold:

- a pass improves when it beats the best so far by more than `threshold` × |best|;
- after more than `patience` passes in a row without improvement the rate is multiplied by `factor`
  (never below `min_lr`, at most `max_drops` times when that is set), and the count starts again;
- for `cooldown` passes after a drop, passes without improvement are not counted.

Its progress (best, passes without improvement, cooldown left, drops, rate) travels in the
solverstate's `plateau_state` (field 10001), so a resumed run continues exactly; a state without it
(Caffe's, or another policy's) starts the rule afresh at base_lr.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import NetspecError
from ..proto import pb

f32 = np.float32


@dataclass
class Plateau:
    param: pb.PlateauParameter
    lr: float
    best: float | None = None
    bad_passes: int = 0
    cooldown_left: int = 0
    drops: int = 0

    @classmethod
    def start(cls, sp: pb.SolverParameter) -> "Plateau":
        return cls(sp.plateau_param, float(f32(sp.base_lr)))

    def improves(self, value: float) -> bool:
        if self.best is None:
            return math.isfinite(value)
        margin = float(self.param.threshold) * abs(self.best)
        return value > self.best + margin if self.param.mode == "max" else value < self.best - margin

    def observe(self, value: float) -> str | None:
        """One test pass's value of the watched output; returns why the rate dropped, or None."""
        if self.improves(value):
            self.best, self.bad_passes = float(value), 0
        else:
            self.bad_passes += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_passes = 0
        p = self.param
        if self.bad_passes <= p.patience or (p.max_drops and self.drops >= p.max_drops):
            return None
        lowered = float(f32(max(self.lr * float(p.factor), float(p.min_lr))))
        waited = self.bad_passes
        self.bad_passes, self.cooldown_left = 0, p.cooldown
        if lowered >= self.lr:
            return None
        self.lr, self.drops = lowered, self.drops + 1
        cap = f" of at most {p.max_drops}" if p.max_drops else ""
        return (f"{p.output} = {value:g} has not improved on the best {self.best:g} for {waited} test "
                f"pass(es) (patience {p.patience}): lr multiplied by {float(f32(p.factor)):g} "
                f"(drop {self.drops}{cap})")

    # ---- the solverstate extension and the ranks' agreement --------------------------------------
    def to_proto(self) -> pb.PlateauState:
        return pb.PlateauState(best=self.best or 0.0, has_best=self.best is not None, bad_passes=self.bad_passes,
                               cooldown_left=self.cooldown_left, drops=self.drops, lr=self.lr)

    def load(self, state: pb.PlateauState) -> None:
        self.best = float(state.best) if state.has_best else None
        self.bad_passes, self.cooldown_left = state.bad_passes, state.cooldown_left
        self.drops, self.lr = state.drops, float(state.lr)

    def as_floats(self) -> list[float]:
        return [math.nan if self.best is None else self.best, self.bad_passes, self.cooldown_left,
                self.drops, self.lr]

    def load_floats(self, values) -> None:
        best, bad, cool, drops, lr = (float(v) for v in values)
        self.best = None if math.isnan(best) else best
        self.bad_passes, self.cooldown_left, self.drops, self.lr = int(bad), int(cool), int(drops), lr


def check_plateau(sp: pb.SolverParameter, test_outputs: list[dict[str, int]], source=None) -> None:
    """The solver's plateau settings against its test nets' outputs ({name: number of values} per net),
    one line naming the field."""
    p = sp.plateau_param

    def bad(field: str, what: str):
        raise NetspecError(f"lr_policy 'plateau': plateau_param.{field}: {what}", file=source)

    if not test_outputs:
        bad("test_net", "the rule watches a test net's output, but the solver has no test net "
            "(give test_iter, test_interval and a test net)")
    if not 0 <= p.test_net < len(test_outputs):
        bad("test_net", f"expected a test net index from 0 to {len(test_outputs) - 1}, found {p.test_net}")
    outputs = test_outputs[p.test_net]
    if p.output not in outputs:
        bad("output", f"test net #{p.test_net} has no output '{p.output}' (its outputs: "
            f"{', '.join(outputs) or 'none'})")
    if outputs[p.output] != 1:
        bad("output", f"expected an output holding one value, found '{p.output}' with {outputs[p.output]}")
    if p.mode not in ("max", "min"):
        bad("mode", f"expected \"max\" (higher is better) or \"min\" (lower is better), found \"{p.mode}\"")
    if not 0 < p.factor < 1:
        bad("factor", f"expected a factor between 0 and 1, found {p.factor:g}")
    for name in ("patience", "cooldown", "max_drops"):
        if getattr(p, name) < 0:
            bad(name, f"expected a count >= 0, found {getattr(p, name)}")
    if p.threshold < 0 or p.min_lr < 0:
        bad("threshold" if p.threshold < 0 else "min_lr", "expected a value >= 0")
