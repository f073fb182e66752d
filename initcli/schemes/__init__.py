"""Initialisation schemes: one variance-scaling core and named presets over it.

Var(W) = gain² · scale / n, with n = fan_in, fan_out or (fan_in + fan_out)/2 by mode, drawn
from a normal, a uniform U(-√(3·Var), √(3·Var)) or a normal truncated to ±2σ (as JAX's
`variance_scaling`). Xavier, He, LeCun and PyTorch's nn.Linear default are presets over it;
zeros, ones, constant, normal (with a mean), uniform (symmetric or on [low, high]), torch's
trunc_normal_, sparse_ and dirac_, orthogonal and identity stand beside it.

Shapes are in PyTorch's layout, (out, in, *kernel), and fans are computed as torch.nn.init
computes them, so that for the same arguments the std (or limit) equals torch's; JAX's
in_axis/out_axis/batch_axis choose other axes (defaults 1, 0 and none: torch's layout).

Weights are drawn in float32 whatever the run's dtype (so float32 and float64 runs with one
seed hold the same weights): an init whose weights could exceed float32's range is refused
when it is made, naming the option at fault, rather than overflowing while drawing.

The package: `core` (the variance-scaling core, fans, float32 checks), `draws` (the samplers),
`truncnormal` (trunc_normal_'s distribution), `kinds` (one object per kind of scheme: formula,
density, sampler), `presets` (the named schemes), `parsing` (`NAME(key=value,...)` and
aliases), `init` (`Init`) and `resolve` (`make_init`). Every name is importable from here.
"""

from __future__ import annotations

from ..residual_init import (
    RESIDUAL_INIT_NAMES,
    ResidualInit,
    ResidualPreset,
    get_residual_preset,
    residual_init_table,
    resolve_residual_init,
)
from .core import (
    DEFAULT_SPARSITY,
    DISTRIBUTIONS,
    FAN_MODES,
    FLOAT32_MAX,
    GAUSSIAN_TAIL,
    SPARSE_STD,
    TRUNC_NORMAL_HIGH,
    TRUNC_NORMAL_LOW,
    TRUNCATED_NORMAL_STD,
    TRUNCATION_BOUND,
    check_number,
    check_weight_scale,
    compute_fans,
    variance_scaling_std,
)
from .draws import (
    gaussian,
)
from .init import (
    Init,
)
from .kinds import (
    KINDS,
    NO_FAN_KINDS,
    ConstantKind,
    DeltaOrthogonalKind,
    DiracKind,
    FixedKind,
    IdentityKind,
    LsuvKind,
    OnesPatternKind,
    OrthogonalKind,
    OrthogonalPerTapKind,
    ScalingKind,
    SchemeKind,
    SparseKind,
    TruncNormalKind,
    ZerosKind,
    register_kind,
)
from .parsing import (
    SPEC_KEYS,
    get_scheme,
    parse_scheme_spec,
)
from .presets import (
    GLOROT,
    GPT2_DEFAULT_N_LAYER,
    GPT2_INIT_STD,
    GPT2_RESIDUAL_STD,
    HE,
    LECUN,
    SCHEME_NAMES,
    SCHEMES,
    Scheme,
    gpt2_residual_std,
    scheme_table,
)
from .resolve import (
    INIT_KEYWORDS,
    ignored_options,
    init_from_params,
    make_init,
)
from .truncnormal import (
    TruncatedNormal,
)

__all__ = [
    "ConstantKind",
    "DEFAULT_SPARSITY",
    "DISTRIBUTIONS",
    "DeltaOrthogonalKind",
    "DiracKind",
    "FAN_MODES",
    "FLOAT32_MAX",
    "FixedKind",
    "GAUSSIAN_TAIL",
    "GLOROT",
    "GPT2_DEFAULT_N_LAYER",
    "GPT2_INIT_STD",
    "GPT2_RESIDUAL_STD",
    "HE",
    "INIT_KEYWORDS",
    "IdentityKind",
    "Init",
    "KINDS",
    "LECUN",
    "LsuvKind",
    "NO_FAN_KINDS",
    "OnesPatternKind",
    "OrthogonalKind",
    "OrthogonalPerTapKind",
    "RESIDUAL_INIT_NAMES",
    "ResidualInit",
    "ResidualPreset",
    "SCHEMES",
    "SCHEME_NAMES",
    "SPARSE_STD",
    "SPEC_KEYS",
    "ScalingKind",
    "Scheme",
    "SchemeKind",
    "SparseKind",
    "TRUNCATED_NORMAL_STD",
    "TRUNCATION_BOUND",
    "TRUNC_NORMAL_HIGH",
    "TRUNC_NORMAL_LOW",
    "TruncNormalKind",
    "TruncatedNormal",
    "ZerosKind",
    "check_number",
    "check_weight_scale",
    "compute_fans",
    "gaussian",
    "get_residual_preset",
    "get_scheme",
    "gpt2_residual_std",
    "ignored_options",
    "init_from_params",
    "make_init",
    "parse_scheme_spec",
    "register_kind",
    "residual_init_table",
    "resolve_residual_init",
    "scheme_table",
    "variance_scaling_std",
]
