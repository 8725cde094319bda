"""netspec.io as pycaffe's caffe.io: pycaffe's numbers on test images.

References are computed independently of netspec: skimage (resize with order=1, mode='constant' and
no anti-aliasing, as in pycaffe's day; imread + img_as_float) and scipy.ndimage.zoom when they are
importable, else float64 pixel loops written from skimage's and ndimage's definitions below; Pillow
(matplotlib's dependency) decodes the files for load_image's reference.
"""
import math

import cv2
import numpy as np
import pytest
from PIL import Image

import netspec.io as cio
from netspec.errors import NetspecError
from netspec.proto import pb

try:
    import scipy.ndimage as ndi
    import skimage.transform as sktf
except ImportError:  # the loops below stand in
    sktf = ndi = None


def _sample(im, r, c):
    """skimage's bilinear_interpolation with mode='constant', cval=0, at (r, c)."""
    def px(i, j):
        return im[i, j] if 0 <= i < im.shape[0] and 0 <= j < im.shape[1] else 0.0
    r0, c0 = math.floor(r), math.floor(c)
    dr, dc = r - r0, c - c0
    top = (1 - dc) * px(r0, c0) + dc * px(r0, c0 + 1)
    bottom = (1 - dc) * px(r0 + 1, c0) + dc * px(r0 + 1, c0 + 1)
    return (1 - dr) * top + dr * bottom


def ref_resize_std(im, new_dims):
    """skimage.transform.resize(im, new_dims, order=1, mode='constant', anti_aliasing=False)."""
    if sktf is not None:
        return sktf.resize(im, new_dims, order=1, mode="constant", anti_aliasing=False)
    h, w = new_dims
    sr, sc = im.shape[0] / h, im.shape[1] / w
    out = np.zeros((h, w, im.shape[2]))
    for k in range(im.shape[2]):
        for i in range(h):
            for j in range(w):
                out[i, j, k] = _sample(im[:, :, k].astype(np.float64), (i + 0.5) * sr - 0.5, (j + 0.5) * sc - 0.5)
    return np.clip(out, im.min(), im.max())


def ref_zoom(im, new_dims):
    """scipy.ndimage.zoom(im, new/old + (1,), order=1): corner-aligned linear interpolation."""
    scale = tuple(np.array(new_dims, dtype=float) / np.array(im.shape[:2]))
    if ndi is not None:
        return ndi.zoom(im, scale + (1,), order=1)
    h, w = new_dims
    out = np.zeros((h, w, im.shape[2]))
    for i in range(h):
        for j in range(w):
            r = i * (im.shape[0] - 1) / (h - 1) if h > 1 else 0
            c = j * (im.shape[1] - 1) / (w - 1) if w > 1 else 0
            out[i, j] = [_sample(im[:, :, k].astype(np.float64), r, c) for k in range(im.shape[2])]
    return out.astype(im.dtype)


def pycaffe_resize(im, new_dims):
    """pycaffe's resize_image around the references above."""
    if im.shape[-1] in (1, 3):
        lo, hi = im.min(), im.max()
        if hi == lo:
            return np.full(tuple(new_dims) + im.shape[-1:], lo, np.float32)
        return (ref_resize_std((im - lo) / (hi - lo), new_dims) * (hi - lo) + lo).astype(np.float32)
    return ref_zoom(im, new_dims).astype(np.float32)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A smooth colour image as PNG and JPEG, its gray version, and an RGBA PNG (OpenCV writes BGR)."""
    d = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    bgr = cv2.GaussianBlur((rng.random((29, 41, 3)) * 255).astype(np.uint8), (5, 5), 2)
    cv2.imwrite(str(d / "c.png"), bgr)
    cv2.imwrite(str(d / "c.jpg"), bgr)
    cv2.imwrite(str(d / "g.png"), bgr[:, :, 0])
    cv2.imwrite(str(d / "a.png"), np.dstack([bgr, bgr[:, :, :1]]))
    cv2.imwrite(str(d / "c16.png"), bgr.astype(np.uint16) * 257 + np.uint16(3))  # 16-bit: img_as_float / 65535
    return d


def ref_load(path, color):
    """skimage.io.imread(as_gray=not color) + img_as_float, with Pillow decoding, as pycaffe's load_image."""
    raw = _pillow_or_opencv(path)
    img = raw / float(np.iinfo(raw.dtype).max)
    if img.ndim == 3:
        img = img[:, :, :3]
        if not color:
            img = img @ np.array([0.2125, 0.7154, 0.0721])  # skimage's rgb2gray
    img = img.astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, None]
        if color:
            img = np.tile(img, (1, 1, 3))
    return img


def _pillow_or_opencv(path):
    """The stored pixels: Pillow's (what skimage reads with), but 16-bit colour, which Pillow cannot
    hold, from OpenCV with its BGR reversed."""
    if path.name == "c16.png":
        return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:, :, ::-1]
    return np.asarray(Image.open(path))


@pytest.mark.parametrize("name", ["c.png", "c.jpg", "g.png", "a.png", "c16.png"])
@pytest.mark.parametrize("color", [True, False])
def test_load_image_matches_skimage_float_rgb(images, name, color):
    got = cio.load_image(str(images / name), color=color)
    ref = ref_load(images / name, color)
    assert got.dtype == np.float32 and got.shape == ref.shape == (29, 41, 3 if color else 1)
    err = np.abs(got - ref).max()
    assert err <= 1e-6, f"{name} color={color}: worst error {err:.2e}"


def test_load_image_missing_file_is_one_line(tmp_path):
    with pytest.raises(NetspecError, match=r"^load_image: '.*nope\.jpg' does not exist$"):
        cio.load_image(str(tmp_path / "nope.jpg"))
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(NetspecError, match="cannot be decoded as an image"):
        cio.load_image(str(tmp_path / "bad.jpg"))


@pytest.mark.parametrize("shape,new", [((9, 13, 3), (20, 7)), ((12, 10, 1), (5, 17)), ((6, 6, 3), (6, 6)),
                                       ((31, 23, 3), (7, 9))])
def test_resize_image_matches_skimage_linear(shape, new):
    im = (np.random.default_rng(1).random(shape) * 255).astype(np.float32)
    got, ref = cio.resize_image(im, new), pycaffe_resize(im, new)
    assert got.dtype == np.float32 and got.shape == new + shape[-1:]
    err = np.abs(got - ref).max() / 255
    assert err <= 1e-6, f"{shape} -> {new}: worst error {err:.2e} of the range"


@pytest.mark.parametrize("shape,new", [((9, 13, 4), (20, 7)), ((8, 5, 2), (3, 11))])
def test_resize_image_other_channel_counts_follow_ndimage_zoom(shape, new):
    im = np.random.default_rng(2).random(shape).astype(np.float32)
    got, ref = cio.resize_image(im, new), pycaffe_resize(im, new)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-6


def test_resize_image_of_a_constant_image_is_that_constant():
    got = cio.resize_image(np.full((4, 5, 3), 7.5, np.float32), (9, 2))
    assert got.shape == (9, 2, 3) and got.dtype == np.float32 and np.all(got == 7.5)


def test_oversample_gives_corners_centre_and_mirrors():
    ims = [np.random.default_rng(3).random((10, 12, 3)).astype(np.float32) for _ in range(2)]
    crops = cio.oversample(ims, (7, 8))
    assert crops.shape == (20, 7, 8, 3)
    # centre: (10/2 - 3.5, 12/2 - 4) = (1.5, 2) truncated to (1, 2), as pycaffe's int array
    boxes = [(0, 0), (0, 4), (3, 0), (3, 4), (1, 2)]
    for n, im in enumerate(ims):
        for k, (y, x) in enumerate(boxes):
            np.testing.assert_array_equal(crops[10 * n + k], im[y:y + 7, x:x + 8])
            np.testing.assert_array_equal(crops[10 * n + 5 + k], im[y:y + 7, x:x + 8][:, ::-1])


@pytest.fixture
def tf():
    return cio.Transformer({"data": (2, 3, 6, 5)})


def test_transformer_preprocess_is_pycaffe_order_and_deprocess_inverts(tf):
    rng = np.random.default_rng(4)
    img = rng.random((6, 5, 3)).astype(np.float32)
    mean = rng.random((3, 6, 5)).astype(np.float32) * 100
    tf.set_transpose("data", (2, 0, 1))
    tf.set_channel_swap("data", (2, 1, 0))
    tf.set_raw_scale("data", 255.0)
    tf.set_mean("data", mean)
    tf.set_input_scale("data", 0.5)
    kept = img.copy()
    got = tf.preprocess("data", img)
    ref = ((img.transpose(2, 0, 1)[[2, 1, 0]] * 255.0 - mean) * 0.5).astype(np.float32)
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(img, kept)  # the caller's image is left alone
    np.testing.assert_allclose(tf.deprocess("data", got[None]), img, atol=1e-5)


def test_transformer_resizes_to_the_input_size(tf):
    img = np.random.default_rng(5).random((9, 4, 3)).astype(np.float32)
    tf.set_transpose("data", (2, 0, 1))
    got = tf.preprocess("data", img)
    np.testing.assert_allclose(got, pycaffe_resize(img, (6, 5)).transpose(2, 0, 1), atol=1e-6)


def test_set_mean_per_channel_and_resized_elementwise(tf):
    tf.set_mean("data", np.array([1.0, 2.0, 3.0]))
    assert tf.mean["data"].shape == (3, 1, 1)
    mean = np.random.default_rng(6).random((3, 12, 10)) * 50 + 10
    tf.set_mean("data", mean)
    lo, hi = mean.min(), mean.max()
    ref = pycaffe_resize(((mean - lo) / (hi - lo)).transpose(1, 2, 0), (6, 5)).transpose(2, 0, 1) * (hi - lo) + lo
    np.testing.assert_allclose(tf.mean["data"], ref, rtol=1e-6)


@pytest.mark.parametrize("mean,message", [
    (np.zeros(4), r"^set_mean\('data'\): the mean has 4 channels, the input 2×3×6×5 has 3$"),
    (np.zeros((1, 2, 3, 4)), r"^set_mean\('data'\): the mean's shape 1×2×3×4 is neither"),
    (np.zeros((4, 6, 5)), r"^set_mean\('data'\): the mean 4×6×5 has 4 channels"),
])
def test_set_mean_of_the_wrong_shape_is_one_line_value_error(tf, mean, message):
    with pytest.raises(ValueError, match=message) as e:
        tf.set_mean("data", mean)
    assert isinstance(e.value, NetspecError) and "\n" not in str(e.value)


def test_transformer_checks_input_names_and_orders(tf):
    with pytest.raises(NetspecError, match="'label' is not one of the net inputs: data"):
        tf.set_raw_scale("label", 2)
    with pytest.raises(NetspecError, match="has 2 axes, the input 2×3×6×5 has 3 per item"):
        tf.set_transpose("data", (1, 0))
    with pytest.raises(NetspecError, match="has 2 channels"):
        tf.set_channel_swap("data", (1, 0))


def test_blobproto_conversion_round_trips_as_pycaffe():
    arr = np.arange(24, dtype=np.float64).reshape(2, 3, 4) / 7
    blob = cio.array_to_blobproto(arr, diff=-arr)
    assert list(blob.shape.dim) == [2, 3, 4]
    np.testing.assert_array_equal(blob.data, arr.astype(np.float32).ravel())
    back = cio.blobproto_to_array(blob)
    assert back.dtype == np.float64 and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, arr.astype(np.float32))
    np.testing.assert_array_equal(cio.blobproto_to_array(blob, return_diff=True), -arr.astype(np.float32))
    legacy = pb.BlobProto(num=1, channels=2, height=1, width=3, data=[1, 2, 3, 4, 5, 6])
    assert cio.blobproto_to_array(legacy).shape == (1, 2, 1, 3)
    with pytest.raises(ValueError, match="holds 6 data values but its shape 1×2×1×2 needs 4"):
        cio.blobproto_to_array(pb.BlobProto(num=1, channels=2, height=1, width=2, data=[1, 2, 3, 4, 5, 6]))


def test_blobprotovector_str_round_trip_and_bytes():
    arrays = [np.ones((2, 3)), np.arange(4.0)]
    s = cio.arraylist_to_blobprotovector_str(arrays)
    ref = pb.BlobProtoVector()
    for a in arrays:  # pycaffe's construction: shape.dim extended, data extended with the floats
        b = ref.blobs.add()
        b.shape.dim.extend(a.shape)
        b.data.extend(a.astype(float).flat)
    assert s == ref.SerializeToString()
    back = cio.blobprotovector_str_to_arraylist(s)
    assert [b.shape for b in back] == [(2, 3), (4,)]
    np.testing.assert_array_equal(back[1], arrays[1])


def test_datum_conversion_as_pycaffe():
    u8 = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    d = cio.array_to_datum(u8, label=7)
    ref = pb.Datum(channels=2, height=3, width=4, data=u8.tobytes(), label=7)
    assert d.SerializeToString() == ref.SerializeToString()
    np.testing.assert_array_equal(cio.datum_to_array(d), u8)
    f = np.linspace(0, 1, 24).reshape(2, 3, 4)
    df = cio.array_to_datum(f)
    assert not df.HasField("label") and len(df.data) == 0 and len(df.float_data) == 24
    back = cio.datum_to_array(df)
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, f.astype(np.float32))
    with pytest.raises(ValueError, match="must be 3-D"):
        cio.array_to_datum(np.zeros((2, 2)))
