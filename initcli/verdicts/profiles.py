"""Profiles for the rules: of a propagate run (compare, sweep: an MLP, conv or transformer) and
of probed modules (probe), with probe's verdict `judge_modules`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from .records import CONTAINERS, JUDGED_ROLES, NAN, Profile, Unit, Verdict, drift_bound, finite
from .rules import judge

# -- profiles of propagate runs (compare, sweep) --------------------------------------------------


def run_widths(params: dict) -> list[int]:
    """The widths a propagate run's signal passes through, input first: an MLP's sizes, a conv
    stack's channels (its positions share one kernel, so they do not average its randomness
    away), a transformer's width per block."""
    from ..engines import of_run

    return of_run(params).widths(params)


def _value(x) -> float:
    return NAN if x is None else x


def propagate_profile(result) -> Profile:
    """The profile of a propagate run (MLP, conv or transformer): an MLP's or conv stack's
    layers, up to a last layer narrower than the one before (a head, as `modules_profile`
    reads one); a transformer's stream rows (one per block, judged) with each block's
    attention and MLP outputs as branches. The run's recorded overflow layer, if any, is where
    it overflowed."""
    from ..engines import of_run

    params = result.params
    engine = of_run(params)
    where = result.forward_overflow_layer or result.backward_overflow_layer
    if where is None:
        columns = ("preact_var", "act_var", "grad_var")
        where = next((row.layer for row in result.per_layer() for name in columns
                      if getattr(row, name) is not None and not math.isfinite(getattr(row, name))), None)
    if engine.unit == "block":  # its rows are each block's sublayers
        units = tuple(_sublayer_unit(row, result.layers) for row in result.layers)
    else:
        layers = result.per_layer()
        sizes = run_widths(params)
        # a last layer narrower than the one before is a head: the gradient below it is
        # fan_out/fan_in of what it is above, a change of shape, not of depth
        head = len(layers) >= 3 and sizes[-1] < sizes[-2]
        units = tuple(Unit(f"layer {row.layer}", "head" if head and i == len(layers) - 1 else "layer", row.act_var,
                           row.grad_var, row.weight_grad_var, row.dead_frac, row.saturated_frac, row.effective_rank)
                      for i, row in enumerate(layers))
    judged_widths = run_widths(params)[:len(units) if any(u.role == "head" for u in units) else None]
    return Profile(units, drift_bound(judged_widths), noun=engine.unit, sample=engine.sample, dtype=params["dtype"],
                   overflow_at=None if where is None else f"layer {where}")


def _sublayer_unit(row, rows) -> Unit:
    block = f"block {row.layer}"
    if row.sublayer == "stream":
        # a block's weights: every matrix of its sublayers (0 only when none gets a gradient)
        grads = [r.weight_grad_var for r in rows if r.layer == row.layer and r.weight_grad_var is not None]
        return Unit(block, "stream", row.act_var, row.grad_var, max(grads) if grads else NAN,
                    effective_rank=row.effective_rank, token_cosine=row.token_cosine)
    name, owner = ((f"{block}'s attention", f"{block}'s attention output") if row.sublayer == "attn"
                   else (f"{block}'s MLP", f"{block}'s MLP"))
    return Unit(name, "branch", row.act_var, row.grad_var, _value(row.weight_grad_var), _value(row.dead_frac),
                _value(row.saturated_frac), row.effective_rank, row.token_cosine, _value(row.attn_max),
                _value(row.attn_entropy), owner=owner)


# -- profiles of probed modules -------------------------------------------------------------------


def _dims(shape: str) -> list[int]:
    return [int(d) for d in shape.split("x")] if shape and shape != "-" else []


def _per_input(shape: str) -> int:
    return math.prod(_dims(shape)[1:]) or 1


def _channels(shape: str, channels_last: bool) -> int:
    dims = _dims(shape)
    if len(dims) < 2:
        return 1
    return dims[-1] if channels_last or len(dims) == 2 else dims[1]


def _weighted(row) -> bool:
    """A module holding a weight matrix or kernel (Linear, Conv, Embedding…), not a norm's scale."""
    return finite(getattr(row, "weight_std", NAN)) and "Norm" not in row.type


def repeated_blocks(rows: Sequence) -> list:
    """The rows of the repeated blocks: containers (modules with measured modules inside, not a
    plain Sequential/ModuleList) of one type whose names differ only by indices (`blocks.3`,
    `layer2.1`, `encoder_layer_7`); the outermost such family, and of those the largest. []
    when no family has two members."""
    names = [row.module for row in rows]
    families: dict[tuple[str, str], list] = {}
    for row in rows:
        if row.type in CONTAINERS or not re.search(r"\d", row.module) or getattr(row, "output_shape", "-") == "-":
            continue
        if not any(other.startswith(row.module + ".") for other in names):
            continue
        families.setdefault((re.sub(r"\d+", "#", row.module), row.type), []).append(row)
    families = {key: members for key, members in families.items() if len(members) >= 2}
    members = {row.module for family in families.values() for row in family}
    outermost = [family for family in families.values()
                 if not any(row.module.startswith(outer + ".") for row in family for outer in members)]
    return max(outermost, key=len) if outermost else []


def _probe_fields(rows: Sequence) -> bool:
    """Whether the rows say themselves what they are (probe's `kind`, `width`, `size`)."""
    return bool(rows) and all(hasattr(row, "kind") for row in rows)


def modules_profile(rows: Sequence, *, channels_last: bool = False, dtype: str = "float32",
                    zero_head: str | None = None) -> Profile:
    """The profile of probed modules (probe's ModuleStats, in execution order).

    Each row's kind ("block", "weighted", "norm", "other"), channels (`width`) and values per
    input (`size`) are read from the row when it has them, else inferred: repeated blocks by
    `repeated_blocks`, weighted modules as those with a weight_std that are not norms, channels
    from the output shape (dim 1, or the last with `channels_last` and for 2-D outputs).

    `zero_head` names a module known to start at zero output (its weights all zero): it and
    what follows it are the head, the rest is judged up to its input, and the reason notes the
    design. With two or more repeated blocks before it, their outputs are the stream, judged;
    rows with a `branch_var` are branches; weighted modules before the first block are the
    stem, after the last block the head. Otherwise the weighted modules, up to the head: the
    2-D outputs after the last conv-like (3-D or more) output, or in an all-2-D stack the last
    module when it is narrower than the one before. Other rows count for dead and saturated
    units only.

    Each unit keeps its grad_var (per entry) and its values per input (`size`): where the
    judged units change shape, the trend reads the gradient both per entry and as its squared
    norm per input (the first judged unit's grad_var × a unit's size / the first's), and only
    a trend both readings show is depth (see `_trend`). Each judged unit's channels are its
    width in the drift bound."""
    measured = [row for row in rows if row.output_shape != "-"]
    told = _probe_fields(measured)

    def width(row) -> int:
        return max(int(row.width), 1) if told else max(_channels(row.output_shape, channels_last), 1)

    def size(row) -> int:
        return max(int(row.size), 1) if told else _per_input(row.output_shape)

    def weighted(row) -> bool:
        return row.kind == "weighted" if told else _weighted(row)

    names = [row.module for row in measured]
    cut = names.index(zero_head) if zero_head in names and names.index(zero_head) > 0 else len(measured)
    body, after = measured[:cut], measured[cut:]
    blocks = ([row for row in body if row.kind == "block"] if told else repeated_blocks(body))
    if len(blocks) < 2:
        blocks = []
    role: dict[int, str] = {id(row): "head" if weighted(row) or row.module == zero_head else "inner"
                            for row in after}
    if blocks:
        block_ids = {id(row) for row in blocks}
        first_inside = next(i for i, row in enumerate(body)
                            if row.module == blocks[0].module or row.module.startswith(blocks[0].module + "."))
        last_block = max(i for i, row in enumerate(body) if id(row) in block_ids)
        for i, row in enumerate(body):
            if id(row) in block_ids:
                role[id(row)] = "stream"
            elif getattr(row, "branch_var", None) is not None:
                role[id(row)] = "branch"
            elif i < first_inside and weighted(row):
                role[id(row)] = "stem"
            elif i > last_block and weighted(row):
                role[id(row)] = "head"
    else:
        layers = [row for row in body if weighted(row)] or body
        head: list = []
        spatial = [i for i, row in enumerate(layers) if len(_dims(row.output_shape)) >= 3]
        if spatial:
            head = layers[spatial[-1] + 1:]
        elif len(layers) >= 3 and width(layers[-1]) < width(layers[-2]):
            head = layers[-1:]
        head_ids = {id(row) for row in head}
        for row in layers:
            role[id(row)] = "head" if id(row) in head_ids else "layer"
        for row in body:
            if getattr(row, "branch_var", None) is not None and id(row) not in role:
                role[id(row)] = "branch"
    judged = [row for row in measured if role.get(id(row)) in JUDGED_ROLES]
    units = []
    for row in measured:
        kind = role.get(id(row), "inner")
        units.append(Unit(row.module, kind, row.act_var, row.grad_var, row.weight_grad_var, row.dead_frac,
                          row.saturated_frac, row.effective_rank, _value(getattr(row, "token_cosine", None)),
                          _value(getattr(row, "attn_max", None)), _value(getattr(row, "attn_entropy", None)),
                          size=size(row)))
    return Profile(tuple(units), drift_bound([0] + [width(row) for row in judged]),
                   noun="block" if blocks else "layer", dtype=dtype, zero_head=zero_head if after else None)


def judge_modules(rows: Sequence, *, channels_last: bool = False, dtype: str = "float32",
                  zero_head: str | None = None) -> Verdict:
    """probe's verdict: `judge(modules_profile(rows, ...))`."""
    return judge(modules_profile(rows, channels_last=channels_last, dtype=dtype, zero_head=zero_head))
