"""Write Caffe nets in Python, under pycaffe's names (follows Caffe's python/caffe/net_spec.py).

    from netspec.net_spec import NetSpec, L, P
    n = NetSpec()
    n.data, n.label = L.Input(shape=[dict(dim=[10, 3, 227, 227]), dict(dim=[10])], ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=11, num_output=96, param=[dict(lr_mult=1)])
    n.pool1 = L.Pooling(n.conv1, kernel_size=3, stride=2, pool=P.Pooling.MAX)
    print(n.to_proto())

A `Top` is one output blob of a `Function` (one layer); `to_proto()` walks the graph back from the
requested tops. Blob and layer names come from NetSpec attribute assignment; unnamed tops are named
`<Type><count>` as pycaffe does. Keyword arguments go to the layer's own `<type>_param` message
(found through the LayerParameter descriptor) when that message has the field, else to
LayerParameter itself; `ntop`, `in_place` steer the builder. Lists fill repeated fields, dicts
fill sub-messages, enum values may be ints (`P.Pooling.AVE`) or names ('AVE').
netspec extension: `device='gpu0'` (or a list, one per group) on any layer sets LayerParameter.device.
"""
from __future__ import annotations

from collections import Counter

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from .errors import NetspecError
from .proto import param_name_dict, pb

__all__ = ["NetSpec", "Top", "Function", "layers", "params", "L", "P", "to_proto", "param_name_dict"]


_PARAM_FIELDS = param_name_dict()


def _is_repeated(field: FieldDescriptor) -> bool:
    # protobuf 7 dropped FieldDescriptor.label; older releases lack is_repeated.
    flag = getattr(field, "is_repeated", None)
    return flag if flag is not None else field.label == FieldDescriptor.LABEL_REPEATED


def _field(msg: Message, name: str, layer: str) -> FieldDescriptor:
    field = msg.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        raise NetspecError(f"{msg.DESCRIPTOR.name} has no field '{name}'", layer=layer)
    return field


def _enum_value(field: FieldDescriptor, value, layer: str):
    """An enum given by name becomes its number; a number is checked against the enum."""
    enum = field.enum_type
    found = enum.values_by_name.get(value) if isinstance(value, str) else enum.values_by_number.get(value)
    if found is None:
        known = ", ".join(v.name for v in enum.values)
        raise NetspecError(f"field '{field.name}' takes one of {known}, got {value!r}", layer=layer)
    return found.number


def assign_proto(msg: Message, name: str, value, layer: str = "?") -> None:
    """Set msg.<name> from a Python value: list → repeated, dict → sub-message, else a scalar.

    A single value for a repeated field becomes a one-element list, as pycaffe does
    (`kernel_size=3` means `kernel_size: 3`).
    """
    field = _field(msg, name, layer)
    repeated = _is_repeated(field)
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not repeated and len(values) != 1:
        raise NetspecError(f"field '{name}' of {msg.DESCRIPTOR.name} takes one value, got {value!r}",
                           layer=layer)
    for item in values:
        if field.message_type is not None:
            sub = getattr(msg, name).add() if repeated else getattr(msg, name)
            _fill_message(sub, item, layer)
            continue
        if field.enum_type is not None:
            item = _enum_value(field, item, layer)
        try:
            if repeated:
                getattr(msg, name).append(item)
            else:
                setattr(msg, name, item)
        except (TypeError, ValueError) as err:
            raise NetspecError(f"field '{name}' of {msg.DESCRIPTOR.name} cannot hold {item!r} ({err})",
                               layer=layer) from None


def _fill_message(sub: Message, item, layer: str) -> None:
    if isinstance(item, Message):
        sub.MergeFrom(item)
        sub.SetInParent()
    elif isinstance(item, dict):
        sub.SetInParent()  # an empty dict still marks the message present
        for key, val in item.items():
            assign_proto(sub, key, val, layer)
    else:
        raise NetspecError(f"{sub.DESCRIPTOR.name} is a message: give a dict, got {item!r}", layer=layer)


class Top:
    """One output blob: the `n`-th top of the layer `fn`."""

    def __init__(self, fn: Function, n: int):
        self.fn, self.n = fn, n

    def to_proto(self) -> pb.NetParameter:
        """The net of every layer needed to compute this top (names generated)."""
        return to_proto(self)

    def _update(self, params: dict) -> None:
        self.fn.params.update(params)

    def _to_proto(self, layers, names, autonames) -> None:
        self.fn._to_proto(layers, names, autonames)


class Function:
    """One layer: its Caffe type, its input Tops and its keyword parameters."""

    def __init__(self, type_name: str, inputs, params: dict):
        for i, inp in enumerate(inputs):
            if not isinstance(inp, Top):
                raise TypeError(f"{type_name} input {i} is not a Top (type is {type(inp)})")
        self.type_name, self.inputs = type_name, tuple(inputs)
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _to_proto(self, layers, names, autonames) -> None:
        if self in layers:
            return
        bottoms = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottoms.append(layers[inp.fn].top[inp.n])
        layer = pb.LayerParameter(type=self.type_name, bottom=bottoms)
        if self.in_place:
            layer.top.extend(bottoms)
        else:
            layer.top.extend(self._top_name(top, names, autonames) for top in self.tops)
        layer.name = self._name(names, autonames)
        for key, value in self.params.items():
            assign_proto(self._home(layer, key), key, value, layer.name)
        layers[self] = layer

    def _home(self, layer: pb.LayerParameter, key: str) -> Message:
        """The message a keyword belongs to: the type's own *_param, else LayerParameter."""
        own = _PARAM_FIELDS.get(self.type_name)
        if own and not key.endswith("param") and key != "device":
            sub = getattr(layer, own)
            if key in sub.DESCRIPTOR.fields_by_name:
                return sub
        if key not in layer.DESCRIPTOR.fields_by_name:
            where = f"{own} or LayerParameter" if own else "LayerParameter (no *_param for this type)"
            raise NetspecError(f"{self.type_name} has no parameter '{key}' in {where}", layer=layer.name)
        return layer

    def _name(self, names, autonames) -> str:
        # A layer is named after its first top; a top-less layer gets `<Type><count>`.
        if self not in names and self.ntop > 0:
            names[self] = self._top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = f"{self.type_name}{autonames[self.type_name]}"
        return names[self]

    @staticmethod
    def _top_name(top: Top, names, autonames) -> str:
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = f"{top.fn.type_name}{autonames[top.fn.type_name]}"
        return names[top]


def to_proto(*tops) -> pb.NetParameter:
    """The net of every layer needed to compute `tops` (Tops, or top-less Functions)."""
    layers, autonames = {}, Counter()
    for top in tops:
        top._to_proto(layers, {}, autonames)
    return pb.NetParameter(layer=list(layers.values()))


class NetSpec:
    """Named tops: `n.conv1 = L.Convolution(...)` names both the blob and the layer "conv1"."""

    def __init__(self):
        super().__setattr__("tops", {})

    def __setattr__(self, name: str, value) -> None:
        if not isinstance(value, (Top, Function)):
            hint = " (unpack several tops: n.a, n.b = L.X(..., ntop=2))" if isinstance(value, tuple) else ""
            raise TypeError(f"NetSpec.{name} must be a Top or a top-less layer, got {type(value).__name__}"
                            + hint)
        self.tops[name] = value

    def __getattr__(self, name: str):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top '{name}'") from None

    __setitem__ = __setattr__

    def __getitem__(self, name: str):
        return self.tops[name]

    def __delitem__(self, name: str) -> None:
        del self.tops[name]

    def keys(self) -> list[str]:
        return list(self.tops)

    def vals(self) -> list:
        return list(self.tops.values())

    def update(self, name: str, params: dict) -> None:
        """Add or change keyword parameters of the layer that produces top `name`."""
        top = self.tops[name]
        (top.fn if isinstance(top, Top) else top).params.update(params)

    def to_proto(self) -> pb.NetParameter:
        """Every layer needed for the assigned tops, in dependency order, with the assigned names."""
        names = {top: name for name, top in self.tops.items()}
        layers, autonames = {}, Counter()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        return pb.NetParameter(layer=list(layers.values()))


class Layers:
    """`L.<Type>(*bottoms, **params)`: a Top, a tuple of Tops (ntop > 1), or a Function (ntop=0)."""

    def __getattr__(self, type_name: str):
        if type_name.startswith("_"):
            raise AttributeError(type_name)

        def layer_fn(*bottoms, **kwargs):
            fn = Function(type_name, bottoms, kwargs)
            if fn.ntop == 0:
                return fn
            return fn.tops[0] if fn.ntop == 1 else fn.tops
        return layer_fn


class Parameters:
    """`P.<Type>.<ENUM>`: enum values of `<Type>Parameter`, e.g. P.Pooling.MAX, P.Loss.VALID."""

    def __getattr__(self, type_name: str):
        message = getattr(pb, type_name + "Parameter", None)
        if type_name.startswith("_") or message is None:
            raise AttributeError(f"netspec.proto has no message {type_name}Parameter")
        return message


layers = L = Layers()
params = P = Parameters()
