"""caffe.io's image path against pycaffe's own (skimage) on the same images: load_image of a JPEG and
Transformer.preprocess of it for a 227×227 CaffeNet input (resize, transpose, BGR, ×255, mean).

pycaffe's side is what python/caffe/io.py runs: skimage.io.imread + img_as_float, and
skimage.transform.resize(order=1, mode='constant', anti_aliasing=False) inside the same
normalise-resize-restore; it needs scikit-image, which netspec itself does not. The two take turns,
one pass over the images each per round; the figure is milliseconds per image, median (best).

    python benchmarks/pycaffe_io.py --images 32 --rounds 5
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import netspec.io as cio  # noqa: E402

MEAN = np.array([104.0, 117.0, 123.0], np.float32)


def pycaffe_preprocess(path):
    import skimage.io
    import skimage.transform
    img = skimage.img_as_float(skimage.io.imread(path)).astype(np.float32)
    lo, hi = img.min(), img.max()
    img = skimage.transform.resize((img - lo) / (hi - lo), (227, 227), order=1, mode="constant",
                                   anti_aliasing=False) * (hi - lo) + lo
    return img.astype(np.float32).transpose(2, 0, 1)[::-1] * 255 - MEAN[:, None, None]


def netspec_preprocess(path, tf):
    return tf.preprocess("data", cio.load_image(path))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    tf = cio.Transformer({"data": (1, 3, 227, 227)})
    tf.set_transpose("data", (2, 0, 1))
    tf.set_channel_swap("data", (2, 1, 0))
    tf.set_raw_scale("data", 255)
    tf.set_mean("data", MEAN)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        paths = []
        for i in range(args.images):
            paths.append(f"{d}/{i}.jpg")
            cv2.imwrite(paths[-1], cv2.GaussianBlur((rng.random((256, 256, 3)) * 255).astype(np.uint8), (5, 5), 2))
        worst = max(float(np.abs(netspec_preprocess(q, tf) - pycaffe_preprocess(q)).max()) for q in paths[:4])
        times = {"netspec": [], "pycaffe": []}
        for _ in range(args.rounds):
            for name, fn in (("netspec", lambda q: netspec_preprocess(q, tf)), ("pycaffe", pycaffe_preprocess)):
                t = time.perf_counter()
                for q in paths:
                    fn(q)
                times[name].append((time.perf_counter() - t) / len(paths) * 1e3)
    for name, ts in times.items():
        print(f"{name}: {statistics.median(ts):.2f} ms/image ({min(ts):.2f})")
    print(f"ratio netspec/pycaffe (median): {statistics.median(times['netspec']) / statistics.median(times['pycaffe']):.2f}"
          f"; worst difference of the preprocessed values: {worst:.2e}")


if __name__ == "__main__":
    main()
