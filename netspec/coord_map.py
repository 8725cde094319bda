"""pycaffe's `caffe.coord_map` under netspec's name (`from netspec.coord_map import crop`); the
implementation is netspec/pycaffe/coord_map.py."""
from .pycaffe.coord_map import (PASS_THROUGH_LAYERS, AxisMismatchException, CropError,
                                UnconnectedError, UndefinedMapException, compose, conv_params, coord_map,
                                coord_map_from_to, crop, crop_params, inverse)

__all__ = ["PASS_THROUGH_LAYERS", "AxisMismatchException", "UndefinedMapException", "UnconnectedError",
           "CropError", "compose", "conv_params", "coord_map", "coord_map_from_to", "crop", "crop_params",
           "inverse"]
