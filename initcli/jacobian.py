"""Singular values of the input–output Jacobian after each layer (dynamical isometry): the
public names of the spectrum every engine reports (`initcli.engines.spectra`) and of the MLP
engine's Jacobian (`initcli.engines.mlp.jacobian`, where the method is described)."""

from .engines.mlp.jacobian import (  # noqa: F401  (re-exported: defined here before)
    JACOBIAN_OPTIONS,
    estimate_jacobian_bytes,
    jacobian,
    jacobian_spectrum,
    plan_jacobian,
    prepare_jacobian,
    run_jacobian,
)
from .engines.spectra import (  # noqa: F401  (re-exported: defined here before)
    DEFAULT_INPUTS,
    JACOBIAN_COLUMNS,
    MAX_JACOBIAN_WIDTH,
    SPECTRUM_COLUMNS,
    VALUE_COLUMNS,
    JacobianResult,
    JacobianRun,
    JacobianStats,
    check_inputs,
    singular_values,
    spectrum_stats,
)
