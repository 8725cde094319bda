"""Compiled nets: a phase's NetParameter as an executable torch module and fx graph."""
from .compile import CompiledNet, ParamInfo, Step, compile_net
from .devices import DeviceMap

__all__ = ["CompiledNet", "ParamInfo", "Step", "compile_net", "DeviceMap"]
