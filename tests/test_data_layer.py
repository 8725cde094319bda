"""The Data layer against real Caffe's batches (data_net_batches.npz), TRAIN properties, errors, sharding."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from google.protobuf import text_format

from netspec.data import db as dbmod
from netspec.data.datum import mat_to_datum, parse
from netspec.data.mean import load_mean
from netspec.data.reader import BatchReader
from netspec.data.transform import DataTransformer
from netspec.errors import NetspecError
from netspec.layers.data_layer import DataLayer
from netspec.proto import pb

FIX = Path(__file__).parent / "data" / "caffe"


def data_net_layer(phase) -> pb.LayerParameter:
    net = text_format.Parse((FIX / "data_net.prototxt").read_text(), pb.NetParameter())
    return next(lp for lp in net.layer if lp.include[0].phase == phase)


def decoded_records(name) -> list[tuple[np.ndarray, int]]:
    out = []
    for k, v in dbmod.iter_records(FIX / name):
        d = parse(v, k)
        img = cv2.imdecode(np.frombuffer(d.data, np.uint8), cv2.IMREAD_UNCHANGED).transpose(2, 0, 1) \
            if d.encoded else np.frombuffer(d.data, np.uint8).reshape(d.channels, d.height, d.width)
        out.append((img.astype(np.float32), d.label))
    return out


def test_test_phase_batches_equal_caffes_including_wraparound():
    layer = DataLayer(data_net_layer(pb.TEST), [], pb.TEST, source_dir=FIX)
    ref = np.load(FIX / "data_net_batches.npz")
    assert layer.top_shapes == [(5, 3, 57, 57), (5,)]
    try:
        for b in range(3):  # 15 records from 12: batch 2 wraps to records 0..2
            data, label = layer()
            want = ref[f"batch{b}/data"]
            assert data.dtype == torch.float32 and label.dtype == torch.float32
            assert np.array_equal(data.numpy(), want), \
                f"batch{b}/data: worst error {np.abs(data.numpy() - want).max()}"
            assert np.array_equal(label.numpy(), ref[f"batch{b}/label"]), f"batch{b}/label: {label}"
    finally:
        layer.close()


def find_window(out, image, crop):
    """All (h_off, w_off, mirrored) whose crop of `image` equals `out`."""
    hits = []
    for h in range(image.shape[1] - crop + 1):
        for w in range(image.shape[2] - crop + 1):
            win = image[:, h:h + crop, w:w + crop]
            for m, cand in ((False, win), (True, win[..., ::-1])):
                if np.array_equal(out, cand):
                    hits.append((h, w, m))
    return hits


def test_train_phase_crops_inside_mirrors_flip_labels_follow():
    lp = data_net_layer(pb.TRAIN)  # lmdb_encoded, batch 4, crop 57, mirror, mean_value 104 117 123
    layer = DataLayer(lp, [], pb.TRAIN, source_dir=FIX)
    recs = decoded_records("lmdb_encoded")
    mv = np.float32([104, 117, 123])[:, None, None]
    seen = []
    try:
        for b in range(6):
            data, label = layer()
            assert data.shape == (4, 3, 57, 57)
            for i in range(4):
                image, lab = recs[(4 * b + i) % 12]
                assert label[i].item() == lab, f"batch {b} item {i}: label {label[i]} vs record's {lab}"
                hits = find_window(data[i].numpy() + mv, image, 57)
                assert hits, f"batch {b} item {i} is no (mirrored) 57x57 window of record {(4 * b + i) % 12}"
                seen += hits
    finally:
        layer.close()
    assert {m for _, _, m in seen} == {False, True}
    assert len({(h, w) for h, w, _ in seen}) > 5  # offsets are random, all within 0..7


def test_mean_file_is_subtracted_before_the_crop(tmp_path):
    lp = data_net_layer(pb.TRAIN)
    lp.data_param.source = "lmdb_raw"
    lp.transform_param.ClearField("mean_value")
    lp.transform_param.mean_file = "mean.binaryproto"
    layer = DataLayer(lp, [], pb.TRAIN, source_dir=FIX)
    mean = load_mean(FIX / "mean.binaryproto")
    recs = decoded_records("lmdb_raw")
    try:
        data, _ = layer()
    finally:
        layer.close()
    for i in range(4):
        centred = recs[i][0] - mean  # the mean at each source pixel's own position
        assert find_window(data[i].numpy(), centred, 57), f"item {i} is no window of (record - mean)"


def test_train_batches_are_reproducible_for_a_seed():
    def first_two(seed):
        layer = DataLayer(data_net_layer(pb.TRAIN), [], pb.TRAIN, source_dir=FIX)
        layer.reseed(seed)
        try:
            return [layer()[0] for _ in range(2)]
        finally:
            layer.close()

    a, b, c = first_two(1), first_two(1), first_two(2)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_batches_kept_by_the_caller_are_never_overwritten_and_dropped_ones_recycled():
    lp = data_net_layer(pb.TEST)
    lp.data_param.prefetch = 2
    kept_layer, copy_layer = (DataLayer(lp, [], pb.TEST, source_dir=FIX) for _ in range(2))
    kept = [kept_layer()[0] for _ in range(10)]  # held while later batches are prepared
    copies = [copy_layer()[0].clone() for _ in range(10)]
    assert len({t.data_ptr() for t in kept}) == 10
    for i, (a, b) in enumerate(zip(kept, copies)):
        assert torch.equal(a, b), f"kept batch {i} was overwritten"
    pointers = set()
    for _ in range(12):
        pointers.add(copy_layer()[0].data_ptr())  # dropped at once: buffers come back
    kept_layer.close(), copy_layer.close()
    assert len(pointers) <= 2 + 4 + 1


def reader(source, phase=pb.TRAIN, **kw):
    return BatchReader(source, 3, DataTransformer(pb.TransformationParameter(), phase), phase=phase, **kw)


def test_ranks_read_disjoint_interleaved_shares_in_train():
    keys = [k for k, _ in dbmod.iter_records(FIX / "lmdb_raw")]
    shares = []
    for rank in range(5):
        r = reader(FIX / "lmdb_raw", rank=rank, world_size=5)
        shares.append([keys.index(r._next_record()[0]) for _ in range(12)])
        r.close()
    # rank r keeps offsets r, r+5, ... and the offset keeps counting across the wrap (Caffe's Skip)
    assert shares[0][:6] == [0, 5, 10, 3, 8, 1] and shares[3][:3] == [3, 8, 1]
    for step in range(12):  # at every step the five ranks read five different records
        assert len({share[step] for share in shares}) == 5
    test = reader(FIX / "lmdb_raw", phase=pb.TEST, rank=1, world_size=5)
    assert [keys.index(test._next_record()[0]) for _ in range(3)] == [0, 1, 2]  # TEST: all ranks read all
    test.close()


def test_rand_skip_starts_at_a_record_below_it():
    keys = [k for k, _ in dbmod.iter_records(FIX / "lmdb_raw")]
    starts = set()
    for seed in range(8):
        r = reader(FIX / "lmdb_raw", rand_skip=5, seed=seed)
        starts.add(keys.index(r._next_record()[0]))
        r.close()
    assert starts <= set(range(5)) and len(starts) > 1


def layer_for(source, **tp):
    lp = pb.LayerParameter(name="data", type="Data", top=["data", "label"])
    dp = lp.data_param
    dp.source, dp.batch_size, dp.backend = str(source), 2, pb.DataParameter.LMDB
    for k, v in tp.items():
        setattr(lp.transform_param, k, v)
    return lp


def test_one_line_errors(tmp_path):
    with pytest.raises(NetspecError, match="layer 'data': data source '.*nope' does not exist"):
        DataLayer(layer_for(tmp_path / "nope"), [], pb.TEST)
    dbmod.Writer(tmp_path / "empty").close()
    with pytest.raises(NetspecError, match="is empty"):
        DataLayer(layer_for(tmp_path / "empty"), [], pb.TEST)
    with pytest.raises(NetspecError, match="crop_size 100 is larger than the image 3x64x64"):
        DataLayer(layer_for(FIX / "lmdb_raw", crop_size=100), [], pb.TEST)
    lp = layer_for(FIX / "lmdb_raw")
    lp.data_param.backend = pb.DataParameter.LEVELDB
    with pytest.raises(NetspecError, match="LEVELDB is not supported"):
        DataLayer(lp, [], pb.TEST)
    w = dbmod.Writer(tmp_path / "bad")
    w.put("00000000_ok", mat_to_datum(np.zeros((4, 4, 3), np.uint8), 1).SerializeToString())
    w.put("00000001_broken", b"\xff\xff\xff\xff")
    w.close()
    layer = DataLayer(layer_for(tmp_path / "bad"), [], pb.TEST)
    with pytest.raises(NetspecError, match="layer 'data': .*record '00000001_broken' is not a Datum"):
        layer()
    layer.close()


def test_single_top_and_legacy_data_param_fields():
    lp = layer_for("lmdb_raw")
    del lp.top[1:]
    lp.data_param.crop_size, lp.data_param.scale = 10, 0.5  # old prototxts kept these in data_param
    layer = DataLayer(lp, [], pb.TEST, source_dir=FIX)
    out = layer()
    layer.close()
    assert isinstance(out, torch.Tensor) and out.shape == (2, 3, 10, 10)
    assert layer.top_shapes == [(2, 3, 10, 10)]
    first = decoded_records("lmdb_raw")[0][0]
    assert torch.equal(out[0], torch.from_numpy(first[:, 27:37, 27:37] * np.float32(0.5)))


@pytest.mark.cuda
def test_cuda_layer_gives_cuda_batches_from_pinned_memory():
    layer = DataLayer(data_net_layer(pb.TEST), [], pb.TEST, source_dir=FIX).to("cuda")
    data, label = layer()
    ref = np.load(FIX / "data_net_batches.npz")
    assert data.is_cuda and label.is_cuda and np.array_equal(data.cpu().numpy(), ref["batch0/data"])
    assert layer.reader().pin_memory
    layer.close()
