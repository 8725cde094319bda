"""pycaffe's solver classes (python/caffe/_caffe.cpp: Solver, SGDSolver ... AdamSolver, get_solver)
over netspec's Solver, with pycaffe Nets as the train and test nets.

    solver = caffe.get_solver("solver.prototxt")       # the class named by the file's `type`
    solver.net.blobs["data"].data[...] = x              # feeds the next iteration's forward
    solver.step(1)                                      # solver.net.blobs["loss"] holds its loss

As in pycaffe, the nets follow the current mode (set_mode_cpu/gpu, set_device), not the file's
solver_mode; `SGDSolver(f)` is an SGD solver whatever `type` the file names; random_seed >= 0 seeds
the global RNG before the nets are built (Caffe::set_random_seed).
"""
from __future__ import annotations

import numpy as np
import torch

from . import net as pycaffe
from ..frontend import load_solver
from ..proto import pb
from ..solver.solver import Solver as _Core

f32 = np.float32


class _PycaffeCore(_Core):
    """netspec's Solver driving pycaffe Nets, so blobs fed and read through `net.blobs` take part."""

    def __init__(self, param, source, solver_type):
        self.pynets: dict[int, pycaffe.Net] = {}
        if param.random_seed >= 0:
            pycaffe.set_random_seed(int(param.random_seed))
        super().__init__(param, source, device=pycaffe.current_device(), solver_type=solver_type)

    def build_net(self, src, phase):
        source = self._net_source(src)
        if source is None:
            model = pb.NetParameter()
            model.CopyFrom(src.param)
            model.state.CopyFrom(src.state)
        else:
            model = source
        net = pycaffe.Net(model, phase=phase, level=src.state.level, stages=list(src.state.stage),
                          device_map=self.device_map)
        self.pynets[id(net.compiled)] = net
        return net.compiled

    def pynet(self, compiled) -> pycaffe.Net:
        return self.pynets[id(compiled)]

    @staticmethod
    def _loss(net: pycaffe.Net) -> float:
        total = f32(0)
        for b, w in net.compiled.loss_weights.items():
            total = f32(total + f32(w) * net.blobs[b].data.sum(dtype=f32))
        return float(total)

    def forward_backward(self) -> float:
        net = self.pynet(self.net)
        net.forward()
        net.backward()
        return self._loss(net)

    def forward_loss(self) -> float:
        net = self.pynet(self.net)
        net.forward()
        return self._loss(net)

    def train_outputs(self) -> dict:
        net = self.pynet(self.net)
        return {b: net.blobs[b].data for b in net.outputs}

    def test_forward(self, i):
        net = self.pynet(self.test_nets[i])
        out = net.forward()
        loss = self._loss(net) if self.param.test_compute_loss else 0.0
        return {b: torch.from_numpy(np.array(v, dtype=f32)) for b, v in out.items()}, loss


class _Callback:
    def __init__(self, on_start, on_gradients_ready):
        self.on_start, self.on_gradients_ready = on_start, on_gradients_ready


class Solver:
    """pycaffe's caffe.Solver: net, test_nets, iter, param; step, solve, restore, snapshot,
    share_weights, apply_update, add_callback."""

    _type: str | None = None

    def __init__(self, solver_file):
        if isinstance(solver_file, pb.SolverParameter):
            param, source = solver_file, None
        else:
            param, source = load_solver(solver_file)
        self._core = _PycaffeCore(param, source, self._type)

    @property
    def net(self) -> pycaffe.Net:
        return self._core.pynet(self._core.net)

    @property
    def test_nets(self) -> list:
        return [self._core.pynet(n) for n in self._core.test_nets]

    @property
    def iter(self) -> int:
        return self._core.iter

    @property
    def max_iter(self) -> int:
        return self._core.param.max_iter

    @property
    def param(self) -> pb.SolverParameter:
        return self._core.param

    @property
    def type(self) -> str:
        return self._core.rule.type

    def step(self, iters: int) -> None:
        self._core.step(iters)

    def solve(self, resume_file=None) -> None:
        self._core.solve(resume_file)

    def restore(self, state_file) -> None:
        self._core.restore(state_file)

    def snapshot(self) -> None:
        self.net._sync_host_writes()      # .data written from Python on a GPU net reaches the device
        self._core.snapshot()

    def apply_update(self) -> None:
        self.net._sync_host_writes()
        self._core.apply_update()

    def share_weights(self, net: pycaffe.Net) -> None:
        """Give `net` the train net's blobs for every layer of the same name."""
        self._core.share_trained_layers(net.compiled)

    def add_callback(self, on_start, on_gradients_ready) -> None:
        self._core.callbacks.append(_Callback(on_start, on_gradients_ready))


class SGDSolver(Solver):
    _type = "SGD"


class NesterovSolver(Solver):
    _type = "Nesterov"


class AdaGradSolver(Solver):
    _type = "AdaGrad"


class RMSPropSolver(Solver):
    _type = "RMSProp"


class AdaDeltaSolver(Solver):
    _type = "AdaDelta"


class AdamSolver(Solver):
    _type = "Adam"


SOLVERS = {c._type: c for c in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver, AdaDeltaSolver,
                                AdamSolver)}


def get_solver(solver_file) -> Solver:
    """The solver the file's `type` (or deprecated solver_type) names (pycaffe's caffe.get_solver)."""
    param, source = load_solver(solver_file)
    solver = Solver.__new__(SOLVERS.get(param.type, Solver))
    solver._core = _PycaffeCore(param, source, None)
    return solver


get_solver_from_file = get_solver
