"""pycaffe's caffe.coord_map (python/caffe/coord_map.py): how the spatial coordinates of one NetSpec
top relate to another's, and a Crop layer that aligns them (as FCN's nets use it).

A coordinate map is (axis, scale a, shift b): output coordinate = a · input coordinate + b, per
spatial axis (a and b are arrays when a layer's kernel, stride or pad differ per axis). Pointwise
layers map as (None, 1, 0). Maps compose along the graph; `coord_map_from_to` walks back from both
tops to a common blob. Errors keep pycaffe's exception types (RuntimeError for unconnected tops,
AssertionError for a crop that cannot be made) and are one-line NetspecErrors too.
"""
from __future__ import annotations

import numpy as np

from ..errors import NetspecError
from ..net_spec import layers as L

PASS_THROUGH_LAYERS = ['AbsVal', 'BatchNorm', 'Bias', 'BNLL', 'Dropout', 'Eltwise', 'ELU', 'Log', 'LRN',
                       'Exp', 'MVN', 'Power', 'ReLU', 'PReLU', 'Scale', 'Sigmoid', 'Split', 'TanH',
                       'Threshold']


class UndefinedMapException(Exception):
    """The layer has no coordinate mapping (InnerProduct, Reshape, ...): the walk stops there."""


class AxisMismatchException(NetspecError):
    """Two maps on different axes cannot compose."""


class UnconnectedError(NetspecError, RuntimeError):
    """No common blob is reachable through spatial layers."""


class CropError(NetspecError, AssertionError):
    """The map between two tops is not a pure non-negative integer shift."""


def conv_params(fn):
    """(axis, stride, effective kernel extent, pad) of a Convolution, Deconvolution, Im2col or
    Pooling layer, each an array over the spatial axes."""
    params = fn.params.get('convolution_param', fn.params)
    legacy = {'pad_h', 'pad_w', 'kernel_h', 'kernel_w', 'stride_h', 'stride_w'} & set(params)
    if legacy:
        raise CropError(f"coord_map: {fn.type_name} uses {', '.join(sorted(legacy))}; give kernel_size, "
                        "stride and pad (lists for per-axis values)")
    ks = np.array(params['kernel_size'], ndmin=1)
    dilation = np.array(params.get('dilation', 1), ndmin=1)
    return (params.get('axis', 1), np.array(params.get('stride', 1), ndmin=1), (ks - 1) * dilation + 1,
            np.array(params.get('pad', 0), ndmin=1))


def crop_params(fn):
    """(axis, offset) of a Crop layer with Caffe's defaults (axis 2: crop H and W of N×C×H×W)."""
    params = fn.params.get('crop_param', fn.params)
    return params.get('axis', 2), np.array(params.get('offset', 0), ndmin=1)


def coord_map(fn):
    """The (axis, scale, shift) map from a layer's bottom coordinates to its top's."""
    if fn.type_name in ('Convolution', 'Pooling', 'Im2col'):
        axis, stride, ks, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (ks - 1) / 2) / stride
    if fn.type_name == 'Deconvolution':
        axis, stride, ks, pad = conv_params(fn)
        return axis, stride, (ks - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if fn.type_name == 'Crop':
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset  # the map's axis is the last non-spatial one
    raise UndefinedMapException(fn.type_name)


def compose(base_map, next_map):
    """base_map followed by next_map: scales multiply, next's shift is scaled by base's scale."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is not None and ax2 is not None and ax1 != ax2:
        raise AxisMismatchException(f"coord_map: maps on axis {ax1} and axis {ax2} do not compose")
    return (ax2 if ax1 is None else ax1), a1 * a2, a1 * b2 + b1


def inverse(coord_map):
    """The map back: de-scale and un-shift."""
    ax, a, b = coord_map
    return ax, 1 / a, -b / a


def _bottoms(top):
    # A Crop's second bottom only gives the size: coordinates flow from the first.
    inputs = top.fn.inputs
    return inputs[:1] if top.fn.type_name == 'Crop' else inputs


def _walk(start, maps, stop=None):
    """Maps from every ancestor of `start` reachable through mappable layers (composed into
    `maps`); with `stop`, the first ancestor found in `stop` and its map."""
    frontier = [start]
    while frontier:
        top = frontier.pop()
        if stop is not None and top in stop:
            return top
        try:
            step = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _bottoms(top):
            maps[bottom] = compose(maps[top], step)
            frontier.append(bottom)
    return None


def coord_map_from_to(top_from, top_to):
    """The (axis, scale, shift) taking coordinates of `top_from` to those of `top_to`, through their
    common ancestor blob."""
    from_maps = {top_from: (None, 1, 0)}
    _walk(top_from, from_maps)
    to_maps = {top_to: (None, 1, 0)}
    common = _walk(top_to, to_maps, stop=from_maps)
    if common is None:
        raise UnconnectedError("coord_map: the two tops share no blob reachable through spatial layers "
                               "(convolution, pooling, deconvolution, crop, pointwise)")
    return compose(to_maps[common], inverse(from_maps[common]))


def crop(top_from, top_to):
    """A Crop layer (NetSpec Top) cutting `top_from` to `top_to`'s extent at the offset their
    coordinate map gives."""
    ax, a, b = coord_map_from_to(top_from, top_to)
    if not np.all(a == 1):
        raise CropError(f"crop: the tops differ in scale (a = {a}); a crop can only shift")
    if not np.all(b <= 0):
        raise CropError(f"crop: the offset would be negative (b = {b}); the top to crop is smaller")
    if not np.all(np.round(b) == b):
        raise CropError(f"crop: the offset is not a whole number of pixels (b = {b})")
    return L.Crop(top_from, top_to,
                  crop_param=dict(axis=ax + 1, offset=[int(v) for v in -np.round(np.atleast_1d(b))]))
