"""initcli: will this weight initialisation train?

The Python API returns records (frozen dataclasses); the CLI (`initcli`) only renders them.

    >>> from initcli import propagate
    >>> result = propagate("he-normal", "relu", depth=50)
    >>> result.layers[-1].grad_var

Names are imported on first use, so that `initcli --help` never pays for numpy.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "activations": ("ACTIVATION_NAMES", "Activation", "get_activation"),
    "errors": ("InitcliError",),
    "engine": ("Architecture", "Stack", "backward", "build_stack", "forward"),
    "propagation": ("LAYER_COLUMNS", "LayerStats", "PropagateResult", "measure", "propagate"),
    "lsuv": ("lsuv",),
    "inspection": ("inspect", "InspectResult", "TensorReport"),
    "probing": ("probe", "ProbeResult", "ModuleStats", "ProbeComparison", "load_model"),
    "stats": ("effective_rank", "mean_input_cosine", "moments"),
    "sampling": ("SampleResult", "WeightStats", "sample", "save_npz"),
    "schemes": ("SCHEME_NAMES", "SCHEMES", "Init", "Scheme", "compute_fans", "get_scheme", "make_init",
                "scheme_table"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = ["__version__", *_WHERE]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'initcli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
