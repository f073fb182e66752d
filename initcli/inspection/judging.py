"""Each tensor's row and verdict, from what the matcher found and what the file as a whole
says (`FileContext`): whether its weights look trained, whose norms add 1, which norms close a
residual block, each role's typical std. A zero or tiny tensor is judged by where it sits: a
head, the end of a residual branch, a layer scale, a norm the model adds 1 to are `ok` with a
note; zero matrices whose units feed later layers are suspicious."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

from .matching import Evidence, Reading
from .records import TensorReport
from .roles import BRANCH_ENDS, WEIGHT_ROLES, is_branch_end, is_head, module_parts, reading_fans
from .tensor_stats import MIN_ELEMENTS, outlier_threshold

P_VALUE_UNUSUAL = 1e-6  # a KS p-value below this: the matched family does not describe the values
FAR_RATIO = 2.0  # a std this far (either way) from the nearest scheme is suspicious, nearer unusual
EMBEDDING_UNIT = 0.5  # an embedding at std above this beside matrices at 0.02-like stds is flagged
SMALL_STD = 0.1
EXPLODING = 100.0  # a trained tensor's std this many times its role's median: exploding


@dataclass(frozen=True)
class FileContext:
    """What the file as a whole says about each row's verdict."""

    trained: bool
    trained_text: str
    adds_one: bool  # the norms compute (1 + w)·x̂ (Gemma): a norm weight at 0 is a unit scale
    last_norms: frozenset  # the last norm of each residual block (zero_init_residual zeroes it)
    typical_std: dict  # role -> median std
    main_reading: str = ""  # the first reading most of the file's weight matrices have


def file_context(evidence, config: dict | None) -> FileContext:
    weights = [e for e in evidence if e.role in WEIGHT_ROLES and e.stats is not None
               and e.stats.used >= MIN_ELEMENTS and e.constant is None and e.stats.finite]
    unmatched = [e for e in weights if not any(r.matches for r in e.readings.values())]
    # trained weights stay within an order of magnitude of their init; absurd stds are not training
    plausible = [e for e in unmatched if any(r.nearest_ratio and 0.1 <= r.nearest_ratio <= 10
                                             for r in e.readings.values())]
    trained = len(weights) >= 2 and 2 * len(plausible) >= len(weights)
    text = ""
    if trained:
        kurtoses = sorted(e.stats.kurtosis for e in unmatched if math.isfinite(e.stats.kurtosis))
        tail = f"; median excess kurtosis {kurtoses[len(kurtoses) // 2]:.2g}" if kurtoses else ""
        text = (f"these weights look trained: {len(unmatched)} of {len(weights)} weight tensors match no init "
                f"scheme{tail}; rows say `trained` unless something is broken (NaN/inf, dead units, exploding norms)")
    norms = [e for e in evidence if e.role == "norm_scale"]
    model_type = str((config or {}).get("model_type", "")).lower()
    adds_one = "gemma" in model_type or (
        len(norms) >= 2 and all(e.constant == 0 for e in norms)
        and not any(e.role == "norm_shift" for e in evidence))
    typical: dict = {}
    for role in WEIGHT_ROLES:
        stds = sorted(e.stats.std for e in weights if e.role == role)
        if stds:
            typical[role] = stds[(len(stds) - 1) // 2]  # the lower median: one exploding tensor of two is seen
    firsts = Counter(r.matches[0] for e in weights for r in e.readings.values() if r.matches)
    main = firsts.most_common(1)[0][0] if firsts else ""
    return FileContext(trained, text, adds_one, frozenset(_last_norms(norms)), typical, main)


def _last_norms(norms) -> set[str]:
    """The norm weights that close a residual branch: under a component named <stem><k> (bn3,
    ln2) whose k is the highest of its siblings holding norms (k ≥ 2), or under a branch's
    output layer (proj, fc2, …: LeViT's LinearNorm(bn_weight_init=0))."""
    import re

    best: dict = {}
    found_under: dict = {}
    last = set()
    for e in norms:
        module = module_parts(e.name)
        if any(part in BRANCH_ENDS for part in module):
            last.add(e.name)
        for i in range(len(module) - 1, -1, -1):  # the innermost <stem><k> only (bn3, not layer4)
            found = re.fullmatch(r"([a-z_]*?)(\d+)", module[i])
            if not found or not found.group(1):
                continue
            key = (".".join(module[:i]), found.group(1))
            k = int(found.group(2))
            best[key] = max(best.get(key, 0), k)
            found_under.setdefault(e.name, []).append((key, k))
            break
    for name, keys in found_under.items():
        if any(k >= 2 and k == best[key] for key, k in keys):
            last.add(name)
    return last


def _zero_note(e: Evidence, c: float, context: FileContext) -> tuple[str, str]:
    """(verdict, note) for a tensor whose every element is c."""
    role, name = e.role, e.name
    if role in WEIGHT_ROLES:
        if context.trained:
            return "suspicious", "all zeros after training: dead" if c == 0 else "a constant after training"
        if c == 0 and is_head(name):
            return "ok", ("zero-initialised head: the model starts at zero output; its gradient (input × error) "
                          "is not zero, so it learns")
        if c == 0 and is_branch_end(name):
            return "ok", "last layer of a residual branch at zero: the block starts as the identity"
        return "suspicious", ("all zeros: never breaks symmetry (its units feed later layers)" if c == 0 else
                              "a constant: every unit computes the same function, symmetry never breaks")
    if role == "norm_scale":
        if c == 1:
            return "ok", ""
        if c == 0 and context.adds_one:
            return "ok", "the norm computes (1 + w)·x̂ (Gemma-style RMSNorm): w = 0 is a unit scale"
        if c == 0 and name in context.last_norms:
            return "ok", "last norm of a residual block at zero (zero_init_residual): the branch starts as identity"
        if context.trained:
            return "trained", f"norm scale at {c:g}"
        return "unusual", f"norm scale at {c:g}, not 1"
    if role == "layer_scale":
        return "ok", f"layer scale γ = {c:g}: each branch starts scaled by {c:g} (near the identity)" \
            if abs(c) < 1 else ""
    if role in ("token", "table") and c == 0:
        return "ok", ("a learned token at zero: the same start for every input" if role == "token" else
                      "a bias table at zero: attention starts without a positional bias")
    if role in ("bias", "norm_shift") and c != 0:
        return ("trained" if context.trained else "unusual"), f"a constant {c:g}, not zero"
    return "ok", ""


def tensor_report(e: Evidence, preferred: str, context: FileContext | None = None) -> TensorReport:
    context = context or FileContext(False, "", False, frozenset(), {})
    s = e.stats
    notes = list(e.notes)
    reading = _choose(e, preferred)
    match, expected, ratio, p_value, verdict = "", None, None, None, "ok"
    broken = False  # NaN/inf, dead units, exploding: suspicious even in a trained file
    off = False  # nothing explains it, or not as drawn: unusual/suspicious fresh, `trained` trained
    layout = reading.layout if reading is not None else ""
    fan_in = fan_out = None
    if e.role in ("linear", "conv", "recurrent"):
        lay = layout or preferred
        fan_in, fan_out = reading_fans(e.shape, lay)
        if reading is not None and reading.fan_in is not None:  # the reading's (per direction for ONNX RNNs)
            fan_in, fan_out = reading.fan_in, reading.fan_out
        layout = lay
    elif e.role == "bias" and reading is not None:
        fan_in = reading.fan_in
    if s is None:  # non-float or empty
        verdict = "ok" if e.role == "other" else "unusual"
    elif e.constant is not None:
        c = e.constant
        match = "zeros" if c == 0 else ("ones" if c == 1 else f"constant(value={c:.6g})")
        verdict, why = _zero_note(e, c, context)
        if why:
            notes.append(why)
        broken = verdict == "suspicious"
    elif e.abstained:
        pass
    elif reading is not None and reading.matches:
        match = "|".join(reading.matches)
        expected, p_value = reading.expected_std, reading.p_value
        ratio = s.std / expected if expected else None
        notes.extend(reading.notes)
        if len(reading.matches) > 1:
            notes.append(f"{len(reading.matches)} readings give this std and family")
        if p_value is not None and p_value < P_VALUE_UNUSUAL:
            verdict, off = "unusual", True
            notes.append(f"KS test rejects {reading.matches[0]} (p = {p_value:.2g}): not drawn from it as is")
        if e.role == "norm_scale" and reading.matches[0] == context.main_reading:
            # HF's EfficientNet, MobileViT…: _init_weights draws BatchNorm weights as it draws the matrices
            notes.append(f"norm scale drawn as the file's matrices are ({reading.matches[0]}): the library's init "
                         "treats norm weights like any weight; the norm starts near zero output")
        elif e.role == "norm_scale":
            verdict, off = "unusual", True
            notes.append("norm scale is not 1")
    elif s.used and reading is not None:
        off = True
        if reading.nearest_ratio is not None:
            ratio = reading.nearest_ratio
            far = ratio > FAR_RATIO or ratio < 1 / FAR_RATIO
            verdict = "suspicious" if far and e.role in WEIGHT_ROLES else "unusual"
            notes.append(f"std {s.std:.4g} matches no scheme; nearest {reading.nearest} (std ratio {ratio:.3g})")
        else:
            verdict = "unusual"
            notes.append("matches no scheme")
    elif s.used and e.role == "norm_scale":
        verdict, off = "unusual", True
        notes.append("norm scale is not 1")
    if s is not None and not s.finite:
        verdict, broken = "suspicious", True
    if s is not None and s.used and e.constant is None and not s.clamped \
            and s.max_abs_z > outlier_threshold(s.n - s.nonfinite) and not (reading is not None and reading.exact):
        if not context.trained:
            verdict = "suspicious"
        off = True
        notes.append(f"outliers: |w − mean| reaches {s.max_abs_z:.3g}σ")
    dead = e.dead.get(layout or preferred, 0) if e.dead else 0
    if dead and e.role in ("linear", "conv", "recurrent"):
        units = "filters" if e.role == "conv" else "rows"
        verdict, broken = "suspicious", True
        notes.append(f"{dead} dead {units}: all-zero weights (their units output a constant)")
    if context.trained and s is not None and s.used and e.role in context.typical_std and e.constant is None:
        typical = context.typical_std[e.role]
        if typical > 0 and s.std > EXPLODING * typical:
            verdict, broken = "suspicious", True
            notes.append(f"exploding: std {s.std:.3g} is {s.std / typical:.3g}× the file's median {e.role} std")
    if context.trained and not broken and (off or verdict in ("unusual", "suspicious")):
        verdict = "trained"
    stat = (lambda v: None if s is None or not s.used or v is None or (isinstance(v, float) and math.isnan(v))
            else v)
    return TensorReport(
        name=e.name, role=e.role, shape=_shape_text(e.shape), layout=layout, fan_in=fan_in, fan_out=fan_out,
        mean=stat(s and s.mean), std=stat(s and s.std), kurtosis=stat(s and s.kurtosis),
        max_abs_z=stat(s and s.max_abs_z), zero_frac=stat(s and s.zero_frac), match=match, expected_std=expected,
        std_ratio=ratio, p_value=p_value, verdict=verdict, note="; ".join(notes))


def file_level_notes(reports: list[TensorReport]) -> list[TensorReport]:
    """An embedding at std ~1 feeding a model whose matrices mostly follow the 0.02 convention
    (GPT-2/BERT): the embedding's init was skipped. Beside torch-default matrices N(0, 1) is
    simply nn.Embedding's default."""
    from dataclasses import replace

    matrices = [r for r in reports if r.role in ("linear", "conv") and r.std]
    fixed = [r for r in matrices if r.match.split("|")[0].startswith(("normal(std=0.02)", "gpt2-residual"))]
    if not matrices or 2 * len(fixed) < len(matrices):
        return reports
    stds = sorted(r.std for r in matrices)
    typical = stds[len(stds) // 2]
    out = []
    for r in reports:
        if r.role == "embedding" and r.match and r.std and r.std > EMBEDDING_UNIT and typical < SMALL_STD \
                and r.verdict == "ok":
            note = f"embedding at std {r.std:.3g} feeds matrices at std ~{typical:.2g}"
            r = replace(r, verdict="suspicious", note="; ".join(filter(None, [r.note, note])))
        out.append(r)
    return out


def _choose(e: Evidence, preferred: str) -> Reading | None:
    if not e.readings:
        return None
    if len(e.readings) == 1:
        return next(iter(e.readings.values()))
    if preferred in e.readings and e.readings[preferred].matches:
        return e.readings[preferred]
    explained = [r for r in e.readings.values() if r.matches]
    if explained:
        return min(explained, key=lambda r: r.score)
    return e.readings.get(preferred) or next(iter(e.readings.values()))


def _shape_text(shape) -> str:
    return "x".join(map(str, shape)) if shape else "scalar"
