"""pycaffe's caffe.Detector (python/caffe/detector.py): a TEST-phase Net that classifies windows of
images, each cropped (optionally with R-CNN's context padding) and warped to the net's input size.

Windows are (ymin, xmin, ymax, xmax) and cropped as pycaffe does, im[ymin:ymax, xmin:xmax]. With
context_pad, a box is grown so that `context_pad` pixels of the warped input are surrounding
context; the part outside the image is filled with the mean (R-CNN, Girshick et al. 2014,
appendix A). detect_selective_search gets its windows from the selective_search_ijcv_with_python
package (which runs MATLAB), as pycaffe does, when that package is installed.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import NetspecError
from ..proto import pb
from . import io
from .classifier import make_transformer
from .net import Net


class Detector(Net):
    """Detector(model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
    channel_swap=None, context_pad=None)."""

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None, raw_scale=None,
                 channel_swap=None, context_pad=None):
        Net.__init__(self, model_file, pb.TEST, weights=pretrained_file)
        self.transformer = make_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """[{'window', 'prediction', 'filename'}] for each window of each (image file, windows) pair."""
        images_windows = [(f, list(ws)) for f, ws in images_windows]
        crops = []
        for filename, windows in images_windows:
            image = io.load_image(filename).astype(np.float32)
            crops += [self.crop(image, w) for w in windows]
        in_ = self.inputs[0]
        caffe_in = np.stack([self.transformer.preprocess(in_, c) for c in crops]).astype(np.float32)
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        found = [(f, w) for f, ws in images_windows for w in ws]
        return [{'window': w, 'prediction': p, 'filename': f} for (f, w), p in zip(found, predictions)]

    def detect_selective_search(self, image_fnames):
        """detect_windows over Selective Search proposals for each image (absolute paths, as the
        MATLAB tool needs them)."""
        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError:
            raise NetspecError("detect_selective_search needs the selective_search_ijcv_with_python package "
                               "(and MATLAB); without it give windows to detect_windows") from None
        image_fnames = [os.path.abspath(f) for f in image_fnames]
        windows_list = selective_search.get_windows(image_fnames, cmd='selective_search_rcnn')
        return self.detect_windows(zip(image_fnames, windows_list))

    def crop(self, im, window):
        """The window of `im` (H×W×K), with context padding when configured."""
        window = np.asarray(window)
        if not self.context_pad:
            return im[int(window[0]):int(window[2]), int(window[1]):int(window[3])]
        return self._context_crop(im, window)

    def _context_crop(self, im, window):
        crop_size = self.blobs[self.inputs[0]].width  # assumes a square input, as pycaffe does
        scale = crop_size / (1.0 * crop_size - self.context_pad * 2)
        half_h, half_w = (window[2] - window[0] + 1) / 2.0, (window[3] - window[1] + 1) / 2.0
        center = (window[0] + half_h, window[1] + half_w)
        box = np.round(np.tile(center, 2) + scale * np.array((-half_h, -half_w, half_h, half_w)))
        scale_h, scale_w = crop_size / (box[2] - box[0] + 1), crop_size / (box[3] - box[1] + 1)
        pad_y, pad_x = round(max(0, -box[0]) * scale_h), round(max(0, -box[1]) * scale_w)  # outside the image
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w])
        crop_h = min(round((box[2] - box[0] + 1) * scale_h), crop_size - pad_y)
        crop_w = min(round((box[3] - box[1] + 1) * scale_w), crop_size - pad_x)
        box = box.astype(int)
        context = io.resize_image(im[box[0]:box[2], box[1]:box[3]], (crop_h, crop_w))
        crop = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        crop[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = context
        return crop

    def configure_crop(self, context_pad):
        """The crop size in image layout (H×W×K) and, for context padding, the mean in image space."""
        in_ = self.inputs[0]
        tpose = self.transformer.transpose[in_]
        inv_tpose = [tpose[t] for t in tpose]
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[inv_tpose]
        self.context_pad = context_pad
        if not context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        crop_mean = np.array(mean, dtype=np.float32).transpose(inv_tpose)
        swap = self.transformer.channel_swap.get(in_)
        if swap is not None:
            crop_mean = crop_mean[:, :, [list(swap).index(i) for i in range(crop_mean.shape[2])]]
        raw_scale = self.transformer.raw_scale.get(in_)
        self.crop_mean = crop_mean / raw_scale if raw_scale is not None else crop_mean
