"""uint8 mode (NETSPEC_DATA_UINT8): the host only crops and mirrors uint8 pixels and transform.Normaliser
does the float32 arithmetic in torch; the result must equal the host's float batch bit for bit, with
the same crops and mirrors, from threads and from a worker process, and through the Data layer."""
from pathlib import Path

import numpy as np
import pytest
import torch

from netspec.data import db as dbmod
from netspec.data.reader import BatchReader
from netspec.data.transform import DataTransformer, Normaliser
from netspec.data.workers import requested_uint8
from netspec.errors import NetspecError
from netspec.layers.data_layer import DataLayer
from netspec.proto import pb
from test_data_layer import data_net_layer, layer_for

FIX = Path(__file__).parent / "data" / "caffe"
MEAN = str(FIX / "mean.binaryproto")
# A PCA colour shift as `netspec color-pca` writes it (orthonormal eigenvectors, R,G,B order).
COLOUR = {"eigenvalue": [55.5, 4.8, 1.6], "std": 0.1,
          "eigenvector": [-0.5675, 0.7192, 0.4009, -0.5808, -0.0045, -0.8140, -0.5836, -0.6948, 0.4203]}

CASES = {   # name: (source, phase, transform_param fields)
    "mean_file crop mirror scale": ("lmdb_raw", pb.TRAIN,
                                    {"crop_size": 57, "mirror": True, "mean_file": MEAN, "scale": 0.5}),
    "mean_file centred crop TEST": ("lmdb_raw", pb.TEST, {"crop_size": 50, "mean_file": MEAN, "scale": 0.25}),
    "one mean_value, JPEG": ("lmdb_encoded", pb.TRAIN,
                             {"crop_size": 40, "mirror": True, "mean_value": [117]}),
    "mean_value per channel, no crop": ("lmdb_raw", pb.TEST, {"mirror": True, "mean_value": [104, 117, 123]}),
    "no mean, gray": ("lmdb_gray", pb.TRAIN, {"crop_size": 20, "mirror": True, "scale": 0.00390625}),
    "colour shift, mean_file": ("lmdb_raw", pb.TRAIN, {"crop_size": 57, "mirror": True, "mean_file": MEAN,
                                                       "scale": 0.5, "color_aug_param": COLOUR}),
}


def _transformer(phase, fields) -> DataTransformer:
    tp = pb.TransformationParameter()
    for k, v in fields.items():
        if k == "color_aug_param":
            tp.color_aug_param.eigenvalue.extend(v["eigenvalue"])
            tp.color_aug_param.eigenvector.extend(v["eigenvector"])
            tp.color_aug_param.std = v["std"]
        elif isinstance(v, list):
            getattr(tp, k).extend(v)
        else:
            setattr(tp, k, v)
    return DataTransformer(tp, phase)


def _pair(case, processes=0):
    source, phase, fields = CASES[case]
    t = _transformer(phase, fields)

    def make(uint8, procs):
        return BatchReader(FIX / source, 5, t, phase=phase, seed=7, uint8=uint8, processes=procs)

    return make(False, 0), make(True, processes), Normaliser(t)


def _check_batches(case, processes=0, batches=3):
    """3 batches of 5 from 12 records: the last one wraps to the first records."""
    floats, crops, norm = _pair(case, processes)
    try:
        for i in range(batches):
            (ref, ref_label), (data, label, params, shift) = floats.next(), crops.next()
            assert data.dtype == torch.uint8 and params.dtype == torch.int32 and shift.dtype == torch.float32
            out = norm(data, params, shift)
            assert out.dtype == torch.float32 and torch.equal(out, ref), f"{case}: batch {i} differs"
            assert torch.equal(label, ref_label)
            yield params, shift
    finally:
        floats.close()
        crops.close()


@pytest.mark.parametrize("case", list(CASES))
def test_uint8_crops_normalised_equal_the_host_float_batches(case):
    params = torch.cat([p for p, _ in _check_batches(case)])
    fields, phase = CASES[case][2], CASES[case][1]
    if fields.get("mirror"):      # both kinds of image occur, so the mirrored mean columns are exercised
        assert set(params[:, 2].tolist()) == {0, 1}
    if fields.get("crop_size") and phase == pb.TRAIN:
        assert len(set(map(tuple, params[:, :2].tolist()))) > 3   # random offsets, not one window


def test_colour_shift_is_handed_over_per_image():
    shifts = torch.cat([s for _, s in _check_batches("colour shift, mean_file")])
    assert len({tuple(s) for s in shifts.tolist()}) == len(shifts) and shifts.abs().max() > 0.01


def test_a_worker_process_makes_the_same_uint8_batches():
    for _ in _check_batches("colour shift, mean_file", processes=1):
        pass


def test_mean_file_window_of_a_mirrored_image_by_hand():
    # An independent float64 reference for one image: crop, then mirror, of (record - mean).
    t = _transformer(pb.TRAIN, {"crop_size": 5, "mirror": True, "mean_file": MEAN})
    image = np.arange(3 * 64 * 64, dtype=np.uint8).reshape(3, 64, 64)
    data = torch.from_numpy(np.ascontiguousarray(image[None, :, 10:15, 20:25][..., ::-1]))
    out = Normaliser(t)(data, torch.tensor([[10, 20, 1]], dtype=torch.int32), torch.zeros(1, 3))
    want = (image.astype(np.float64) - t.mean)[:, 10:15, 20:25][..., ::-1]
    np.testing.assert_allclose(out[0].numpy(), want, rtol=0, atol=1e-4)


def test_the_switch_from_the_environment(monkeypatch):
    monkeypatch.delenv("NETSPEC_DATA_UINT8", raising=False)
    assert requested_uint8(True) and not requested_uint8(False)
    monkeypatch.setenv("NETSPEC_DATA_UINT8", "0")
    assert not requested_uint8(True)
    monkeypatch.setenv("NETSPEC_DATA_UINT8", "1")
    assert requested_uint8(False)
    monkeypatch.setenv("NETSPEC_DATA_UINT8", "yes")
    with pytest.raises(NetspecError, match=r"^NETSPEC_DATA_UINT8: expected 0 or 1, found 'yes'$"):
        requested_uint8(True)


def _tops(lp, phase, n=3):
    layer = DataLayer(lp, [], phase, source_dir=FIX)
    layer.reseed(5)
    try:
        return [layer() for _ in range(n)], layer.reader().uint8
    finally:
        layer.close()


def test_a_cpu_data_layer_forced_into_uint8_mode_gives_the_same_tops(monkeypatch):
    lp = data_net_layer(pb.TRAIN)       # JPEG records, random crop, mirror, mean_value
    lp.transform_param.scale = 0.5
    ref, uint8 = _tops(lp, pb.TRAIN)
    assert not uint8, "uint8 mode is off by default on the CPU"
    monkeypatch.setenv("NETSPEC_DATA_UINT8", "1")
    got, uint8 = _tops(lp, pb.TRAIN)
    assert uint8
    for i, ((a, la), (b, lb)) in enumerate(zip(ref, got)):
        assert torch.equal(a, b) and torch.equal(la, lb), f"batch {i}"


def resumed_batches(n=3):
    """`n` batches of a TRAIN Data layer after its first two, and of another layer resumed from its
    saved state: (first's, resumed's, the resumed layer's reader)."""
    lp = data_net_layer(pb.TRAIN)
    first = DataLayer(lp, [], pb.TRAIN, source_dir=FIX)
    first.reseed(3)
    resumed = DataLayer(lp, [], pb.TRAIN, source_dir=FIX)
    try:
        first(), first()
        resumed.restore_data_state(first.data_state("train"))
        return [first() for _ in range(n)], [resumed() for _ in range(n)], resumed.reader()
    finally:
        first.close()
        resumed.close()


def test_exact_resume_in_uint8_mode_continues_with_the_same_crops(monkeypatch):
    monkeypatch.setenv("NETSPEC_DATA_UINT8", "1")
    want, got, reader = resumed_batches()      # 12 records, batch 4: the third batch after the resume wraps
    for i, ((a, la), (b, lb)) in enumerate(zip(want, got)):
        assert torch.equal(a, b) and torch.equal(la, lb), f"batch {i} after the resume"
    assert reader.uint8


def _float_db(path: Path, first_float: bool) -> Path:
    w = dbmod.Writer(path)
    rng = np.random.default_rng(0)
    for i in range(4):
        pixels = rng.integers(0, 256, (1, 4, 4))
        d = pb.Datum(channels=1, height=4, width=4, label=i)
        if (i == 0) == first_float:
            d.float_data.extend(pixels.ravel().astype(np.float32) + 0.25)
        else:
            d.data = pixels.astype(np.uint8).tobytes()
        w.put(f"{i:08d}", d.SerializeToString())
    w.close()
    return path


def test_float_records_keep_the_float_path(monkeypatch, tmp_path):
    monkeypatch.setenv("NETSPEC_DATA_UINT8", "1")
    ((data, _),), uint8 = _tops(layer_for(_float_db(tmp_path / "f", True)), pb.TEST, 1)
    assert uint8 is False and data[0, 0, 0, 0] % 1 == 0.25
    # a source read as uint8 (its first record is) that later holds float_data: one line naming it
    layer = DataLayer(layer_for(_float_db(tmp_path / "u", False)), [], pb.TEST)
    with pytest.raises(NetspecError, match="layer 'data': record '00000001' holds float32 pixels, but this "
                                           "source is read as uint8"):
        layer()
    layer.close()


@pytest.mark.cuda
def test_cuda_data_layer_normalises_uint8_crops_on_the_gpu(monkeypatch):
    monkeypatch.delenv("NETSPEC_DATA_UINT8", raising=False)
    test = data_net_layer(pb.TEST)          # mean_file, centred crop, scale
    test.transform_param.mirror = True
    for phase, lp in ((pb.TEST, test), (pb.TRAIN, data_net_layer(pb.TRAIN))):
        ref, uint8 = _tops(lp, phase)
        assert not uint8
        layer = DataLayer(lp, [], phase, source_dir=FIX).to("cuda")
        layer.reseed(5)
        try:
            got = [layer() for _ in range(3)]
            assert layer.reader().uint8 and layer.reader().pin_memory
        finally:
            layer.close()
        for i, ((a, la), (b, lb)) in enumerate(zip(ref, got)):
            assert b.is_cuda and b.dtype == torch.float32
            assert torch.equal(a, b.cpu()) and torch.equal(la, lb.cpu()), f"phase {phase} batch {i}"
