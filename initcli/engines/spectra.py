"""The Jacobian spectrum every engine reports: the per-layer (per-block) statistics of the
singular values of ∂a_l/∂x (Pennington, Schoenholz & Ganguli 2017, 2018), the result, the
checked plan any engine's prepared run goes into, and the SVD and statistics themselves."""

from __future__ import annotations

import math
from contextlib import suppress
from dataclasses import dataclass, field, fields

import numpy as np

from ..errors import InitcliError


@dataclass(frozen=True)
class JacobianStats:
    """One layer's spectrum statistics. Every one is over the pooled singular values σ of the
    `inputs` Jacobians ∂a_l/∂x (min(n_l, n_0) values per input), except the max/min/condition
    columns, which are per-input values averaged over the inputs."""

    layer: int
    sv_mean_sq: float  # m1 = E[σ²]: the variance map's view (the gradient variance factor)
    sv_max: float
    sv_min: float
    sv_condition: float  # sv_max / sv_min: 1 is perfect isometry
    # the spectral moments of JJᵀ (Pennington, Schoenholz & Ganguli 2018, The emergence of
    # spectral universality in deep networks): shown with `spectrum`
    sv_mean_4th: float = math.nan  # m2 = E[σ⁴]
    sv_sq_var: float = math.nan  # Var(σ²) = m2 − m1², computed two-pass (never < 0): 0 is isometry up to scale


JACOBIAN_COLUMNS: tuple[str, ...] = ("layer", "sv_mean_sq", "sv_max", "sv_min", "sv_condition")
SPECTRUM_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(JacobianStats))
# the rows of `JacobianResult.value_rows()`: every singular value, 1-based layer, input and
# index, index 1 the largest
VALUE_COLUMNS: tuple[str, ...] = ("layer", "input", "index", "singular_value")
MAX_JACOBIAN_WIDTH = 4096
DEFAULT_INPUTS = 8



@dataclass(frozen=True)
class JacobianResult:
    """`layers`: one JacobianStats per layer. `singular_values` (with `spectrum` only): every
    singular value, one float64 array of shape (inputs, min(n_l, n_0)) per layer, each row
    descending; `value_rows` gives the same numbers as flat rows."""

    params: dict
    layers: tuple[JacobianStats, ...]
    singular_values: tuple[np.ndarray, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def columns(self) -> tuple[str, ...]:
        """JACOBIAN_COLUMNS, plus the spectral moments when the run asked for `spectrum`."""
        return SPECTRUM_COLUMNS if self.params.get("spectrum") else JACOBIAN_COLUMNS

    def rows(self) -> list[dict]:
        """One dict per layer, keyed by `columns`."""
        return [{name: getattr(layer, name) for name in self.columns} for layer in self.layers]

    def value_rows(self) -> list[dict]:
        """Every singular value as (layer, input, index, singular_value) rows (VALUE_COLUMNS):
        layer, input and index 1-based, index 1 the largest. Empty without `spectrum`; nan
        values where the Jacobian overflowed."""
        if self.singular_values is None:
            return []
        return [{"layer": layer, "input": i + 1, "index": k + 1, "singular_value": float(value)}
                for layer, values in enumerate(self.singular_values, start=1)
                for i, row in enumerate(values) for k, value in enumerate(row)]


def singular_values(jac: np.ndarray, progress) -> np.ndarray:
    """(inputs, min(units, n_0)) singular values, descending; nan for an input whose Jacobian
    is not finite (past an overflow) or whose SVD does not converge."""
    units, inputs, width_in = jac.shape
    values = np.full((inputs, min(units, width_in)), np.nan)
    for i in range(inputs):
        matrix = jac[:, i, :]
        if np.isfinite(matrix).all():
            with suppress(np.linalg.LinAlgError):  # no convergence: the row stays nan
                values[i] = np.linalg.svd(matrix, compute_uv=False)
        if progress is not None:
            progress(1)
    return values


def spectrum_stats(index: int, values: np.ndarray) -> JacobianStats:
    if not np.isfinite(values).all():
        nan = math.nan
        return JacobianStats(index, nan, nan, nan, nan, nan, nan)
    largest, smallest = values[:, 0], values[:, -1]
    condition = np.where(smallest > 0, largest / np.where(smallest > 0, smallest, 1.0), np.inf)
    squares = values**2
    m1 = float(np.mean(squares))
    m2 = float(np.mean(squares**2))
    spread = float(np.mean((squares - m1) ** 2))
    return JacobianStats(index, m1, float(largest.mean()), float(smallest.mean()), float(condition.mean()), m2,
                         spread)


@dataclass(frozen=True)
class JacobianRun:
    """A `jacobian` call with every argument checked, for any engine's prepared run (it has
    `depth` and `params`); `steps` is the number of progress steps the run reports (one per
    layer, or block, and input)."""

    run: object  # propagation.MlpRun, conv.ConvRun or transformer.TransformerRun
    inputs: int
    spectrum: bool

    @property
    def steps(self) -> int:
        return self.inputs * self.run.depth

    @property
    def params(self) -> dict:
        return {**self.run.params, "inputs": self.inputs, "spectrum": self.spectrum}


def check_inputs(inputs: int | None, batch: int, default: int = DEFAULT_INPUTS) -> int:
    """The inputs the spectrum is averaged over: `default` (at most `batch`) when None, else a
    positive integer no larger than `batch` (the Jacobian is taken at the batch's first inputs)."""
    from ..checks import positive_int

    if inputs is None:
        return min(default, batch)
    inputs = positive_int("inputs", inputs)
    if inputs > batch:
        raise InitcliError("inputs", f"must be at most --batch ({batch}), got {inputs}: the Jacobian is taken "
                                     f"at the first --inputs of the batch's inputs")
    return inputs
