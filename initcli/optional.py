"""The one way initcli imports an optional dependency: a missing one is a one-line error
naming the option that needed it and the extra that installs it."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import InitcliError

EXTRAS = {"matplotlib": "plot", "torch": "torch", "onnx": "onnx", "dask": "dask", "distributed": "dask",
          "pyarrow": "parquet"}


def require(module: str, param: str | None, purpose: str) -> ModuleType:
    """`import module`, or InitcliError(param, "<purpose> needs <pkg>: pip install 'initcli[extra]'")."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        extra = EXTRAS.get(package, package)
        raise InitcliError(param, f"{purpose} needs {package}, which is not installed: "
                                  f"pip install 'initcli[{extra}]'") from None
