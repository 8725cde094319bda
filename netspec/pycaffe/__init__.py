"""pycaffe's API on netspec (`import netspec as caffe`): Net and Blob, the solvers, and — as pycaffe
lays them out — io, classifier, detector, draw and coord_map. It sits on top of the library: nothing
below it imports from here."""
from .blob import Blob
from .net import Net, current_device, layer_type_list, set_device, set_mode_cpu, set_mode_gpu, set_random_seed
from .solver import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver, SGDSolver,
                     get_solver, get_solver_from_file)

__all__ = ["Blob", "Net", "current_device", "layer_type_list", "set_device", "set_mode_cpu", "set_mode_gpu",
           "set_random_seed", "AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "NesterovSolver",
           "RMSPropSolver", "SGDSolver", "get_solver", "get_solver_from_file"]
