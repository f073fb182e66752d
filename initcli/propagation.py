"""`propagate`: sample a stack, run a batch through it, measure every layer, with mean-field
theory beside the rows: the public entry over every engine (`initcli.engines`).

`propagate(..., arch=NAME)` runs the engine `--arch NAME` names; the MLP's runs are
`initcli.engines.mlp.runs`, whose names (prepare, run_prepared, estimate_bytes, measure, …)
stay importable from here, as do the input checks every command shares (`initcli.checks`).
"""

from __future__ import annotations

from collections.abc import Callable

from .checks import (  # noqa: F401  (re-exported: the checks were defined here before)
    DTYPES,
    MAX_DEPTH,
    MAX_SIZE,
    STACK_OPTIONS,
    available_bytes,
    check_dtype,
    check_memory,
    check_seed,
    check_std,
    positive_int,
    stack_sizes,
)
from .engine import (  # noqa: F401  (re-exported: the MLP's kernels, as before)
    MEMORY_OPTIONS,
    PLAIN,
    SINGLE_THREAD_WORK,
    Architecture,
    Stack,
    backward,
    build_stack,
    forward,
)
from .engines import BUILTIN
from .engines.mlp.runs import (  # noqa: F401  (re-exported: the MLP's runs were defined here)
    MlpRun,
    PropagateResult,
    check_residual_init,
    estimate_bytes,
    measure,
    prepare,
    run_inputs,
    run_prepared,
    theory_columns,
    work,
)
from .engines.shared import LAYER_COLUMNS, LayerRecorder, LayerStats  # noqa: F401  (re-exported)
from .errors import InitcliError
from .schemes import Init


def propagate(scheme: str | Init = "he-normal", activation: str = "relu", *,
              progress: Callable[[int], None] | None = None, arch: str = "mlp", **options) -> PropagateResult:
    """Sample a stack with the scheme, run `batch` N(0, input_std²) inputs through it,
    backpropagate a unit-Gaussian cotangent, and measure every layer.

    Options (see `prepare`): sizes or depth/width (default 10 × 256), batch (512), bias_std,
    input_std, dtype (float32), seed, the init options (gain, mode, distribution,
    negative_slope, value, std, limit), theory, checkpoint.

    Overflow never raises: the affected cells hold inf/nan and the result names the first
    layer where it happened. With `theory`, each layer also carries the mean-field prediction
    for the run's scheme, activation, sizes, bias and input std (see `initcli.theory`).
    `checkpoint` keeps activations only every ⌈√depth⌉ layers and recomputes the rest in the
    backward pass: O(√depth) activation memory, the same numbers. `progress(1)` is called
    after each layer of the forward pass and of the backward pass (2·depth calls).

    `arch="conv"` runs a convolution stack instead (`initcli.conv.propagate`: options
    channels, spatial, kernel, padding, depth, batch, …; no sizes or width), and
    `arch="transformer"` a stack of transformer blocks (`initcli.transformer.propagate`:
    width, heads, seq_len, mlp_ratio, causal, norm_position, residual, depth, batch, …).
    """
    return engine(check_arch(arch)).propagate(scheme, activation, progress=progress, **options)


ARCHS = BUILTIN  # the built-in architectures (the registry may hold more: `initcli.engines.names()`)


def check_arch(arch: str | None) -> str:
    """A registered engine's name (`initcli.engines`): 'mlp' (the Linear engine,
    `initcli.engine`), 'conv', 'transformer', or one registered since."""
    from .engines import names

    name = "mlp" if arch is None else str(arch).strip().lower()
    known = names()
    if name not in known:
        from .errors import suggest

        raise InitcliError("arch", f"unknown architecture '{arch}'{suggest(name, list(known))}; choose from "
                                   f"{', '.join(known)}")
    return name


def engine(kind: str):
    """The engine of an architecture (`initcli.engines`): prepare, run_prepared, propagate,
    estimate_bytes, prepare_jacobian, run_jacobian, MEMORY_OPTIONS and the network itself."""
    from .engines import get

    return get(kind)
