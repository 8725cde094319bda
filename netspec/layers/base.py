"""The layer contract and the registry of layer types (Caffe's layer.hpp and layer_factory.hpp).

Every Caffe layer type is one small `Layer` subclass registered under Caffe's type string:

    @register("ReLU")
    class ReLU(Layer):
        exact_bottoms = exact_tops = 1
        def setup(self, bottom_shapes): self.slope = self.param.negative_slope
        def forward(self, x): return F.leaky_relu(x, self.slope)

Building a layer runs Caffe's fixed sequence: check arity -> `setup` (read the *_param message, create
the parameter blobs with their shapes) -> infer the top shapes. Autograd is the backward pass.
Parameter blobs are `nn.Parameter` attributes listed in `blob_names` in Caffe's blob order, so
`conv1.weight` is blob 0 of layer `conv1` and `conv1.bias` blob 1.
"""
from __future__ import annotations

import contextvars

import torch
from torch import nn

from ..errors import NetspecError, ShapeError
from ..frontend.validate import check_allocation
from ..proto import param_name_dict, pb

REGISTRY: dict[str, type["Layer"]] = {}

# The folder of the prototxt being compiled; the compiler sets it around building each net.
SOURCE_DIR: contextvars.ContextVar = contextvars.ContextVar("netspec_source_dir", default=None)


def register(type_name: str):
    """Class decorator: register a Layer subclass under Caffe's type string."""

    def deco(cls):
        if type_name in REGISTRY:
            raise ValueError(f"layer type '{type_name}' is registered twice "
                             f"({REGISTRY[type_name].__module__} and {cls.__module__})")
        cls.type = type_name
        REGISTRY[type_name] = cls
        return cls

    return deco


def layer_class(type_name: str, layer: str | None = None) -> type["Layer"]:
    """The class registered for `type_name`; an unknown type lists the known ones."""
    try:
        return REGISTRY[type_name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise NetspecError(f"unknown layer type '{type_name}' (known types: {known})", layer=layer) from None


# Layer type -> its *_param field, from the schema (ConvolutionParameter -> convolution_param), plus
# the types Caffe gives another type's message.
_PARAM_FIELDS = {**param_name_dict(), "Deconvolution": "convolution_param", "SoftmaxWithLoss": "softmax_param"}


class Layer(nn.Module):
    """One Caffe layer as a torch module. Subclasses override the hooks below, nothing else."""

    type: str = "?"
    # Arity, checked once in __init__ (Caffe's ExactNumBottomBlobs, MinTopBlobs, ...); None = any.
    exact_bottoms: int | None = None
    min_bottoms: int | None = None
    max_bottoms: int | None = None
    exact_tops: int | None = None
    min_tops: int | None = None
    max_tops: int | None = None
    # Parameter blobs in Caffe's order; each is an nn.Parameter attribute of that name.
    blob_names: tuple[str, ...] = ()
    # Loss weight of top 0 when the prototxt gives none (1 for loss layers, as Caffe's LossLayer).
    default_loss_weight: float = 0.0
    # A source layer (no bottoms) whose forward() produces the next batch by itself.
    is_data: bool = False

    def __init__(self, lp: pb.LayerParameter, bottom_shapes: list[tuple[int, ...]], phase: int,
                 source_dir=None):
        super().__init__()
        self.lp = lp
        self.name = lp.name
        # A plain int for forward(): torch.compile cannot trace protobuf containers (len(lp.top) in a
        # forward splits the compiled graph there).
        self.num_tops = len(lp.top)
        self.phase = phase
        # Folder of the prototxt, the fallback for relative paths (sources, mean files) that do not
        # exist from the current directory, where Caffe looks.
        self.source_dir = source_dir if source_dir is not None else SOURCE_DIR.get()
        if self.is_data:   # an empty buffer that follows .to(device): where a source puts its batches
            self.register_buffer("_anchor", torch.empty(0), persistent=False)
        self._check_arity(len(bottom_shapes), len(lp.top))
        self.setup([tuple(s) for s in bottom_shapes])
        self.top_shapes = [tuple(int(d) for d in s) for s in self.infer_top_shapes(
            [tuple(s) for s in bottom_shapes])]

    # ---- hooks -------------------------------------------------------------------------------
    def setup(self, bottom_shapes: list[tuple[int, ...]]) -> None:
        """Read the *_param message and create parameter blobs (shapes only; `fill` initialises)."""

    def infer_top_shapes(self, bottom_shapes: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """Top shapes from bottom shapes. By default runs forward on shape-only 'meta' tensors."""
        with torch.no_grad():
            saved = {n: getattr(self, n) for n in self.blob_names}
            try:
                for n, p in saved.items():
                    object.__setattr__(self, n, torch.empty(p.shape, device="meta"))
                tops = self.forward(*[torch.empty(s, device="meta") for s in bottom_shapes])
            finally:
                for n in saved:  # drop the meta stand-ins; the real Parameters show through again
                    self.__dict__.pop(n, None)
        tops = tops if isinstance(tops, (tuple, list)) else (tops,)
        return [tuple(t.shape) for t in tops]

    def close(self) -> None:
        """Release what the layer holds outside torch (a Data layer's reader threads and LMDB handle)."""

    def filler(self, blob_name: str) -> pb.FillerParameter | None:
        """The FillerParameter initialising `blob_name` (None: Caffe's default constant 0)."""
        return None

    def fill(self, generator: torch.Generator) -> None:
        """Initialise every parameter blob with its filler (Caffe's LayerSetUp filling)."""
        from ..fillers import fill

        with torch.no_grad():
            for n in self.blob_names:
                fill(getattr(self, n), self.filler(n), generator)

    # ---- helpers for subclasses --------------------------------------------------------------
    @property
    def param(self):
        """This layer type's *_param message (defaults if the prototxt gives none)."""
        field = _PARAM_FIELDS.get(self.type)
        if field is None:
            raise AttributeError(f"layer type {self.type} has no *_param message")
        return getattr(self.lp, field)

    @property
    def blobs(self) -> list[torch.Tensor]:
        return [getattr(self, n) for n in self.blob_names]

    def new_blob(self, name: str, shape, requires_grad: bool = True) -> None:
        """Create parameter blob `name` (uninitialised) of the given shape."""
        check_allocation(shape, f"parameter blob '{name}'", self.name)
        setattr(self, name, nn.Parameter(torch.empty(tuple(int(d) for d in shape)), requires_grad))

    def error(self, message: str) -> NetspecError:
        return NetspecError(message, layer=self.name)

    def shape_error(self, message: str) -> ShapeError:
        return ShapeError(message, layer=self.name)

    def run_error(self, message: str) -> NetspecError:
        """An error in the data seen while running (an index out of range): placed at the layer's
        file:line, which the compiler records as `origin`, since no compile step catches it."""
        file, line = self.origin() if callable(getattr(self, "origin", None)) else (None, None)
        return NetspecError(message, file=file, line=line, layer=self.name)

    def _check_arity(self, nb: int, nt: int) -> None:
        for what, n, exact, lo, hi in (("bottom", nb, self.exact_bottoms, self.min_bottoms, self.max_bottoms),
                                       ("top", nt, self.exact_tops, self.min_tops, self.max_tops)):
            if exact is not None and n != exact:
                raise self.error(f"{self.type} takes {exact} {what} blob(s), found {n}")
            if lo is not None and n < lo:
                raise self.error(f"{self.type} takes at least {lo} {what} blob(s), found {n}")
            if hi is not None and n > hi:
                raise self.error(f"{self.type} takes at most {hi} {what} blob(s), found {n}")

    def extra_repr(self) -> str:
        return f"type={self.type}, name={self.name!r}"


def canonical_axis(axis: int, num_axes: int, layer: Layer) -> int:
    """Caffe's Blob::CanonicalAxisIndex: negative axes count from the end."""
    if not -num_axes <= axis < max(num_axes, 1):
        raise layer.shape_error(f"axis {axis} is out of range for a {num_axes}-axis blob")
    return axis % num_axes if num_axes else 0


class WeightBiasLayer(Layer):
    """A layer with Caffe's weight blob and, under `bias_term`, a bias blob, filled by its parameter's
    weight_filler and bias_filler (Convolution, Deconvolution, InnerProduct, Embed)."""

    blob_names = ("weight", "bias")

    def new_weight_bias(self, weight_shape, outputs: int) -> None:
        self.bias_term = self.param.bias_term
        self.new_blob("weight", weight_shape)
        if self.bias_term:
            self.new_blob("bias", (outputs,))
        else:
            self.blob_names = ("weight",)

    def filler(self, blob_name):
        field = "weight_filler" if blob_name == "weight" else "bias_filler"
        return getattr(self.param, field) if self.param.HasField(field) else None
