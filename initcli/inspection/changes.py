"""A file against the one it started from (`--against`): each tensor's ‖W − W₀‖/‖W₀‖ and
std/std₀ − 1, read one chunk at a time, and the summary line that ranks them."""

from __future__ import annotations

import math
import os

from .readers import open_source
from .records import AGAINST_COLUMNS, Change, InspectResult
from .source import Source
from .tensor_stats import CHUNK


def compare_tensors(current, start) -> Change:
    """‖W − W₀‖/‖W₀‖ and std/std₀ − 1 over every element, in float64, CHUNK at a time (inf
    where W₀ is all zeros and W is not; nan where non-finite values meet)."""
    import numpy as np

    flat, flat0 = current.reshape(-1), start.reshape(-1)
    sums = np.zeros(6)  # Σd², Σw0², Σw, Σw², Σw0, n
    with np.errstate(all="ignore"):
        for i in range(0, flat.size, CHUNK):
            w = np.asarray(flat[i:i + CHUNK], dtype=np.float64)
            w0 = np.asarray(flat0[i:i + CHUNK], dtype=np.float64)
            d = w - w0
            sums += (d @ d, w0 @ w0, w.sum(), w @ w, w0.sum(), w.size)
        n = sums[5]
        var = max(sums[3] / n - (sums[2] / n) ** 2, 0.0)
        var0 = max((sums[1] - sums[4] ** 2 / n) / n, 0.0)
        ratio = math.sqrt(sums[0]) / math.sqrt(sums[1]) if sums[1] > 0 else (0.0 if sums[0] == 0 else math.inf)
        change = math.sqrt(var) / math.sqrt(var0) - 1 if var0 > 0 else (0.0 if var == 0 else math.inf)
    return Change(float(ratio), float(change))


def with_changes(result: InspectResult, path: str | os.PathLike | Source, start: str | os.PathLike) -> InspectResult:
    """`result` (of `inspect(path)`) with each tensor compared with the same tensor of `start`,
    the file it was initialised as: the columns AGAINST_COLUMNS and a summary line."""
    from dataclasses import replace

    changes = []
    owned = not isinstance(path, Source)
    current = open_source(path) if owned else path
    try:
        with open_source(start) as origin:
            shapes = {e.name: e.shape for e in origin.entries}
            mine = {e.name: e for e in current.entries}
            for t in result.tensors:
                entry = mine.get(t.name)
                usable = entry is not None and shapes.get(t.name) == entry.shape and t.std is not None \
                    and getattr(entry, "unreadable", None) is None and entry.dtype != "object"
                changes.append(compare_tensors(current.read(t.name), origin.read(t.name)) if usable
                               else Change(None, None))
            missing = sum(1 for name in shapes if name not in mine)
    finally:
        if owned:
            current.close()
    compared = [(t.name, c.delta_norm_ratio) for t, c in zip(result.tensors, changes)
                if c.delta_norm_ratio is not None and math.isfinite(c.delta_norm_ratio)]
    lines = list(result.summary.lines)
    if compared:
        ranked = sorted(compared, key=lambda item: item[1])
        median = ranked[len(ranked) // 2][1]
        top = ranked[-1]
        lines.append(f"against {start}: {len(compared)} tensors compared, median ‖ΔW‖/‖W₀‖ {median:.3g}, largest "
                     f"{top[1]:.3g} ({top[0]})" + (f"; {missing} tensors only in {start}" if missing else ""))
    else:
        lines.append(f"against {start}: no tensor of the same name and shape to compare")
    summary = replace(result.summary, lines=tuple(lines))
    params = result.params | {"against": str(start)}
    return InspectResult(result.tensors, summary, params, result.columns + AGAINST_COLUMNS, tuple(changes))
