"""netspec.coord_map as pycaffe's caffe.coord_map: maps worked out by hand from the layers' kernel,
stride and pad, and a crop() layer that netspec's Crop runs at the offset the map gives."""
import numpy as np
import pytest

import netspec as caffe
from netspec import layers as L
from netspec import params as P
from netspec.coord_map import coord_map_from_to, crop
from netspec.errors import NetspecError


def fcn(ks=3, pad=0, pool=2, dstride=2, dpad=0):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=2, kernel_size=ks, pad=pad, weight_filler=dict(type="gaussian"))
    n.relu = L.ReLU(n.conv)
    n.pool = L.Pooling(n.relu, pool=P.Pooling.MAX, kernel_size=pool, stride=pool)
    n.deconv = L.Deconvolution(n.pool, convolution_param=dict(num_output=1, kernel_size=2 * dstride,
                               stride=dstride, pad=dpad, weight_filler=dict(type="gaussian")))
    return n


@pytest.mark.parametrize("ks,pad,pool,dstride,dpad", [(3, 0, 2, 2, 0), (5, 1, 4, 4, 0), (3, 2, 2, 2, 1)])
def test_map_composes_conv_pool_deconv(ks, pad, pool, dstride, dpad):
    # data -> conv: x' = x + (pad - (ks-1)/2); pool: x'' = (x' - (pool-1)/2) / pool;
    # deconv: y = dstride·x'' + (2·dstride - 1)/2 - dpad, so y = A·x + B; the map from deconv to data
    # is the inverse, x = y/A - B/A.
    shift_conv = pad - (ks - 1) / 2
    a_pool, b_pool = 1 / pool, -(pool - 1) / 2 / pool
    big_a = a_pool * dstride
    big_b = dstride * (b_pool + a_pool * shift_conv) + (2 * dstride - 1) / 2 - dpad
    a, b = 1 / big_a, -big_b / big_a
    n = fcn(ks, pad, pool, dstride, dpad)
    ax, a_got, b_got = coord_map_from_to(n.deconv, n.data)
    assert ax == 1
    np.testing.assert_allclose(a_got, a)
    np.testing.assert_allclose(b_got, b)


def test_crop_layer_runs_at_the_mapped_offset():
    n = fcn(ks=3, pad=2, pool=2, dstride=2, dpad=0)   # 20 -> conv (pad 2) 22 -> pool 11 -> deconv 24
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert ax == 1 and a == 1 and b == -2
    n.score = crop(n.deconv, n.data)
    layer = n.to_proto().layer[-1]
    assert layer.type == "Crop" and layer.crop_param.axis == 2 and list(layer.crop_param.offset) == [2]
    net = caffe.Net(n.to_proto(), caffe.TEST)
    net.blobs["data"].data[...] = np.random.default_rng(0).random((1, 1, 20, 20))
    net.forward()
    deconv = net.blobs["deconv"].data
    assert deconv.shape == (1, 1, 24, 24)
    np.testing.assert_array_equal(net.blobs["score"].data, deconv[:, :, 2:22, 2:22])


def test_unconnected_and_uncroppable_are_one_line_errors_of_pycaffe_types():
    n = fcn()
    n.ip = L.InnerProduct(n.deconv, num_output=3)
    with pytest.raises(RuntimeError, match="share no blob") as e:
        coord_map_from_to(n.ip, n.data)
    assert isinstance(e.value, NetspecError)
    n = fcn(pool=3, dstride=2)
    with pytest.raises(AssertionError, match=r"differ in scale"):
        crop(n.deconv, n.data)
    n = fcn(dpad=3)
    with pytest.raises(AssertionError, match=r"offset would be negative"):
        crop(n.deconv, n.data)
