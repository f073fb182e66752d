"""What a probe gives back: one record per module call, the run's verdict, and a comparison of
several --reinit schemes."""

from __future__ import annotations

from dataclasses import dataclass, field

from .verdict import summary_row


@dataclass(frozen=True)
class ModuleStats:
    """What one module call measured. Column names of `initcli probe`, in its order; `kind`,
    `width` and `size` are what the verdict reads, not columns."""

    module: str
    type: str
    output_shape: str
    act_mean: float
    act_var: float
    grad_var: float
    weight_std: float
    weight_grad_var: float
    dead_frac: float
    saturated_frac: float
    effective_rank: float
    input_cosine: float
    channel_mean_sq: float
    channel_var: float
    branch_var: float | None = None  # only on residual-branch rows
    # "weighted" (a weight matrix or kernel), "norm", "block" (a repeated block), or "other"
    kind: str = field(default="other", compare=False)
    width: int = field(default=1, compare=False)  # channels of the output
    size: int = field(default=1, compare=False)  # values per input of the output


PROBE_COLUMNS: tuple[str, ...] = ("module", "type", "output_shape", "act_mean", "act_var", "grad_var", "weight_std",
                                  "weight_grad_var", "dead_frac", "saturated_frac", "effective_rank", "input_cosine",
                                  "channel_mean_sq", "channel_var")
COMPARE_PROBE_COLUMNS = ("scheme", "modules", "first_act_var", "last_act_var", "first_grad_var", "last_grad_var",
                         "grad_ratio", "max_saturated_frac", "max_dead_frac", "min_effective_rank",
                         "last_input_cosine", "verdict", "reason")


@dataclass(frozen=True)
class ProbeResult:
    """A probe run: its parameters, one record per module call, a compare-style verdict, and
    the modules the verdict judged (the repeated blocks, else the weighted modules)."""

    params: dict
    modules: tuple[ModuleStats, ...]
    verdict: str
    reason: str
    judged: tuple[str, ...] = ()

    @property
    def has_branches(self) -> bool:
        return any(m.branch_var is not None for m in self.modules)

    @property
    def columns(self) -> tuple[str, ...]:
        return PROBE_COLUMNS + (("branch_var",) if self.has_branches else ())

    def rows(self) -> list[dict]:
        return [{k: getattr(m, k) for k in self.columns} for m in self.modules]


@dataclass(frozen=True)
class ProbeComparison:
    """`--reinit` with several schemes: one probe per scheme and one summary row each."""

    params: dict
    runs: tuple[ProbeResult, ...]

    def rows(self) -> list[dict]:
        return [summary_row(run) for run in self.runs]

