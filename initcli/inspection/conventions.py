"""A file's own conventions, read from the tensors no named scheme explained (`infer_conventions`):
a std shared by many tensors that no fan formula gives, a gain no table has shared by matrices
of several shapes, a std falling with the block index as a power law, a round std chosen by
hand. Each becomes a candidate the tensors are read again with."""

from __future__ import annotations

import math

import numpy as np

from ..schemes import make_init
from .candidates import Candidate, scheme_spec
from .families import FAMILY_MOMENTS, Z_ACCEPT
from .roles import reading_fans, torch_shape
from .tensor_stats import MIN_ELEMENTS

MIN_SHARED = 3  # tensors that must share one std before it counts as the file's convention


def _short_number(value: float, tolerance: float) -> float:
    """The number with the fewest significant digits (1 to 6) within `tolerance` of value."""
    if abs(value) <= tolerance:
        return 0.0
    for digits in range(1, 7):
        rounded = float(f"{value:.{digits - 1}e}")
        if abs(rounded - value) <= tolerance:
            return rounded
    return float(f"{value:.6e}")


def _pooled(group) -> tuple[int, float, float, float]:
    """(elements, mean, std, excess kurtosis) pooled over tensors, weighted by elements used."""
    total = sum(e.stats.used for e in group)
    mean = sum(e.stats.used * e.stats.mean for e in group) / total
    var = sum(e.stats.used * (e.stats.std**2 + (e.stats.mean - mean) ** 2) for e in group) / total
    kurt = sum(e.stats.used * e.stats.kurtosis for e in group) / total
    return total, mean, math.sqrt(var), kurt


def _fitting_family(kurtosis: float, n: int) -> str | None:
    fits = {f: abs(kurtosis - k) / math.sqrt(v / n) for f, (k, v) in FAMILY_MOMENTS.items()}
    family = min(fits, key=fits.get)
    if fits["normal"] <= 2:  # few draws tell the families apart poorly: the plain normal unless excluded
        family = "normal"
    return family if fits[family] <= Z_ACCEPT else None


def convention_candidate(n: int, mean: float, std: float, family: str, note: str,
                         known: tuple[float, ...] = (), extremes: tuple[float, float] | None = None) -> Candidate:
    """The scheme spelling of a convention read from the file: normal(std=s), normal with a
    mean, the truncated normal, uniform(limit=L) or uniform(low=a,high=b); each number the
    shortest within a tenth of the pooled standard error (or a known value, e.g. config.json's
    initializer_range, where that fits)."""
    kurtosis = FAMILY_MOMENTS[family][0]
    se = std * math.sqrt((kurtosis + 2) / (4 * n))
    centred = abs(mean) <= Z_ACCEPT * std / math.sqrt(n)
    known_fit = next((k for k in known if abs(k - std) <= 3 * se), None)
    if family == "uniform":
        # a uniform's ends are known to about (high − low)/n from the extremes
        half = math.sqrt(3) * std
        lo, hi = extremes if extremes is not None else (mean - half, mean + half)
        tolerance = 4 * (hi - lo) / n if extremes is not None else math.sqrt(3) * se / 10
        if centred:
            limit = _short_number(max(-lo, hi), tolerance) if known_fit is None else math.sqrt(3) * known_fit
            return Candidate(f"uniform(limit={limit:.6g})", "uniform", limit / math.sqrt(3), note, complexity=0)
        low = _short_number(lo, tolerance)
        high = _short_number(hi, tolerance)
        return Candidate(f"uniform(low={low:.6g},high={high:.6g})", "uniform", (high - low) / math.sqrt(12), note,
                         mean=(low + high) / 2, complexity=0)
    s = known_fit if known_fit is not None else _short_number(std, se / 10)
    options = [] if centred else [f"mean={_short_number(mean, std / math.sqrt(n) / 10):.6g}"]
    options.append(f"std={s:.6g}")
    if family == "truncated-normal":
        options.append("distribution=truncated-normal")
    m = 0.0 if centred else float(options[0].split("=")[1])
    return Candidate(f"normal({','.join(options)})", family, s, note, mean=m, complexity=0)


def _block_index(name: str) -> tuple[str, int] | None:
    """(template, index) for a name with a block index: 'h.3.attn.w' -> ('h.{}.attn.w', 3)."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit() and i > 0:
            return ".".join(parts[:i] + ["{}"] + parts[i + 1:]), int(part)
    return None


def infer_conventions(evidence, known: tuple[float, ...] = ()) -> dict:
    """Conventions read from the file itself, for the tensors no scheme explained: name ->
    candidates to read it again with.

    - a fixed std: at least MIN_SHARED tensors whose stds (and means) agree within their
      standard errors and whose pooled kurtosis fits one family share one convention
      (normal(std=s), s from the file; `known` values, e.g. initializer_range, preferred);
    - a depth-scaled std: the tensors of one name template over ≥ 3 block indices whose std
      falls with the index as a power law s_l = c·(l+1)^p (BEiT's 0.02/√(2(l+1))): each
      gets normal(std=s_l), and the note says the law."""
    loose = [e for e in evidence if e.stats is not None and e.stats.used >= MIN_ELEMENTS and e.constant is None
             and not e.abstained and e.role not in ("norm_scale", "norm_shift") and e.stats.finite
             and not any(r.matches for r in e.readings.values()) and math.isfinite(e.stats.kurtosis)
             and 1e-30 < e.stats.std < 1e30]  # far outside any init: squares would overflow
    found: dict = {}
    for template_group in _depth_groups(loose):
        found.update(template_group)
    # matrices read only with a tabled gain (3/4, 5/3) may follow the file's own gain instead
    tabled = [e for e in evidence if e.role in ("linear", "conv") and e.stats is not None and e.constant is None
              and e.stats.used >= MIN_ELEMENTS and e.readings
              and all(r.matches and not r.exact and all("gain=" in m for m in r.matches) for r in e.readings.values())]
    found.update(_gain_conventions([e for e in loose if e.name not in found] + tabled))
    remaining = sorted((e for e in loose if e.name not in found), key=lambda e: -e.stats.used)
    while remaining:
        seed = remaining[0]
        group = [e for e in remaining if _agree(seed, e)]
        remaining = [e for e in remaining if e not in group]
        if len(group) < MIN_SHARED:
            continue
        n, mean, std, kurt = _pooled(group)
        family = _fitting_family(kurt, n)
        if family is None:
            continue
        note = f"a convention of this file: {len(group)} tensors share this std, which no fan formula gives"
        if any(abs(k - std) <= 3 * std * math.sqrt(0.5 / n) for k in known):
            note = f"config.json's initializer_range; {len(group)} tensors share it"
        extremes = (min(e.stats.minimum for e in group), max(e.stats.maximum for e in group))
        n_min = min(e.stats.n for e in group)
        candidate = convention_candidate(n_min, mean, std, family, note, known, extremes)
        for e in group:
            found[e.name] = (candidate,)
    for e in loose:  # one tensor at a round std (1, 2 or 5 × 10^k): a value someone chose by hand
        if e.name in found:
            continue
        family = _fitting_family(e.stats.kurtosis, e.stats.used)
        if family is None or family == "uniform" or abs(e.stats.mean) > Z_ACCEPT * e.stats.std / math.sqrt(e.stats.used):
            continue
        se = e.stats.std * math.sqrt(0.5 / e.stats.used)
        s = _short_number(e.stats.std, Z_ACCEPT * se)
        if f"{s:.0e}"[0] in "125" and float(f"{s:.0e}") == s:
            found[e.name] = (convention_candidate(e.stats.used, e.stats.mean, s, family,
                                                  f"N(0, {s:g}²): a round std chosen by hand", (s,)),)
    return found


def _agree(a, b) -> bool:
    """Two tensors' stds and means agree within Z_ACCEPT combined standard errors."""
    sa, sb = a.stats, b.stats
    rel = math.sqrt(0.5 / sa.used + 0.5 / sb.used + 0.3 / sa.used + 0.3 / sb.used)  # allows a lighter tail
    if abs(math.log(sa.std / sb.std)) > Z_ACCEPT * rel:
        return False
    se_mean = math.hypot(sa.std / math.sqrt(sa.used), sb.std / math.sqrt(sb.used))
    return abs(sa.mean - sb.mean) <= Z_ACCEPT * se_mean


def _depth_groups(loose):
    by_template: dict = {}
    for e in loose:
        found = _block_index(e.name)
        if found is not None:
            by_template.setdefault(found[0], []).append((found[1], e))
    for template, members in sorted(by_template.items()):
        members.sort(key=lambda item: item[0])
        if len({i for i, _ in members}) < 3 or len({i for i, _ in members}) < len(members):
            continue
        _, _, pooled_std, _ = _pooled([e for _, e in members])
        if all(abs(e.stats.std / pooled_std - 1) <= Z_ACCEPT * math.sqrt(0.5 / e.stats.used) for _, e in members):
            continue  # one std explains every layer: no depth law
        x = np.log(np.array([i + 1 for i, _ in members], dtype=np.float64))
        y = np.log(np.array([e.stats.std for _, e in members]))
        slope, intercept = np.polyfit(x, y, 1)
        # a power that reads as a simple fraction (−1/2, −1/4, −1) is the law's, if it fits
        power = round(float(slope) * 4) / 4
        if power == 0 or abs(power - slope) > 0.1:
            continue
        c = float(np.exp(np.mean(y - power * x)))
        group = {}
        for i, e in members:
            expected = c * (i + 1) ** power
            rel_se = math.sqrt(0.5 / e.stats.used)
            if abs(e.stats.std / expected - 1) > Z_ACCEPT * rel_se:
                group = {}
                break
            family = _fitting_family(e.stats.kurtosis, e.stats.used) or "normal"
            law = f"depth-scaled: std = {c:.4g}·(l+1)^{power:g} over the {len(members)} layers of {template}"
            s = _short_number(expected, expected * rel_se / 10)
            name = f"normal(std={s:.6g}{',distribution=truncated-normal' if family == 'truncated-normal' else ''})"
            if family == "uniform":
                name = f"uniform(limit={_short_number(math.sqrt(3) * expected, expected * rel_se / 10):.6g})"
            group[e.name] = (Candidate(name, family, s if family != "uniform" else
                                       float(name[len("uniform(limit="):-1]) / math.sqrt(3), law, complexity=0),)
        if group:
            yield group


_GAIN_BASES = (("xavier", "fan_avg", ""), ("lecun", "fan_in", ""), ("lecun", "fan_out", "mode=fan_out"))


def _gain_conventions(loose) -> dict:
    """A fan formula with one gain no table has (Funnel's Xavier × 1/√2): at least MIN_SHARED
    matrices of at least two different fans whose std over the formula's gives one gain."""
    matrices = [e for e in loose if e.role in ("linear", "conv") and len(e.shape) >= 2]
    found: dict = {}
    for base, mode, mode_label in _GAIN_BASES:
        rows = []
        for e in matrices:
            if e.name in found:
                continue
            family = _fitting_family(e.stats.kurtosis, e.stats.used)
            if family is None:
                continue
            fan_in, fan_out = reading_fans(e.shape, "torch")
            n = {"fan_avg": (fan_in + fan_out) / 2, "fan_in": fan_in, "fan_out": fan_out}[mode]
            rows.append((e.stats.std * math.sqrt(n), e, family, (fan_in, fan_out)))
        while rows:
            gain, seed, family, _ = max(rows, key=lambda row: row[1].stats.used)
            group = [row for row in rows if row[2] == family and
                     abs(math.log(row[0] / gain)) <= Z_ACCEPT * math.sqrt(0.5 / row[1].stats.used + 0.5 / seed.stats.used)]
            rows = [row for row in rows if row not in group]
            fans = {row[3] for row in group}
            if len(group) < MIN_SHARED or len(fans) < 2:
                continue
            total = sum(row[1].stats.used for row in group)
            pooled = math.sqrt(sum(row[1].stats.used * row[0] ** 2 for row in group) / total)
            g = _short_number(pooled, pooled * math.sqrt(0.5 / total) / 10)
            dist = {"uniform": "uniform", "normal": "normal", "truncated-normal": "normal"}[family]
            options = [mode_label, "distribution=truncated-normal" if family == "truncated-normal" else "",
                       f"gain={g:.6g}"]
            scheme = f"{base}-{dist}"
            name = scheme_spec(scheme, options)
            note = (f"a convention of this file: {len(group)} matrices of {len(fans)} shapes follow {scheme} "
                    f"with gain {g:.4g}")
            for _, e, _, _ in group:
                expected = make_init(scheme, mode=mode, gain=g, distribution=family).expected_std(
                    torch_shape(e.shape, "torch"))
                found[e.name] = (Candidate(name, family, expected, note, complexity=0),)
    return found
