"""`coordcheck`: does each layer's activation scale stay put as the network gets wider (or
deeper) and trains a few steps? The coordinate check of µP (Yang et al. 2022, Tensor
Programs V, §5 and Fig. 5; mup's `get_coord_data`): for each width, train K optimizer steps
on one fixed batch and record each layer's mean |x| over the batch and its units before every
step; under the standard parametrization with Adam the hidden layers and the output grow with
width after one step, under µP they stay flat.

The network is `initcli.training`'s (Linear → activation layers, then a linear readout),
trained on one batch of the generated regression task with SGD or Adam, under `--param`
(see `initcli.parametrization`) and optionally as a residual stack with `--residual-init`.

Slopes: for each (layer, step) the least-squares slope of log(l1) against log(width) over
every width and seed, with its standard error (the usual OLS one, σ̂/√Sxx) — against depth
likewise when several depths are given. A slope is `flat` when |slope| ≤ flat_tol or within
3·SE of 0 with SE ≤ flat_tol, `grows` or `shrinks` beyond flat_tol and 3·SE, `unclear` when
the fit is too loose to tell (SE > flat_tol); `zero` when a layer is exactly 0 (a zero readout at
step 0) and `overflow` when a value is not finite.

The parts: `slopes` (the records, the fit and the verdict), `options` (the options both forms
share), `builtin` (initcli's own network) and `torch_model` (`--module`, the user's torch
model); every name is given here too.
"""

from __future__ import annotations

from .builtin import READOUT_INITS, coordcheck
from .options import DEFAULT_LR, DEFAULT_WIDTHS, MAX_STEPS, check_training, parse_sizes
from .slopes import (
    DEFAULT_FLAT_TOL,
    MODULE_ROW_COLUMNS,
    MODULE_SUMMARY_COLUMNS,
    ROW_COLUMNS,
    SE_FACTOR,
    SUMMARY_COLUMNS,
    CoordResult,
    CoordRow,
    Slope,
    fit_slope,
    group_slopes,
    verdict,
)
from .torch_model import PARAM_GROUPS_ATTRIBUTE, coordcheck_module

__all__ = [
    "DEFAULT_FLAT_TOL", "DEFAULT_LR", "DEFAULT_WIDTHS", "MAX_STEPS", "MODULE_ROW_COLUMNS", "MODULE_SUMMARY_COLUMNS",
    "PARAM_GROUPS_ATTRIBUTE", "READOUT_INITS", "ROW_COLUMNS", "SE_FACTOR", "SUMMARY_COLUMNS", "CoordResult",
    "CoordRow", "Slope", "check_training", "coordcheck", "coordcheck_module", "fit_slope", "group_slopes",
    "parse_sizes", "verdict",
]
