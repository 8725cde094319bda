"""pycaffe's `caffe.detector` under netspec's name; the implementation is netspec/pycaffe/detector.py."""
from .pycaffe.detector import Detector  # noqa: F401

__all__ = ["Detector"]
