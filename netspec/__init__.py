"""netspec: Caffe's workflow on PyTorch.

Compile Caffe prototxt nets into PyTorch graphs, train them with Caffe's solver rules, and read and
write Caffe's formats. `import netspec as caffe` gives pycaffe's API: Net, the solvers, NetSpec with
`layers as L` / `params as P`, TRAIN/TEST and the mode functions.
"""
__version__ = "0.1.0"

from .errors import NetspecError  # noqa: E402
from .proto import pb  # noqa: E402

TRAIN, TEST = pb.TRAIN, pb.TEST

from .pycaffe.net import (Blob, Net, layer_type_list, set_device, set_mode_cpu, set_mode_gpu,  # noqa: E402
                      set_random_seed)
from .net_spec import NetSpec, to_proto  # noqa: E402
from .pycaffe.solver import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,  # noqa: E402
                                    RMSPropSolver, SGDSolver, get_solver, get_solver_from_file)
from . import net_spec as _net_spec  # noqa: E402

# pycaffe's `from caffe import layers as L, params as P`: these names shadow the netspec.layers
# package on purpose (the package stays importable as `netspec.layers.<family>`).
layers = _net_spec.layers
params = _net_spec.params

__all__ = ["Net", "Blob", "TRAIN", "TEST", "NetSpec", "layers", "params", "to_proto", "layer_type_list",
           "set_mode_cpu", "set_mode_gpu", "set_device", "set_random_seed", "NetspecError", "pb",
           "get_solver", "get_solver_from_file", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
           "AdaDeltaSolver", "AdamSolver"]
