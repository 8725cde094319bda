"""Package attributes imported on first use: `netspec --help` and the light modules (atomic writes, logs)
must not pay for importing torch, which the heavier modules behind these names do."""
import importlib


def lazy_getattr(package: str, table: dict[str, str]):
    """A module-level __getattr__ for `package` that imports name -> submodule from `table` when first used
    and keeps the value in the package's namespace."""
    import sys

    def __getattr__(name: str):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(table[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
