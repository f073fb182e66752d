"""Mean-field predictions: what a layer's numbers should be for infinitely wide layers.

Poole et al. 2016 (Exponential expressivity in deep neural networks through transient chaos);
Schoenholz et al. 2017 (Deep Information Propagation). With h_l ~ N(0, q_l):

    q_1 = σ_w,1²·E[x²] + σ_b²,   q_l = σ_w,l²·E[φ(√q_{l−1} z)²] + σ_b²,   σ_w,l² = fan_in·Var(W_l)
    Var(δ_L) = E[φ'(h_L)²],      Var(δ_l) = Var(δ_{l+1})·σ'_{l+1}²·E[φ'(h_l)²],   σ'_l² = fan_out·Var(W_l)

Every Gaussian expectation goes through one quadrature rule that works for any activation:
Gauss–Legendre panels on each side of 0 (so a kink or jump at 0 never sits inside a panel),
growing geometrically from width ~σ/8 near the centre to 12σ, which resolves both the
activation's own scale (about 1) and the Gaussian's (√q) whether q is 1e-8 or 1e8.

The package: `quadrature` (the Gaussian expectations), `meanfield` (the recursion through a
stack and the columns beside a run) and `chaos` (gains and the edge of chaos). Every name is
importable from here.
"""

from __future__ import annotations

from .chaos import (
    BIAS_STD_MAX,
    CHAOTIC,
    CRITICAL,
    CRITICAL_GRID,
    EXPLODING,
    ORDERED,
    PHASES,
    SIGMA_W_RANGE,
    VANISHING,
    Gain,
    Phase,
    chi_1,
    correlation_map,
    critical,
    critical_sigma_w,
    critical_steps,
    critical_summary,
    fixed_point,
    gain,
    phase,
    q_map,
)
from .meanfield import (
    THEORY_COLUMNS,
    LayerTheory,
    TheoryColumns,
    beside,
    finite_width_spread,
    mean_field,
    parts_ways,
)
from .quadrature import (
    dphi_sq,
    gauss_expect,
    gauss_expect_pair,
    gaussian_nodes,
    phi_sq,
)

__all__ = [
    "BIAS_STD_MAX",
    "CHAOTIC",
    "CRITICAL",
    "CRITICAL_GRID",
    "EXPLODING",
    "Gain",
    "LayerTheory",
    "ORDERED",
    "PHASES",
    "Phase",
    "SIGMA_W_RANGE",
    "THEORY_COLUMNS",
    "TheoryColumns",
    "VANISHING",
    "beside",
    "chi_1",
    "correlation_map",
    "critical",
    "critical_sigma_w",
    "critical_steps",
    "critical_summary",
    "dphi_sq",
    "finite_width_spread",
    "fixed_point",
    "gain",
    "gauss_expect",
    "gauss_expect_pair",
    "gaussian_nodes",
    "mean_field",
    "parts_ways",
    "phase",
    "phi_sq",
    "q_map",
]
