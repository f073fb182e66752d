"""The registry of architectures: `get(name)` is the engine `--arch name` runs.

Each engine module (or package) of this folder registers itself on import, and every module
here is imported when the registry is first read; `names()` lists the built-in ones in the
order `--arch` documents them, then any other.
"""

from __future__ import annotations

from .base import Engine, thread_policy

__all__ = ["BUILTIN", "Engine", "get", "names", "of_run", "register", "thread_policy"]

_REGISTRY: dict[str, Engine] = {}
BUILTIN = ("mlp", "conv", "transformer")  # the built-in engines, in the order --arch documents them
_SUPPORT = ("base", "shared", "spectra")  # the modules of this folder that are no engine


def register(engine: Engine) -> Engine:
    if engine.name in _REGISTRY and _REGISTRY[engine.name] is not engine:
        raise ValueError(f"an engine named {engine.name!r} is already registered")
    _REGISTRY[engine.name] = engine
    return engine


def _load_builtin() -> None:
    """Import every engine module (or package) of this folder, each registering itself: a new
    architecture dropped in here is found by every process, workers included."""
    import importlib
    import pkgutil

    for module in pkgutil.iter_modules(__path__):
        if module.name not in _SUPPORT and module.name not in _REGISTRY:
            importlib.import_module(f"{__name__}.{module.name}")


def get(name: str) -> Engine:
    """The engine registered as `name` (KeyError for an unknown one: `--arch` is checked
    before, with the one-line error, by `initcli.propagation.check_arch`)."""
    if name not in _REGISTRY:
        _load_builtin()
    return _REGISTRY[name]


def names() -> tuple[str, ...]:
    """The built-in engines in `--arch`'s documented order, then any other in the order they
    registered (importing an engine's module registers it, whichever is imported first)."""
    _load_builtin()
    return BUILTIN + tuple(name for name in _REGISTRY if name not in BUILTIN)


def of_run(params: dict) -> Engine:
    """The engine a run's recorded params come from (an MLP's params name no `arch`)."""
    return get(params.get("arch", "mlp"))
