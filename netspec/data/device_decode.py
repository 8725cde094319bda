"""JPEG records decoded on the Data layer's device (NETSPEC_DATA_DECODE=device), for a GPU that
trains faster than the host's cores decode.

A core decodes about a thousand 256x256 JPEGs a second with OpenCV (RESULTS.md, Data layer
images/s per worker), an H200 trains AlexNet on ten times that. With this mode the host does per
record only what is cheap: parse the Datum, read the JPEG frame header (size and components),
and draw the crop, mirror and colour shift in Caffe's order from the batch's generator, the very
draws of the host path (DataTransformer.draw). The layer's device then decodes the whole batch in
one call (torchvision.io.decode_jpeg: nvJPEG on CUDA), crops, mirrors and turns RGB into Caffe's
BGR in one gather, and transform.Normaliser does the float arithmetic as in uint8 mode.

Pixels: torchvision's CPU decoder is libjpeg-turbo, as OpenCV's, and gives OpenCV's pixels exactly
(tests); nvJPEG's IDCT and chroma upsampling are not libjpeg's (gpu_acceptance.py measures how far
its pixels are from OpenCV's), so on CUDA the mode gives up Caffe's exact pixels for speed, and is
off unless asked for. Records it cannot take (not JPEG, 12-bit, arithmetic-coded or lossless,
CMYK) are decoded on the host with OpenCV as usual, cropped there, and join the batch on the device.
torchvision 0.29 marks its image decoders deprecated in favour of TorchCodec; they still work.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import NetspecError
from ..formats.image_header import check_size, jpeg_frame
from .datum import parse
from .transform import crop_window

DECODE_ENV = "NETSPEC_DATA_DECODE"
# Frame types nvJPEG and libjpeg-turbo both decode: baseline, extended Huffman, progressive.
_DEVICE_SOF = {0xC0, 0xC1, 0xC2}


def requested_decode() -> str:
    """Where encoded records are decoded: NETSPEC_DATA_DECODE ('host', the default, or 'device')."""
    text = os.environ.get(DECODE_ENV, "") or "host"
    if text not in ("host", "device"):
        raise NetspecError(f"{DECODE_ENV}: expected host or device, found {text!r}")
    return text


def check_decoder() -> None:
    """Refuse the mode, in one line, where torchvision cannot be imported."""
    try:
        import torchvision.io  # noqa: F401
    except Exception as e:   # ImportError, or torchvision built for another torch (a RuntimeError)
        raise NetspecError(f"{DECODE_ENV}=device needs torchvision's decode_jpeg, which does not import "
                           f"here ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); "
                           f"install the torchvision built for torch {torch.__version__}, or unset "
                           f"{DECODE_ENV}") from None


def decode_jpegs(data: list[torch.Tensor], channels: int, device: torch.device) -> list[torch.Tensor]:
    """The images of `data` (1-D uint8 CPU tensors of JPEG files) as CHW uint8 tensors on `device`,
    RGB for 3 channels, gray for 1 (what OpenCV gives with IMREAD_COLOR / IMREAD_GRAYSCALE)."""
    from torchvision.io import ImageReadMode, decode_jpeg
    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    return decode_jpeg(data, mode=mode, device=device)


def device_shape(value: bytes, force_color: bool, force_gray: bool, what: str) -> tuple[int, int, int] | None:
    """(C, H, W) the decoded record will have, if the device can decode it; None for the host."""
    frame = jpeg_frame(value)
    if frame is None:
        return None
    w, h, components, precision, sof = frame
    if sof not in _DEVICE_SOF or precision != 8 or components not in (1, 3) or not w or not h:
        return None
    check_size(value, what)
    return 3 if force_color else 1 if force_gray else components, h, w


@dataclass
class EncodedBatch:
    """A batch whose JPEG records still have to be decoded: `jpegs` (bytes as 1-D uint8 tensors)
    for rows `jpeg_rows` with their (C, H, W) in `jpeg_shapes`; `cropped` (uint8, already cropped
    and mirrored on the host) for rows `host_rows`; and as in uint8 mode the labels and each image's
    (h_off, w_off, mirror) and colour shift. `keys` name the records in errors."""
    out_shape: tuple[int, int, int]
    keys: list
    jpegs: list
    jpeg_rows: list
    jpeg_shapes: list
    cropped: torch.Tensor | None
    host_rows: list
    label: torch.Tensor
    params: torch.Tensor
    shift: torch.Tensor

    def to_device(self, device, decode=None) -> tuple:
        """(data uint8 N x C x crop x crop, label, params, shift), all on `device`."""
        device = torch.device(device)
        # Decoded before anything else is queued: torchvision writes on a stream of its own into
        # memory this stream's pool hands out, so no block this stream frees may be pending then.
        images = _decoded(self, device, decode or decode_jpegs) if self.jpegs else None
        params = self.params.to(device, non_blocking=True)
        n, (c, oh, ow) = len(self.label), self.out_shape
        crops = None
        if images is not None:
            offsets = params if not self.host_rows else \
                params[torch.tensor(self.jpeg_rows, device=device)]
            crops = _decoded_crops(self, images, offsets)
        if not self.host_rows:
            data = crops
        else:
            data = torch.empty((n, c, oh, ow), dtype=torch.uint8, device=device)
            data[self.host_rows] = self.cropped.to(device, non_blocking=True)
            if crops is not None:
                data[self.jpeg_rows] = crops
        return (data, self.label.to(device, non_blocking=True), params,
                self.shift.to(device, non_blocking=True))


def _decoded(batch: EncodedBatch, device, decode) -> list[torch.Tensor]:
    """The JPEG rows decoded on `device`, each checked against the size its header declared (the
    crops were drawn from it); a record the decoder refuses is named, as the host path names it."""
    c = batch.out_shape[0]
    try:
        images = decode(batch.jpegs, c, device)
    except RuntimeError as batch_error:    # the whole batch fails: find the record, one at a time
        where, error = "a batch of records", batch_error
        for j, data in enumerate(batch.jpegs):
            try:
                decode([data], c, device)
            except RuntimeError as e:
                where, error = f"record '{batch.keys[batch.jpeg_rows[j]]}'", e
                break
        reason = " ".join(str(error).split())[:160]
        raise NetspecError(f"{where}: the device cannot decode the JPEG ({reason}); {DECODE_ENV}=host "
                           f"decodes with OpenCV") from None
    for j, image in enumerate(images):
        if tuple(image.shape) != batch.jpeg_shapes[j]:
            raise NetspecError(f"record '{batch.keys[batch.jpeg_rows[j]]}': its JPEG header declares "
                               f"{'x'.join(map(str, batch.jpeg_shapes[j]))} but it decodes to "
                               f"{'x'.join(map(str, image.shape))}")
    return images


def _decoded_crops(batch: EncodedBatch, images: list[torch.Tensor], offsets: torch.Tensor) -> torch.Tensor:
    """The decoded images cropped, mirrored and in BGR order: images of one size are stacked and cut
    in one gather (each other size needs a gather of its own). `offsets`: (h_off, w_off, mirror)."""
    c, oh, ow = batch.out_shape
    device = images[0].device
    channels = torch.arange(c - 1, -1, -1, device=device)      # RGB -> BGR; gray stays
    by_size: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        by_size.setdefault(tuple(image.shape), []).append(i)
    out = None
    for members in by_size.values():
        stack = torch.stack([images[i] for i in members]) if len(members) > 1 else images[members[0]][None]
        rows, cols = crop_window(offsets[members] if len(by_size) > 1 else offsets, oh, ow)
        picked = torch.arange(len(members), device=device)
        cut = stack[picked[:, None, None, None], channels[None, :, None, None], rows[:, None, :, None],
                    cols[:, None, None, :]]
        if len(by_size) == 1:
            return cut
        if out is None:
            out = torch.empty((len(images), c, oh, ow), dtype=torch.uint8, device=device)
        out[members] = cut
    return out


def encoded_batch(records, transformer, rng: np.random.Generator, batch_size: int, pin: bool,
                  source: str) -> EncodedBatch:
    """The host's half for one batch: records parsed, JPEG headers read, crops drawn in record order
    (the draws of the host path); records the device cannot decode are decoded and cropped here."""
    t, p = transformer, transformer.param
    n = batch_size
    label = torch.empty(n, dtype=torch.float32, pin_memory=pin)
    params = torch.empty((n, 3), dtype=torch.int32, pin_memory=pin)
    shift = torch.zeros((n, 3), dtype=torch.float32, pin_memory=pin)
    params_np, shift_np, label_np = params.numpy(), shift.numpy(), label.numpy()
    jpegs, jpeg_rows, jpeg_shapes, host_rows, host_images = [], [], [], [], []
    keys = [key for key, _ in records]
    out_shape = None
    for i, (key, value) in enumerate(records):
        datum = parse(value, key, source)
        shape = device_shape(datum.data, p.force_color, p.force_gray, f"record '{key}'") \
            if datum.encoded else None
        image = t.array(datum, key) if shape is None else None
        record_shape = t.output_shape(shape or image.shape, key)
        out_shape = out_shape or record_shape
        t.same_size(out_shape, record_shape, key)
        if shape is None:
            if image.dtype != np.uint8:
                raise NetspecError(f"record '{key}' holds {image.dtype} pixels; {DECODE_ENV}=device "
                                   f"reads uint8 images only")
            crop = np.empty(out_shape, np.uint8)
            h_off, w_off, mirror, colour = t.crop_uint8(image, rng, out=crop, key=key)
            host_rows.append(i)
            host_images.append(crop)
        else:
            mirror, h_off, w_off, colour = t.draw(shape, out_shape, rng)
            jpegs.append(torch.frombuffer(bytearray(datum.data), dtype=torch.uint8))
            jpeg_rows.append(i)
            jpeg_shapes.append(shape)
        params_np[i] = (h_off, w_off, int(mirror))
        if colour is not None:
            shift_np[i] = colour
        label_np[i] = datum.label
    cropped = None
    if host_images:
        cropped = torch.from_numpy(np.stack(host_images))
        cropped = cropped.pin_memory() if pin else cropped
    return EncodedBatch(out_shape, keys, jpegs, jpeg_rows, jpeg_shapes, cropped, host_rows, label, params,
                        shift)
