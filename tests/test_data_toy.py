"""The toy ImageNet: ILSVRC layout, Caffe's list files, determinism, varied sizes, and it converts."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from netspec.data import convert as C
from netspec.data import db as dbmod
from netspec.data.datum import parse
from netspec.data.toy import draw, make_toy_imagenet, wnid
from netspec.errors import NetspecError


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    make_toy_imagenet(root, classes=4, per_class=6, val_per_class=3, seed=7)
    return root


def test_layout_and_lists(toy):
    wnids = ["n00000000", "n00000001", "n00000002", "n00000003"]
    assert (toy / "synsets.txt").read_text().split() == [wnid(k) for k in range(4)] == wnids
    assert len((toy / "synset_words.txt").read_text().splitlines()) == 4
    train = C.read_listfile(toy / "train.txt")
    val = C.read_listfile(toy / "val.txt")
    assert len(train) == 24 and len(val) == 12
    for rel, label in train:
        assert rel.startswith(wnid(label) + "/") and rel.endswith(".JPEG") and (toy / "train" / rel).is_file()
    assert val[0][0] == "ILSVRC2012_val_00000001.JPEG"
    assert sorted(label for _, label in val) == sorted([0, 1, 2, 3] * 3)
    assert sorted(p.name for p in (toy / "val").iterdir()) == sorted(rel for rel, _ in val)
    # the class tree gives the same labels as train.txt (sorted wnid folders)
    assert sorted(C.imagenet_list(toy / "train")) == sorted(train)


def test_images_are_real_jpegs_of_varied_size(toy):
    sizes = set()
    for p in (toy / "train").rglob("*.JPEG"):
        assert p.read_bytes()[:2] == b"\xff\xd8"
        img = cv2.imread(str(p))
        assert img is not None and 60 <= img.shape[0] <= 120 and 60 <= img.shape[1] <= 120
        sizes.add(img.shape[:2])
    assert len(sizes) > 10


def test_deterministic_for_a_seed(toy, tmp_path):
    make_toy_imagenet(tmp_path / "again", classes=4, per_class=6, val_per_class=3, seed=7)
    for p in toy.rglob("*.JPEG"):
        assert p.read_bytes() == (tmp_path / "again" / p.relative_to(toy)).read_bytes(), p
    other = draw(1, np.random.default_rng([8, 0, 1, 0]))
    assert not np.array_equal(other, draw(1, np.random.default_rng([7, 0, 1, 0])))
    with pytest.raises(NetspecError, match="already holds"):
        make_toy_imagenet(toy)


def test_classes_are_learnable_from_colour_alone():
    # a nearest-centroid classifier on the hue histogram of saturated pixels beats chance (10%) by far;
    # shapes and orientations carry the rest of the signal for a convnet
    def feature(img):
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        vivid = (hsv[..., 1] > 150) & (hsv[..., 2] > 140)
        h = np.histogram(hsv[..., 0][vivid], bins=18, range=(0, 180))[0].astype(float)
        return h / max(h.sum(), 1)

    x = np.array([[feature(draw(k, np.random.default_rng([0, 0, k, i]))) for i in range(30)]
                  for k in range(10)])
    centres = x[:, :20].mean(1)
    hits = [np.argmin(((centres - x[k, i]) ** 2).sum(1)) == k for k in range(10) for i in range(20, 30)]
    assert np.mean(hits) > 0.4, f"nearest-centroid accuracy {np.mean(hits):.2f}"


def test_toy_tree_converts_at_256(toy, tmp_path):
    lines = C.imagenet_list(toy / "train")
    s = C.convert(toy / "train", lines, tmp_path / "db", C.Options(256, 256), workers=2, progress=False)
    assert s.written == 24 and not s.skipped
    k, v = next(dbmod.iter_records(tmp_path / "db"))
    d = parse(v, k)
    assert (d.channels, d.height, d.width, d.label) == (3, 256, 256, 0)
