"""netspec: Caffe's workflow on PyTorch.

Compile Caffe prototxt nets into PyTorch graphs, train them with Caffe's solver rules, and read and
write Caffe's formats. `import netspec as caffe` gives a pycaffe-compatible API.
"""
__version__ = "0.1.0"

from .errors import NetspecError  # noqa: E402
from .proto import pb  # noqa: E402

TRAIN, TEST = pb.TRAIN, pb.TEST
