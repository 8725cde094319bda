"""Two "devices" on a CPU-only machine: `Placed(t, k)` is a CPU tensor that reports device cuda:k.

An op mixing tensors of two slots raises as CUDA does ("Expected all tensors to be on the same
device"), `.to(cuda:j)` moves a tensor to slot j, `.cpu()` gives a plain tensor. Tests of code that
reduces over blobs of a model-parallel net (clip_gradients, debug_info, the losses) run with it
where the machine has fewer than two GPUs.
"""
import torch
from torch.utils._pytree import tree_flatten, tree_map

MIXED = "Expected all tensors to be on the same device (a Placed test tensor on cuda:{} and cuda:{})"


class Placed(torch.Tensor):
    @staticmethod
    def __new__(cls, data, slot: int):
        t = torch.Tensor._make_subclass(cls, data.detach() if not data.requires_grad else data,
                                        data.requires_grad)
        t.slot = slot
        return t

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func == torch.Tensor.device.__get__:
            return torch.device("cuda", args[0].slot)
        if func in (torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.cpu):
            moved = _move(func, args, kwargs)
            if moved is not None:
                return moved
        leaves, _ = tree_flatten((args, kwargs))
        slots = sorted({x.slot for x in leaves if isinstance(x, Placed)})
        if len(slots) > 1:
            raise RuntimeError(MIXED.format(*slots[:2]))
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        if not slots:
            return out
        return tree_map(lambda t: _wrap(t, slots[0]) if type(t) is torch.Tensor else t, out)


def _wrap(t: torch.Tensor, slot: int) -> "Placed":
    p = t.as_subclass(Placed)
    p.slot = slot
    return p


def _plain(t: torch.Tensor) -> torch.Tensor:
    with torch._C.DisableTorchFunctionSubclass():
        return t.as_subclass(torch.Tensor).clone()


def _move(func, args, kwargs):
    """.to(cuda:k) / .cuda(k) / .cpu() of a Placed tensor; None for dtype-only conversions."""
    src = args[0]
    if func is torch.Tensor.cpu:
        return _plain(src)
    target = kwargs.get("device")
    for a in args[1:]:
        if isinstance(a, (str, torch.device)):
            target = a
    if func is torch.Tensor.cuda:
        target = torch.device("cuda", args[1] if len(args) > 1 else kwargs.get("device", 0) or 0)
    if target is None:
        return None
    target = torch.device(target)
    data = _plain(src)
    dtype = next((a for a in args[1:] if isinstance(a, torch.dtype)), kwargs.get("dtype"))
    if dtype is not None:
        data = data.to(dtype)
    return data if target.type == "cpu" else _wrap(data, target.index or 0)
