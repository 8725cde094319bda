"""pycaffe's `caffe.io` under netspec's name (`import netspec as caffe; caffe.io.load_image(...)`).

The implementation is netspec/pycaffe/io.py; netspec's own readers and writers of Caffe's files are
netspec.formats.
"""
from .pycaffe.io import (ArrayError, Transformer, array_to_blobproto, array_to_datum,
                         arraylist_to_blobprotovector_str, blobproto_to_array,
                         blobprotovector_str_to_arraylist, datum_to_array, load_image, oversample,
                         resize_image)

__all__ = ["Transformer", "load_image", "resize_image", "oversample", "blobproto_to_array",
           "array_to_blobproto", "arraylist_to_blobprotovector_str", "blobprotovector_str_to_arraylist",
           "array_to_datum", "datum_to_array", "ArrayError"]
