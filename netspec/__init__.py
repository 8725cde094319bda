"""netspec: Caffe's workflow on PyTorch.

Compile Caffe prototxt nets into PyTorch graphs, train them with Caffe's solver rules, and read and
write Caffe's formats. `import netspec as caffe` gives pycaffe's API: Net, the solvers, NetSpec with
`layers as L` / `params as P`, TRAIN/TEST and the mode functions.
"""
__version__ = "0.1.0"

import importlib
import sys
import types

from .errors import NetspecError  # noqa: E402
from .proto import pb  # noqa: E402

TRAIN, TEST = pb.TRAIN, pb.TEST

# pycaffe's API is imported on first use, so that `import netspec` (and with it `netspec --help`) does
# not load torch, which takes seconds. Each name -> the module that defines it.
_LAZY = {
    **dict.fromkeys(["Blob", "Net", "layer_type_list", "set_device", "set_mode_cpu", "set_mode_gpu",
                     "set_random_seed"], ".pycaffe.net"),
    **dict.fromkeys(["NetSpec", "to_proto", "params"], ".net_spec"),
    **dict.fromkeys(["AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "NesterovSolver", "RMSPropSolver",
                     "SGDSolver", "get_solver", "get_solver_from_file"], ".pycaffe.solver"),
    "Layer": ".pycaffe.layer",
    **dict.fromkeys(["has_nccl", "NCCL", "Timer", "init_log", "log", "solver_count", "set_solver_count",
                     "solver_rank", "set_solver_rank", "set_multiprocess"], ".pycaffe.runtime"),
    "Classifier": ".pycaffe.classifier",
    "Detector": ".pycaffe.detector",
}
# pycaffe's modules, reachable as attributes once `import netspec as caffe` (pycaffe's __init__ imports io).
_SUBMODULES = ("io", "draw", "coord_map", "classifier", "detector", "net_spec", "pycaffe")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module("." + name, __name__)
    if name not in _LAZY:
        raise AttributeError(f"module 'netspec' has no attribute '{name}'")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    """pycaffe's `from caffe import layers as L` means net_spec's layer factory, not the netspec.layers
    package; importing that package binds it as an attribute here, which the setter ignores (the package
    stays importable as `netspec.layers.<family>`)."""

    @property
    def layers(self):
        return importlib.import_module(".net_spec", __name__).layers

    @layers.setter
    def layers(self, value) -> None:
        pass


sys.modules[__name__].__class__ = _Package

__all__ = ["Net", "Blob", "TRAIN", "TEST", "NetSpec", "layers", "params", "to_proto", "layer_type_list",
           "set_mode_cpu", "set_mode_gpu", "set_device", "set_random_seed", "NetspecError", "pb",
           "get_solver", "get_solver_from_file", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
           "AdaDeltaSolver", "AdamSolver", "Layer", "Classifier", "Detector", "has_nccl", "NCCL", "Timer",
           "init_log", "log", "solver_count", "set_solver_count", "solver_rank", "set_solver_rank",
           "set_multiprocess", "io"]
