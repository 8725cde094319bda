"""pycaffe's `caffe.classifier` under netspec's name; the implementation is
netspec/pycaffe/classifier.py."""
from .pycaffe.classifier import Classifier

__all__ = ["Classifier"]
