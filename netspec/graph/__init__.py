"""Compiled nets: a phase's NetParameter as an executable torch module and fx graph."""
import importlib

# Names are imported on first use: the CLI's help and light modules (atomic, log) must not pay for torch.
_LAZY = {
    **dict.fromkeys(['CompiledNet', 'ParamInfo', 'Step', 'compile_net'], '.compile'),
    **dict.fromkeys(['DeviceMap'], '.devices'),
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    globals()[name] = value
    return value


__all__ = ["CompiledNet", "ParamInfo", "Step", "compile_net", "DeviceMap"]
