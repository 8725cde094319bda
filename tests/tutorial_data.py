"""Small generated stand-ins for what BVLC's example notebooks download: a Caffe-like tree with a
miniature CaffeNet (CaffeNet's layer names and structure, small widths, 35×35 input) and its
weights, an ImageNet-style mean .npy, synset_words.txt and a few images; an MNIST-like LMDB of
28×28 digits-as-positions that LeNet learns in a few dozen steps."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

import netspec as caffe
from netspec.data import db as dbmod
from netspec.data.datum import mat_to_datum

CLASSES = 10
SIDE = 35  # the miniature CaffeNet's input: pool5 is 2×2

MINI_CAFFENET = """name: "CaffeNet"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape: {{ dim: {batch} dim: 3 dim: {side} dim: {side} }} }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 8 kernel_size: 5 stride: 2 weight_filler {{ type: "gaussian" std: 0.1 }}
                      bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param {{ pool: MAX kernel_size: 3 stride: 2 }} }}
layer {{ name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param {{ local_size: 5 alpha: 0.0001 beta: 0.75 }} }}
layer {{ name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"
  convolution_param {{ num_output: 8 pad: 1 kernel_size: 3 group: 2 weight_filler {{ type: "gaussian" std: 0.1 }}
                      bias_filler {{ type: "constant" value: 0.1 }} }} }}
layer {{ name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }}
layer {{ name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param {{ pool: MAX kernel_size: 3 stride: 2 }} }}
layer {{ name: "norm2" type: "LRN" bottom: "pool2" top: "norm2" lrn_param {{ local_size: 5 alpha: 0.0001 beta: 0.75 }} }}
layer {{ name: "conv3" type: "Convolution" bottom: "norm2" top: "conv3"
  convolution_param {{ num_output: 8 pad: 1 kernel_size: 3 weight_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "relu3" type: "ReLU" bottom: "conv3" top: "conv3" }}
layer {{ name: "conv4" type: "Convolution" bottom: "conv3" top: "conv4"
  convolution_param {{ num_output: 8 pad: 1 kernel_size: 3 group: 2 weight_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "relu4" type: "ReLU" bottom: "conv4" top: "conv4" }}
layer {{ name: "conv5" type: "Convolution" bottom: "conv4" top: "conv5"
  convolution_param {{ num_output: 8 pad: 1 kernel_size: 3 group: 2 weight_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "relu5" type: "ReLU" bottom: "conv5" top: "conv5" }}
layer {{ name: "pool5" type: "Pooling" bottom: "conv5" top: "pool5" pooling_param {{ pool: MAX kernel_size: 3 stride: 2 }} }}
{head}
"""
FC_HEAD = """layer { name: "fc6" type: "InnerProduct" bottom: "pool5" top: "fc6"
  inner_product_param { num_output: 16 weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7"
  inner_product_param { num_output: 16 weight_filler { type: "gaussian" std: 0.1 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }
layer { name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8"
  inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "prob" type: "Softmax" bottom: "fc8" top: "prob" }"""
# net_surgery's bvlc_caffenet_full_conv.prototxt: the fully connected layers as convolutions
CONV_HEAD = """layer { name: "fc6-conv" type: "Convolution" bottom: "pool5" top: "fc6-conv" convolution_param { num_output: 16 kernel_size: 2 } }
layer { name: "relu6" type: "ReLU" bottom: "fc6-conv" top: "fc6-conv" }
layer { name: "fc7-conv" type: "Convolution" bottom: "fc6-conv" top: "fc7-conv" convolution_param { num_output: 16 kernel_size: 1 } }
layer { name: "relu7" type: "ReLU" bottom: "fc7-conv" top: "fc7-conv" }
layer { name: "fc8-conv" type: "Convolution" bottom: "fc7-conv" top: "fc8-conv" convolution_param { num_output: 10 kernel_size: 1 } }
layer { name: "prob" type: "Softmax" bottom: "fc8-conv" top: "prob" }"""


def mini_caffenet(batch: int = 10, full_conv: bool = False) -> str:
    return MINI_CAFFENET.format(batch=batch, side=SIDE, head=CONV_HEAD if full_conv else FC_HEAD)


def smooth_image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth BGR uint8 picture (JPEG survives it well)."""
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur((rng.random((h, w, 3)) * 255).astype(np.uint8), (7, 7), 2)


def caffe_tree(root: Path) -> Path:
    """The files of a Caffe checkout the notebooks read, generated small."""
    ref = root / "models" / "bvlc_reference_caffenet"
    ref.mkdir(parents=True)
    (ref / "deploy.prototxt").write_text(mini_caffenet())
    caffe.set_random_seed(7)
    caffe.Net(str(ref / "deploy.prototxt"), caffe.TEST).save(str(ref / "bvlc_reference_caffenet.caffemodel"))
    (root / "python" / "caffe" / "imagenet").mkdir(parents=True)
    rng = np.random.default_rng(8)
    np.save(root / "python" / "caffe" / "imagenet" / "ilsvrc_2012_mean.npy",
            (rng.random((3, 40, 40)) * 40 + np.array([104.0, 117.0, 123.0])[:, None, None]))
    (root / "data" / "ilsvrc12").mkdir(parents=True)
    (root / "data" / "ilsvrc12" / "synset_words.txt").write_text(
        "".join(f"n{k:08d} class {k}, label {k}\n" for k in range(CLASSES)))
    images = root / "examples" / "images"
    images.mkdir(parents=True)
    cv2.imwrite(str(images / "cat.jpg"), smooth_image(48, 60, 1))
    cv2.imwrite(str(images / "cat_gray.jpg"), cv2.cvtColor(smooth_image(100, 100, 2), cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(images / "fish-bike.jpg"), smooth_image(60, 80, 3))
    return root


def digit(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 28×28 'digit': a bright 6×6 block whose place (one of 2×5) is the label, on faint noise."""
    img = (rng.random((28, 28)) * 40).astype(np.uint8)
    r, c = 4 + 12 * (label // 5), 1 + 5 * (label % 5)
    img[r:r + 6, c:c + 6] = 255
    return img


def write_mnist_lmdb(path: Path, n: int, seed: int) -> None:
    """An LMDB of n MNIST-like Datum records (1×28×28 uint8, label 0..9), keys as convert_mnist_data's."""
    rng = np.random.default_rng(seed)
    w = dbmod.Writer(path)
    for i in range(n):
        label = i % CLASSES
        w.put(f"{i:08d}", mat_to_datum(digit(label, rng), label).SerializeToString())
    w.close()
