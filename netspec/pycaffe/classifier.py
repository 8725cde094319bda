"""pycaffe's caffe.Classifier (python/caffe/classifier.py): a TEST-phase Net that classifies H×W×K
images, resized to image_dims and then centre-cropped or oversampled (four corners, centre and
their mirrors, the ten predictions averaged), preprocessed by a caffe.io Transformer.
"""
from __future__ import annotations

import numpy as np

from ..proto import pb
from . import io
from .net import Net


def make_transformer(net: Net, mean=None, input_scale=None, raw_scale=None, channel_swap=None):
    """The Transformer pycaffe's Classifier and Detector configure for the net's first input."""
    in_ = net.inputs[0]
    tf = io.Transformer({in_: net.blobs[in_].data.shape})
    tf.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        tf.set_mean(in_, mean)
    if input_scale is not None:
        tf.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        tf.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        tf.set_channel_swap(in_, channel_swap)
    return tf


class Classifier(Net):
    """Classifier(model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
    raw_scale=None, channel_swap=None)."""

    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None):
        Net.__init__(self, model_file, pb.TEST, weights=pretrained_file)
        self.transformer = make_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[self.inputs[0]].data.shape[2:])
        self.image_dims = self.crop_dims if image_dims is None or not len(image_dims) else image_dims

    def predict(self, inputs, oversample=True):
        """N×C class probabilities (the first output) of the H×W×K images `inputs`."""
        images = np.zeros((len(inputs), self.image_dims[0], self.image_dims[1], inputs[0].shape[2]),
                          dtype=np.float32)
        for ix, image in enumerate(inputs):
            images[ix] = io.resize_image(image, self.image_dims)
        if oversample:
            images = io.oversample(images, self.crop_dims)
        else:
            center = np.tile(np.array(self.image_dims) / 2.0, 2)
            crop = (center + np.concatenate([-self.crop_dims / 2.0, self.crop_dims / 2.0])).astype(int)
            images = images[:, crop[0]:crop[2], crop[1]:crop[3], :]
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, im) for im in images]).astype(np.float32)
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions
