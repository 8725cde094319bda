"""pycaffe's `caffe.detector` under netspec's name; the implementation is netspec/pycaffe/detector.py."""
from .pycaffe.detector import Detector

__all__ = ["Detector"]
