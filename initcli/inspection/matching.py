"""Which init explains a tensor: `examine` measures one tensor and reads it in each layout.

Nothing here knows the file format: it sees a name, a shape and a numpy array.

A scheme explains a tensor when its std formula and its distribution family both fit:
- the std: the sample std s of n i.i.d. draws has a relative standard error √((κ+2)/(4n)),
  κ the family's excess kurtosis (delta method on m2);
- the family, by the sample excess kurtosis: uniform −1.2, normal 0, a normal truncated at
  ±2σ ≈ −0.63; its standard error is √(v/n), v from the family's moments by the delta method
  on m4/m2² (24 for a normal, 1.32 for a uniform: a uniform is told apart from few draws);
- the mean: 0 within its standard error s/√n.
Each is accepted within `Z_ACCEPT` standard errors; a handful of extreme values (trunc_normal_'s
±2 clamp, one corrupted weight) are left out of the moments and reported apart. Orthogonal
(W·Wᵀ = c·I on the short side, within the dtype's rounding), zeros, constants, identity and
dirac are recognised exactly.

Speed: one pass over every element (min, max, zeros), the rest on a subsample of SUBSAMPLE
values read in SUBSAMPLE_BLOCKS stratified contiguous blocks; the KS test on KS_SAMPLE of them.
Every reading accepted is listed, joined by `|`, by plausibility: Σz² plus a cost per option a
user had to choose (`PRIOR_PER_OPTION`), the file's most common reading first where accepted.
Every reading is a valid --scheme (`schemes.parse_scheme_spec`).

Roles come from name patterns and shape together (`assign_roles`). Besides the named schemes
and conventions, a file's own conventions are read from it (`infer_conventions`): a std shared
by many tensors that no fan formula gives, a gain no table has shared by matrices of several
shapes, a std falling with the block index as a power law, a round std chosen by hand.

The parts, one module each: `roles` (names and shapes), `tensor_stats` (the statistics),
`families` (distribution families, the KS test), `structure` (orthogonal, identity, dirac),
`candidates` (the readings tried) and `conventions` (the file's own); this module weighs the
candidates against the statistics. Their names stay importable from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..schemes import (  # noqa: F401  (re-exported: importable from here, as before)
    TRUNC_NORMAL_HIGH,
    TRUNCATED_NORMAL_STD,
    TRUNCATION_BOUND,
    gpt2_residual_std,
    make_init,
)
from .candidates import (  # noqa: F401  (re-exported: defined here before)
    GAINS,
    GPT2_STD,
    KERAS_EMBEDDING_LIMIT,
    PRIOR_PER_OPTION,
    SLOPES,
    Candidate,
    centred,
    fixed_candidates,
    recurrent_candidates,
    scaling_candidates,
    scheme_spec,
)
from .conventions import MIN_SHARED, convention_candidate, infer_conventions  # noqa: F401  (as before)
from .families import FAMILIES, FAMILY_MOMENTS, Z_ACCEPT, family_cdf, ks_p_value  # noqa: F401  (as before)
from .roles import (  # noqa: F401  (re-exported: defined here before)
    BRANCH_ENDS,
    CONV1D_MODEL_TYPES,
    ROLES,
    WEIGHT_ROLES,
    assign_roles,
    bias_fan_in,
    conv1d_layout,
    infer_n_layer,
    is_branch_end,
    is_float_dtype,
    reading_fans,
    recurrent_hidden,
    set_by_formula,
    torch_shape,
)
from .structure import (  # noqa: F401  (re-exported: defined here before)
    ORTHOGONAL_CHUNK,
    ORTHOGONAL_FALSE_PASS,
    ORTHOGONAL_FLOPS,
    as_matrix,
    dtype_eps,
    exact_structure,
    orthogonal_gain,
    rounding_rms,
)
from .tensor_stats import (  # noqa: F401  (re-exported: defined here before)
    CHUNK,
    KS_SAMPLE,
    MIN_ELEMENTS,
    OUTLIER_Z,
    PASS_CHUNK,
    SUBSAMPLE,
    SUBSAMPLE_BLOCKS,
    Stats,
    measure,
    outlier_threshold,
    subsample,
)

_rounding_rms = rounding_rms  # its name here before structure.py (tests read it)


@dataclass(frozen=True)
class Reading:
    """What one layout reading of a tensor says: every accepted candidate, best first."""

    layout: str
    fan_in: int | None
    fan_out: int | None
    matches: tuple[str, ...] = ()
    expected_std: float | None = None
    p_value: float | None = None
    score: float = math.inf  # the best candidate's Σz² (inf: nothing explains it)
    family: str = ""  # the best candidate's family
    nearest: str = ""
    nearest_ratio: float | None = None
    notes: tuple[str, ...] = ()
    exact: bool = False  # orthogonal, identity, dirac: an exact structure, no p-value


@dataclass
class Evidence:
    """Everything the matcher found for one tensor, before the file-level choices."""

    name: str
    role: str
    shape: tuple[int, ...]
    dtype: str
    stats: Stats | None
    readings: dict = field(default_factory=dict)  # layout -> Reading
    notes: list = field(default_factory=list)
    constant: float | None = None  # every element equals this (zeros included)
    dead: dict = field(default_factory=dict)  # layout -> output units whose weights are all zero
    abstained: str = ""  # why no scheme was tried (too few elements)


def _z_scores(stats: Stats, candidate: Candidate) -> tuple[float, float, float]:
    kurtosis, kurtosis_var = FAMILY_MOMENTS[candidate.family]
    n = stats.used
    rel_se = math.sqrt((kurtosis + 2) / (4 * n))
    z_std = (stats.std / candidate.expected_std - 1) / rel_se
    z_kurt = (stats.kurtosis - kurtosis) / math.sqrt(kurtosis_var / n)
    z_mean = (stats.mean - candidate.mean) / (candidate.expected_std / math.sqrt(n))
    return z_std, z_kurt, z_mean


def match_candidates(stats: Stats, sample: np.ndarray, candidates: list[Candidate], layout: str,
                     fans: tuple[int | None, int | None], favoured: tuple[str, ...] = ()) -> Reading:
    """Every candidate the statistics accept, by plausibility; `favoured` readings (the file's
    own most common reading, where this tensor accepts it too) first."""
    scored = []
    nearest, nearest_ratio, nearest_z = "", None, math.inf
    for candidate in candidates:
        if not candidate.expected_std > 0:
            continue
        z_std, z_kurt, z_mean = _z_scores(stats, candidate)
        if abs(z_std) < nearest_z and abs(z_kurt) <= Z_ACCEPT:
            nearest, nearest_ratio, nearest_z = candidate.name, stats.std / candidate.expected_std, abs(z_std)
        if max(abs(z_std), abs(z_kurt), abs(z_mean)) <= Z_ACCEPT:
            scored.append((z_std * z_std + z_kurt * z_kurt + z_mean * z_mean, candidate))
    if nearest_ratio is None:  # no family fits: the nearest std alone
        for candidate in candidates:
            if candidate.expected_std > 0:
                ratio = stats.std / candidate.expected_std
                if nearest_ratio is None or abs(math.log(ratio)) < abs(math.log(nearest_ratio)):
                    nearest, nearest_ratio = candidate.name, ratio
    if not scored:
        return Reading(layout, *fans, nearest=nearest, nearest_ratio=nearest_ratio)
    # by plausibility: the fit plus a cost per option chosen (exact ties, the same std, e.g. Xavier
    # and LeCun on a square matrix: the plainest name first)
    scored.sort(key=lambda item: (item[1].name not in favoured, item[0] + PRIOR_PER_OPTION * item[1].cost,
                                  item[1].cost))
    names = tuple(dict.fromkeys(c.name for _, c in scored))
    best = scored[0][1]
    p = ks_p_value(sample - best.mean, family_cdf(best.family, best.expected_std))
    notes = (best.note,) if best.note else ()
    return Reading(layout, *fans, matches=names, expected_std=best.expected_std, p_value=p, score=scored[0][0],
                   family=best.family, nearest=best.name, nearest_ratio=stats.std / best.expected_std, notes=notes)


def _units(shape: tuple[int, ...], layout: str) -> int:
    return max(1, shape[0] if layout == "torch" else shape[-1])


def dead_units(array: np.ndarray, layout: str) -> int:
    """Output units (rows of an (out, in) matrix, filters of a conv) whose weights are all zero."""
    if array.ndim < 2:
        return 0
    units = array.shape[0 if layout == "torch" else -1]
    # a block of rows at a time: a memory-mapped or bf16 (readers.Widened) tensor is never copied whole
    rows = array.reshape(units, -1) if layout == "torch" else array.reshape(-1, units)
    step = max(1, CHUNK // max(rows.shape[1], 1))
    alive = np.zeros(units, bool)
    for start in range(0, rows.shape[0], step):
        nonzero = np.asarray(rows[start:start + step]) != 0
        if layout == "torch":
            alive[start:start + step] = nonzero.any(axis=1)
        else:
            alive |= nonzero.any(axis=0)
    return int(units - np.count_nonzero(alive))


def examine(name: str, role: str, array: np.ndarray, dtype: str, *, layouts: tuple[str, ...],
            n_layer: int | None, bias_fan: dict, extra: tuple[Candidate, ...] = (),
            hidden: int | None = None, favoured: tuple[str, ...] = ()) -> Evidence:
    """Measure one tensor and read it in each layout of `layouts` (bias_fan: layout -> the
    fan_in of the weight a bias belongs to; extra: the file's own conventions; hidden: the
    hidden_size of the recurrent layer it belongs to)."""
    shape = tuple(int(d) for d in array.shape)
    evidence = Evidence(name, role, shape, dtype, None)
    if array.dtype.kind not in "f" or role == "other" and not is_float_dtype(dtype):
        kind = {"b": "bool", "i": "integer", "u": "integer", "c": "complex"}.get(array.dtype.kind, str(array.dtype))
        evidence.role = "other"
        evidence.notes.append(f"{kind} tensor ({array.dtype}): not a weight, not matched")
        return evidence
    if array.size == 0:
        evidence.notes.append("empty tensor")
        return evidence
    stats, sample = measure(array, name)
    evidence.stats = stats
    if stats.used + stats.trimmed < stats.n - stats.nonfinite:
        evidence.notes.append(f"statistics on a subsample of {stats.used + stats.trimmed:,} of {stats.n:,} elements")
    if not stats.finite:
        evidence.notes.append(f"{stats.nonfinite:,} NaN/inf values (statistics on the finite ones)")
    if stats.clamped:
        evidence.notes.append(f"{stats.clamped} value{'s' if stats.clamped > 1 else ''} at exactly ±2: torch's "
                              "trunc_normal_ clamp at its default bounds, left out")
    elif stats.trimmed:
        evidence.notes.append(f"{stats.trimmed} extreme value{'s' if stats.trimmed > 1 else ''} left out of the "
                              "moments")
    if stats.used and stats.minimum == stats.maximum:
        evidence.constant = stats.minimum
        return evidence
    if stats.used == 0:
        return evidence
    if role == "bias" and stats.minimum == 0 and stats.maximum == 1 and shape[0] % 4 == 0:
        quarters = np.asarray(array, dtype=np.float64).reshape(4, -1)
        if np.all(quarters == quarters[:, :1]) and list(quarters[:, 0]) == [0, 1, 0, 0]:
            evidence.notes.append("Keras's unit_forget_bias: the forget gate's quarter at 1, the others at 0 (the "
                                  "LSTM starts remembering)")
            evidence.abstained = "set by formula"
            return evidence
    if role in ("embedding", "token", "other") and len(shape) >= 2 and shape[-2] > 1 and stats.finite \
            and max(-stats.minimum, stats.maximum) <= 1:
        first = np.asarray(array.reshape(-1, shape[-1])[0], dtype=np.float64)
        if np.all((first == 0) | (first == 1)) and first.min() == 0 and first.max() == 1:
            # position 0 of a sinusoidal table: sin(0) = 0 and cos(0) = 1 in every frequency
            evidence.notes.append("a sinusoidal position table (sin and cos of the position), set by formula")
            evidence.abstained = "set by formula"
            return evidence
    if role == "other" and set_by_formula(name):
        evidence.notes.append(set_by_formula(name))
        evidence.abstained = "set by formula"
        return evidence
    if role in WEIGHT_ROLES and stats.zero_frac > 0:
        zeros = round(stats.zero_frac * (stats.n - stats.nonfinite))
        # a dead unit needs all its n/units weights at zero: fewer zeros than that, none is dead
        evidence.dead = {layout: dead_units(array, layout) if zeros >= stats.n // _units(shape, layout) else 0
                         for layout in layouts}
    if 0 < stats.used < MIN_ELEMENTS:
        evidence.notes.append(f"{stats.used} elements: too few to tell a scheme")
        evidence.abstained = "too few elements"
        return evidence
    if role == "recurrent" and len(shape) == 3 and hidden:  # ONNX's (directions, gates·hidden, in): per direction
        shape = shape[1:]
        array = array.reshape(-1, shape[-1]) if array.shape[0] == 1 else array[0]
    if not is_branch_end(name):
        n_layer = None  # GPT-2's residual std is for the projections that close a residual branch
    for layout in layouts:
        if role in ("linear", "conv", "recurrent"):
            fans = reading_fans(shape, layout)
            reading = _structured(array, stats, role, layout, dtype, fans, shape)
            if reading is None:
                candidates = recurrent_candidates(shape, hidden) if role == "recurrent" else []
                candidates += scaling_candidates(torch_shape(shape, layout)) + centred(fixed_candidates(n_layer, extra))
                reading = match_candidates(stats, sample, candidates, layout, fans, favoured)
        elif role == "embedding":
            candidates = centred(fixed_candidates(n_layer, extra)) + scaling_candidates(shape)
            reading = match_candidates(stats, sample, candidates, "", (None, None), favoured)
        elif role == "bias":
            fan = bias_fan.get(layout)
            candidates = recurrent_candidates(shape, hidden) + fixed_candidates(None, extra)
            if fan and not hidden:  # torch's default bias: U(±1/√fan_in), fan_in of its weight
                candidates.insert(0, Candidate(f"uniform(limit={1 / math.sqrt(fan):.6g})", "uniform",
                                               1 / math.sqrt(3 * fan), f"torch's default bias U(±1/√fan_in), fan_in "
                                               f"{fan}", complexity=0))
            reading = match_candidates(stats, sample, candidates, "", (fan, None))
        else:
            reading = match_candidates(stats, sample, fixed_candidates(None, extra), "", (None, None))
        evidence.readings[layout] = reading
        if role not in ("linear", "conv", "recurrent"):
            break  # the other roles do not depend on the layout
    return evidence


def _structured(array, stats, role, layout, dtype, fans, shape) -> Reading | None:
    found = exact_structure(array, stats, role, layout)
    if found is not None:
        kind, value = found
        label = "" if value == 1 else f"gain={value:g}"
        return Reading(layout, *fans, matches=(scheme_spec(kind if kind == "dirac" else "identity", [label]),), score=0.0,
                       exact=True)
    if stats.zero_frac > 0.5 or not stats.finite:
        return None
    eps = dtype_eps(dtype)
    gain = orthogonal_gain(as_matrix(array, layout), eps)
    if gain is None:
        return None
    # rounding moves c = g² by about E[δ²] ≤ eps²/3 (fp8 e5m2: gain 1 reads 1.002)
    close = max(1e-3, eps * eps)
    label = next((lab for g, lab in GAINS if abs(gain / g - 1) < close), f"gain={gain:.4g}")
    if gain == 1 or abs(gain - 1) < close:
        label = ""
    expected = make_init("orthogonal", gain=gain).expected_std(torch_shape(shape, layout))
    notes = ()
    rows, cols = torch_shape(shape, layout)[:2]
    gates = rows // cols if cols and rows % cols == 0 else 0
    if role == "recurrent" and gates in (3, 4) and abs(gain / math.sqrt(gates) - 1) < close:
        # g stacked orthogonal (H, H) blocks: Wᵀ·W = g·I, i.e. the whole matrix orthogonal with gain √g
        notes = (f"each of the {gates} gates' ({cols}, {cols}) blocks orthogonal (orthogonal_ per gate)",)
    return Reading(layout, *fans, matches=(scheme_spec("orthogonal", [label]),), expected_std=expected, score=0.0,
                   nearest_ratio=stats.std / expected if expected else None, notes=notes, exact=True)
