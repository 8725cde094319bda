"""`netspec classify INPUT OUTPUT.npy`: pycaffe's python/classify.py — classify an image, a folder of
images or a .npy stack with a Classifier (resize to --images_dim, 10-crop oversampling unless
--center_only) and save the N×C class probabilities with numpy.save.

The flags are classify.py's; its defaults point into a Caffe tree (models/bvlc_reference_caffenet/
and python/caffe/imagenet/ilsvrc_2012_mean.npy) and are read from the current folder here. A mean
may also be a .binaryproto (compute_image_mean's output).
"""
from __future__ import annotations

import glob
import os
import time

import numpy as np

from ..errors import NetspecError

HELP = "classify images with a trained net (pycaffe's python/classify.py)"
EXAMPLES = ("  netspec classify cat.jpg out.npy --model_def deploy.prototxt --pretrained_model net.caffemodel"
            " --mean_file mean.npy\n")

MODEL = "models/bvlc_reference_caffenet/deploy.prototxt"
WEIGHTS = "models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel"
MEAN = "python/caffe/imagenet/ilsvrc_2012_mean.npy"


def add_preprocessing(p, mean_help: str) -> None:
    """The model and preprocessing flags classify.py and detect.py share."""
    p.add_argument("--model_def", default=MODEL, help=f"model definition (default {MODEL})")
    p.add_argument("--pretrained_model", default=WEIGHTS, help="trained weights (default: CaffeNet's)")
    p.add_argument("--gpu", action="store_true", help="compute on the GPU")
    p.add_argument("--mean_file", default=MEAN, help=mean_help + " Set to '' for no mean subtraction.")
    p.add_argument("--input_scale", type=float, help="multiply input features by this after preprocessing")
    p.add_argument("--raw_scale", type=float, default=255.0, help="multiply raw input by this first (255)")
    p.add_argument("--channel_swap", default="2,1,0",
                   help="order to permute input channels (default 2,1,0: RGB -> Caffe's BGR)")


def load_mean(path):
    """A mean array from .npy (as classify.py) or .binaryproto (C×H×W); None for ''."""
    if not path:
        return None
    if not os.path.isfile(path):
        raise NetspecError(f"mean file '{path}' does not exist (give --mean_file '' for no mean)")
    if path.endswith(".binaryproto"):
        from ..formats import read_binaryproto
        return read_binaryproto(path)[0]
    try:
        return np.load(path)
    except (ValueError, OSError) as e:
        raise NetspecError(f"mean file '{path}' is not a numpy .npy file: {e}") from None


def int_list(text: str, flag: str):
    try:
        return [int(s) for s in text.split(",")] if text else None
    except ValueError:
        raise NetspecError(f"{flag} '{text}': expected comma-separated integers") from None


def set_mode(gpu: bool) -> None:
    from ..pycaffe.net import set_mode_cpu, set_mode_gpu
    (set_mode_gpu if gpu else set_mode_cpu)()
    print("GPU mode" if gpu else "CPU mode")


def add_arguments(p) -> None:
    p.add_argument("input_file", help="input image, directory of images, or .npy of H×W×K images")
    p.add_argument("output_file", help="output .npy of N×C probabilities")
    add_preprocessing(p, "mean image of C×H×W (a .npy, or a .binaryproto).")
    p.add_argument("--center_only", action="store_true",
                   help="predict from the centre crop alone instead of averaging 10 crops")
    p.add_argument("--images_dim", default="256,256", help="'height,width' images are resized to first")
    p.add_argument("--ext", default="jpg", help="image extension to take when input_file is a directory")


def _inputs(path: str, ext: str):
    from ..pycaffe.io import load_image
    path = os.path.expanduser(path)
    if path.endswith("npy"):
        print(f"Loading file: {path}")
        return np.load(path)
    if os.path.isdir(path):
        print(f"Loading folder: {path}")
        return [load_image(f) for f in sorted(glob.glob(os.path.join(path, "*." + ext)))]
    print(f"Loading file: {path}")
    return [load_image(path)]


def run(args) -> int:
    from ..pycaffe.classifier import Classifier
    image_dims = int_list(args.images_dim, "--images_dim")
    mean, channel_swap = load_mean(args.mean_file), int_list(args.channel_swap, "--channel_swap")
    set_mode(args.gpu)
    classifier = Classifier(args.model_def, args.pretrained_model, image_dims=image_dims, mean=mean,
                            input_scale=args.input_scale, raw_scale=args.raw_scale, channel_swap=channel_swap)
    inputs = _inputs(args.input_file, args.ext)
    if not len(inputs):
        raise NetspecError(f"{args.input_file}: no *.{args.ext} images to classify")
    print(f"Classifying {len(inputs)} inputs.")
    start = time.time()
    predictions = classifier.predict(inputs, not args.center_only)
    print(f"Done in {time.time() - start:.2f} s.")
    print(f"Saving results into {args.output_file}")
    np.save(args.output_file, predictions)
    return 0
