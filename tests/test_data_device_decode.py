"""NETSPEC_DATA_DECODE=device (data/device_decode.py): JPEG records decoded by the Data layer on its
device, cropped, mirrored and turned BGR there with the host path's draws. The plumbing is checked
everywhere with OpenCV standing in for the device's decoder (the batches must equal the host path's
bit for bit); torchvision's own CPU decoder (libjpeg-turbo, as OpenCV) where it imports; nvJPEG under
`cuda`. The fixture lmdb_encoded holds real Caffe's JPEG records (tests/data/caffe/README.md)."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from test_data_layer import data_net_layer, layer_for
from test_data_uint8 import resumed_batches

from netspec.data import db as dbmod
from netspec.data import device_decode
from netspec.data.datum import mat_to_datum
from netspec.errors import NetspecError
from netspec.formats.image_header import jpeg_frame
from netspec.layers.data_layer import DataLayer
from netspec.proto import pb

FIX = Path(__file__).parent / "data" / "caffe"


def _opencv_decode(data, channels, device):
    """decode_jpegs as OpenCV would do it: RGB (or gray) CHW uint8, on `device`."""
    out = []
    for t in data:
        mat = cv2.imdecode(t.numpy(), cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE)
        if mat is None:
            raise RuntimeError("Error while decoding JPEG")
        chw = mat[None] if mat.ndim == 2 else mat[..., ::-1].transpose(2, 0, 1)
        out.append(torch.from_numpy(np.ascontiguousarray(chw)).to(device))
    return out


def _has_torchvision() -> bool:
    try:
        device_decode.check_decoder()
        return True
    except NetspecError:
        return False


@pytest.fixture(params=["opencv stand-in", "torchvision"])
def decoder(request, monkeypatch):
    """Which decoder the device side uses: OpenCV standing in, or torchvision's own (CPU)."""
    if request.param == "torchvision":
        if not _has_torchvision():
            pytest.skip("torchvision does not import beside this torch")
    else:
        monkeypatch.setattr(device_decode, "decode_jpegs", _opencv_decode)
        monkeypatch.setattr(device_decode, "check_decoder", lambda: None)
    return request.param


def _tops(lp, phase, n=3, device="cpu", source_dir=FIX):
    layer = DataLayer(lp, [], phase, source_dir=source_dir).to(device)
    layer.reseed(5)
    try:
        return [tuple(t.cpu() for t in layer()) for _ in range(n)], layer.reader().decode_on_device
    finally:
        layer.close()


def _same(ref, got):
    for i, ((a, la), (b, lb)) in enumerate(zip(ref, got)):
        assert torch.equal(a, b), f"batch {i}: worst difference {(a - b).abs().max()}"
        assert torch.equal(la, lb), f"batch {i} labels"


@pytest.mark.parametrize("phase", [pb.TRAIN, pb.TEST])
def test_decoded_on_the_device_equals_the_host_path(decoder, monkeypatch, phase):
    lp = data_net_layer(pb.TRAIN)       # Caffe's JPEG records: random crop 57 of 64, mirror, mean_value
    lp.transform_param.scale = 0.5
    monkeypatch.delenv(device_decode.DECODE_ENV, raising=False)
    ref, on_device = _tops(lp, phase)
    assert not on_device, "the host decodes unless asked"
    monkeypatch.setenv(device_decode.DECODE_ENV, "device")
    got, on_device = _tops(lp, phase)
    assert on_device
    _same(ref, got)


def _smooth(h, w, seed):
    y, x = np.mgrid[0:h, 0:w]
    image = np.stack([(x * 3 + y) % 256, (x + seed * 40) % 256, (y * 2) % 256], -1)
    return np.clip(image + np.random.default_rng(seed).normal(0, 6, image.shape), 0, 255).astype(np.uint8)


def _mixed_source(path: Path) -> Path:
    """JPEGs of two sizes (one progressive, one 4:4:4), a gray JPEG, a PNG and a raw record."""
    w = dbmod.Writer(path)

    def put(i, data, encoded=True, label=None):
        d = pb.Datum(data=data, encoded=encoded, label=i if label is None else label)
        w.put(f"{i:08d}", d.SerializeToString())

    put(0, cv2.imencode(".jpg", _smooth(40, 50, 0))[1].tobytes())
    put(1, cv2.imencode(".jpg", _smooth(36, 36, 1), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes())
    put(2, cv2.imencode(".png", _smooth(40, 50, 2))[1].tobytes())
    put(3, cv2.imencode(".jpg", _smooth(40, 50, 3)[..., 1])[1].tobytes())
    put(4, cv2.imencode(".jpg", _smooth(44, 40, 4), [cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                                                      cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])[1].tobytes())
    w.put("00000005", mat_to_datum(_smooth(40, 50, 5), 5).SerializeToString())
    w.close()
    return path


def test_mixed_sizes_formats_and_channels(decoder, monkeypatch, tmp_path):
    source = _mixed_source(tmp_path / "mixed")
    lp = layer_for(source, crop_size=32, mirror=True, force_color=True, scale=0.25)
    lp.transform_param.mean_value.extend([100, 110, 120])
    lp.data_param.batch_size = 6
    ref, _ = _tops(lp, pb.TRAIN, n=4, source_dir=None)
    monkeypatch.setenv(device_decode.DECODE_ENV, "device")
    got, on_device = _tops(lp, pb.TRAIN, n=4, source_dir=None)
    assert on_device
    _same(ref, got)
    gray = layer_for(source, crop_size=30, mirror=True, force_gray=True)
    gray.data_param.batch_size = 5      # the raw record (3 channels, no decoding to force) left out
    monkeypatch.delenv(device_decode.DECODE_ENV)
    ref, _ = _tops(gray, pb.TRAIN, n=1, source_dir=None)
    monkeypatch.setenv(device_decode.DECODE_ENV, "device")
    got, _ = _tops(gray, pb.TRAIN, n=1, source_dir=None)
    assert got[0][0].shape == (5, 1, 30, 30)
    _same(ref, got)


def test_the_batch_keeps_each_image_on_its_own_path(monkeypatch, tmp_path):
    """The PNG and the raw record are cropped on the host, the JPEGs (any size) left to the device."""
    from netspec.data.reader import BatchReader
    from netspec.data.transform import DataTransformer
    tp = pb.TransformationParameter(crop_size=32, mirror=True, force_color=True)
    reader = BatchReader(_mixed_source(tmp_path / "mixed"), 6, DataTransformer(tp, pb.TRAIN), seed=3,
                         decode_on_device=True)
    try:
        batch = reader.next()
    finally:
        reader.close()
    assert batch.jpeg_rows == [0, 1, 3, 4] and batch.host_rows == [2, 5]
    assert batch.jpeg_shapes == [(3, 40, 50), (3, 36, 36), (3, 40, 50), (3, 44, 40)]
    assert batch.cropped.shape == (2, 3, 32, 32) and batch.out_shape == (3, 32, 32)


def test_exact_resume_when_decoding_on_the_device(decoder, monkeypatch):
    monkeypatch.setenv(device_decode.DECODE_ENV, "device")
    want, got, reader = resumed_batches()
    _same(want, got)
    assert reader.decode_on_device


def test_jpeg_frame_header():
    progressive = cv2.imencode(".jpg", _smooth(36, 52, 1), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert jpeg_frame(progressive) == (52, 36, 3, 8, 0xC2)
    gray = cv2.imencode(".jpg", _smooth(20, 10, 0)[..., 0])[1].tobytes()
    assert jpeg_frame(gray) == (10, 20, 1, 8, 0xC0)
    assert jpeg_frame(b"\x89PNG\r\n\x1a\n") is None and jpeg_frame(gray[:20]) is None
    assert device_decode.device_shape(gray, True, False, "r") == (3, 20, 10)
    assert device_decode.device_shape(gray, False, False, "r") == (1, 20, 10)
    lossless = bytearray(gray)
    i = lossless.index(b"\xff\xc0")
    lossless[i + 1] = 0xC3            # a lossless frame: left to OpenCV on the host
    assert device_decode.device_shape(bytes(lossless), False, False, "r") is None


def _one_record(path: Path, data: bytes) -> Path:
    w = dbmod.Writer(path)
    w.put("00000000_good", pb.Datum(data=cv2.imencode(".jpg", _smooth(40, 40, 0))[1].tobytes(), encoded=True,
                                    label=0).SerializeToString())
    w.put("00000001_bad", pb.Datum(data=data, encoded=True, label=1).SerializeToString())
    w.close()
    return path


def _first_batch_refused(source: Path, message: str) -> None:
    layer = DataLayer(layer_for(source, crop_size=32), [], pb.TEST)
    try:
        with pytest.raises(NetspecError, match=message):
            layer()
    finally:
        layer.close()


def test_a_record_the_device_cannot_decode_is_named(decoder, monkeypatch, tmp_path):
    good = cv2.imencode(".jpg", _smooth(40, 40, 1))[1].tobytes()
    broken = good[:200] + bytes(200)       # the header survives, the scan is zeros
    monkeypatch.setenv(device_decode.DECODE_ENV, "device")
    assert cv2.imdecode(np.frombuffer(broken, np.uint8), cv2.IMREAD_COLOR) is None, "not damaged enough"
    _first_batch_refused(_one_record(tmp_path / "bad", broken), r"^layer 'data': record '00000001_bad': the "
                         r"device cannot decode the JPEG \(.*\); NETSPEC_DATA_DECODE=host decodes")


def test_a_header_that_lies_about_the_size_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv(device_decode.DECODE_ENV, "device")
    monkeypatch.setattr(device_decode, "check_decoder", lambda: None)
    monkeypatch.setattr(device_decode, "decode_jpegs",
                        lambda data, c, device: [torch.zeros((c, 40, 40 + i), dtype=torch.uint8)
                                                 for i in range(len(data))])
    good = cv2.imencode(".jpg", _smooth(40, 40, 1))[1].tobytes()
    _first_batch_refused(_one_record(tmp_path / "lie", good), r"^layer 'data': record '00000001_bad': its "
                         r"JPEG header declares 3x40x40 but it decodes to 3x40x41$")


def test_the_switch_and_a_missing_torchvision(monkeypatch, tmp_path):
    monkeypatch.setenv(device_decode.DECODE_ENV, "gpu")
    layer = DataLayer(data_net_layer(pb.TRAIN), [], pb.TRAIN, source_dir=FIX)
    with pytest.raises(NetspecError, match=r"^layer 'data': NETSPEC_DATA_DECODE: expected host or device, "
                                           r"found 'gpu'$"):
        layer()
    layer.close()
    monkeypatch.setenv(device_decode.DECODE_ENV, "device")
    monkeypatch.setitem(__import__("sys").modules, "torchvision.io", None)     # import fails
    layer = DataLayer(data_net_layer(pb.TRAIN), [], pb.TRAIN, source_dir=FIX)
    with pytest.raises(NetspecError, match=r"^layer 'data': NETSPEC_DATA_DECODE=device needs torchvision's "
                                           r"decode_jpeg, which does not import here"):
        layer()
    layer.close()
    # raw records: nothing to decode, the host path as before
    raw, on_device = _tops(data_net_layer(pb.TEST), pb.TEST, n=1)
    assert not on_device


@pytest.mark.cuda
def test_nvjpeg_batches_are_close_to_caffes_pixels(monkeypatch):
    if not _has_torchvision():
        pytest.skip("torchvision does not import beside this torch")
    lp = data_net_layer(pb.TRAIN)
    ref, _ = _tops(lp, pb.TEST, device="cuda")
    monkeypatch.setenv(device_decode.DECODE_ENV, "device")
    got, on_device = _tops(lp, pb.TEST, device="cuda")
    assert on_device
    for (a, la), (b, lb) in zip(ref, got):
        diff = (a - b).abs()
        # nvJPEG's IDCT and chroma upsampling are not libjpeg's: close on average, with the odd
        # pixel at a saturated colour edge further off (a wrong crop, mirror or channel order is
        # some 30 levels off on average, tests/test_data_device_decode.py's batches)
        far = float((diff > 32).float().mean())
        assert diff.mean() < 2.0 and far < 0.01, f"mean {diff.mean()}, {far:.2%} beyond 32 levels"
        assert torch.equal(la, lb)
