"""Compiled nets: a phase's NetParameter as an executable torch module and fx graph."""
from ..lazy import lazy_getattr

# Names are imported on first use (netspec/lazy.py).
_LAZY = {
    **dict.fromkeys(['CompiledNet', 'ParamInfo', 'Step', 'compile_net'], '.compile'),
    **dict.fromkeys(['DeviceMap'], '.devices'),
}


__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = ["CompiledNet", "ParamInfo", "Step", "compile_net", "DeviceMap"]
