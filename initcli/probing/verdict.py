"""The verdict on a probe's rows (compare's and sweep's rules, `initcli.verdicts`) and
compare's summary row over the modules it judged."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .records import ModuleStats, ProbeResult

def judge(rows: Sequence[ModuleStats], zero_head: str | None = None,
          dtype: str = "float32") -> tuple[str, str, tuple[str, ...]]:
    """(verdict, reason, names of the modules judged): the one rule set of compare and sweep
    (`initcli.verdicts`) on the probed rows. Every row carries its kind (a repeated block's
    output, a weighted module, a norm), channels and values per input, so the repeated
    blocks' outputs are the judged residual stream, else the weighted modules up to the head;
    `zero_head` names a head that starts at zero output, judged up to its input."""
    from ..verdicts import judge_modules

    verdict = judge_modules(rows, dtype=dtype, zero_head=zero_head)
    units = tuple(verdict.units)
    if not units:
        named = ""
    elif len(units) <= 2:
        named = f"; judged {len(units)} module{'s' if len(units) == 2 else ''}: {', '.join(units)}"
    else:
        named = f"; judged {len(units)} modules: {units[0]} … {units[-1]}"
    return verdict.verdict, verdict.reason + named, units


def summary_row(result: ProbeResult) -> dict:
    """compare's summary columns over the modules the verdict judged (first and last values from
    the first and last judged rows)."""
    from ..verdicts import ratio

    rows = result.modules
    judged = set(result.judged)
    units = [r for r in rows if r.module in judged] or list(rows)

    def extreme(fn, column):
        values = [getattr(r, column) for r in rows if not math.isnan(getattr(r, column))]
        return fn(values) if values else math.nan

    return {"scheme": result.params.get("reinit", "(as built)"), "modules": len(rows),
            "first_act_var": units[0].act_var, "last_act_var": units[-1].act_var,
            "first_grad_var": units[0].grad_var, "last_grad_var": units[-1].grad_var,
            "grad_ratio": ratio(units[0].grad_var, units[-1].grad_var),
            "max_saturated_frac": extreme(max, "saturated_frac"), "max_dead_frac": extreme(max, "dead_frac"),
            "min_effective_rank": extreme(min, "effective_rank"), "last_input_cosine": rows[-1].input_cosine,
            "verdict": result.verdict, "reason": result.reason}

