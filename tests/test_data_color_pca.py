"""color_pca: eigenvectors in R,G,B order, eigenvalues on the [0,1] covariance times 255, pasteable text."""
from __future__ import annotations

import numpy as np
from google.protobuf import text_format

from netspec.data import db as dbmod
from netspec.cli import tool_main
from netspec.data.color_pca import color_pca, param_text
from netspec.data.datum import mat_to_datum
from netspec.proto import pb


def test_principal_direction_of_known_pixels(tmp_path, capsys):
    rng = np.random.default_rng(0)
    direction_rgb = np.array([2.0, 1.0, 0.0]) / np.sqrt(5)  # mostly red, some green, no blue
    w = dbmod.Writer(tmp_path / "db")
    for i in range(20):
        t = rng.normal(0, 30, (16, 16, 1))
        rgb = 128 + t * direction_rgb + rng.normal(0, 2, (16, 16, 3))
        bgr = np.clip(np.round(rgb[..., ::-1]), 0, 255).astype(np.uint8)
        w.put(f"{i:08d}", mat_to_datum(bgr, 0).SerializeToString())
    w.close()
    values, vectors, n = color_pca(tmp_path / "db", samples=15)
    assert n == 15 * 256
    assert abs(abs(vectors[0] @ direction_rgb) - 1) < 1e-3, f"first eigenvector {vectors[0]}"
    assert values[0] > 10 * values[1] >= 10 * values[2] > 0
    assert abs(values[0] - 30.0 ** 2 / 255) < 0.1 * 30.0 ** 2 / 255  # variance in [0,1] units, times 255
    assert tool_main("color-pca", [str(tmp_path / "db"), "--samples", "15", "--quiet"]) == 0
    block = "\n".join(ln for ln in capsys.readouterr().out.splitlines() if not ln.startswith("#"))
    tp = text_format.Parse(block, pb.TransformationParameter())
    assert len(tp.color_aug_param.eigenvalue) == 3 and len(tp.color_aug_param.eigenvector) == 9
    assert np.allclose(tp.color_aug_param.eigenvector[:3], vectors[0], atol=1e-5)


def test_param_text_round_trips():
    text = param_text([3, 2, 1], np.eye(3), 0.2)
    ca = text_format.Parse(text, pb.TransformationParameter()).color_aug_param
    assert list(ca.eigenvalue) == [3, 2, 1] and list(ca.eigenvector) == list(np.eye(3).ravel())
    assert abs(ca.std - 0.2) < 1e-7
