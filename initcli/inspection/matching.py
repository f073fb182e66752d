"""Which init explains a tensor: roles, layouts, statistics and scheme matching.

Nothing here knows the file format: it sees a name, a shape and a numpy array.

A scheme explains a tensor when its std formula and its distribution family both fit:
- the std: the sample std s of n i.i.d. draws has a relative standard error √((κ+2)/(4n)),
  κ the family's excess kurtosis (delta method on m2);
- the family, by the sample excess kurtosis: uniform −1.2, normal 0, a normal truncated at
  ±2σ ≈ −0.63; its standard error is √(v/n), v from the family's moments by the delta method
  on m4/m2² (24 for a normal, 1.32 for a uniform: a uniform is told apart from few draws);
- the mean: 0 within its standard error s/√n.
Each is accepted within `Z_ACCEPT` standard errors. Orthogonal (W·Wᵀ = c·I on the short side),
zeros, constants, identity and dirac are recognised exactly. Every reading accepted is listed,
best (smallest sum of squared z) first, joined by `|`.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, field

import numpy as np

from ..schemes import TRUNCATED_NORMAL_STD, TRUNCATION_BOUND, make_init

Z_ACCEPT = 4.0  # standard errors within which a reading is accepted (two-sided 6e-5 per test)
SUBSAMPLE = 1 << 20  # statistics on at most this many elements (a deterministic subsample)
MIN_ELEMENTS = 32  # fewer elements than this: too few to tell a std formula or family apart
CHUNK = 1 << 24  # full-tensor passes (finite, min, max, zeros) go this many elements at a time
OUTLIER_Z = 6.0  # |w − mean| beyond this many std is an outlier (raised for large n, below)

# torch.nn.init.calculate_gain's table (linear/sigmoid 1, tanh 5/3, relu √2, selu 3/4) and the
# leaky slopes people use (0.01 is indistinguishable from relu: its std differs by 5e-5, so
# it is left out and reads as a = 0; 0.2 is the GAN default, 0.3 Keras's LeakyReLU default)
GAINS = ((1.0, ""), (5 / 3, "gain=5/3"), (math.sqrt(2), "gain=sqrt2"), (0.75, "gain=3/4"))
SLOPES = (0.0, 0.1, 0.2, 0.3)
FAMILIES = ("uniform", "normal", "truncated-normal")
GPT2_STD = 0.02  # GPT-2 / BERT initializer_range (Radford et al. 2019; Devlin et al. 2019)
KERAS_EMBEDDING_LIMIT = 0.05  # Keras Embedding's default RandomUniform(-0.05, 0.05)
ROLES = ("linear", "conv", "embedding", "norm_scale", "norm_shift", "bias", "other")
_EMBED = re.compile(r"(embed|(^|[._])(wte|wpe|emb|tok_embeddings|word_embeddings|position_embeddings)([._]|$))",
                    re.IGNORECASE)
_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


# -- distribution families ------------------------------------------------------------------------


def _family_moments(family: str) -> tuple[float, float]:
    """(excess kurtosis κ, n·Var(sample excess kurtosis)) of a zero-mean family, from its
    even moments μ2…μ8: Var(m4/m2²) ≈ [(μ8−μ4²)/μ2⁴ − 4μ4(μ6−μ2μ4)/μ2⁵ + 4μ4²(μ4−μ2²)/μ2⁶]/n."""
    if family == "normal":
        mu = {2: 1.0, 4: 3.0, 6: 15.0, 8: 105.0}
    elif family == "uniform":  # U(−1, 1): μ_k = 1/(k+1)
        mu = {k: 1 / (k + 1) for k in (2, 4, 6, 8)}
    else:  # N(0, 1) cut at ±2, by Gauss–Legendre quadrature (exact for these smooth integrands)
        nodes, weights = np.polynomial.legendre.leggauss(64)
        x = TRUNCATION_BOUND * nodes
        density = weights * np.exp(-0.5 * x * x)
        mu = {k: float(density @ x**k / density.sum()) for k in (2, 4, 6, 8)}
    m2, m4, m6, m8 = mu[2], mu[4], mu[6], mu[8]
    kurtosis = m4 / m2**2 - 3
    variance = (m8 - m4**2) / m2**4 - 4 * m4 * (m6 - m2 * m4) / m2**5 + 4 * m4**2 * (m4 - m2**2) / m2**6
    return kurtosis, variance


FAMILY_MOMENTS = {family: _family_moments(family) for family in FAMILIES}


_CDF_GRID = np.linspace(-9.0, 9.0, 1 << 15)
_CDF_TABLE: list = []


def _norm_cdf(x: np.ndarray) -> np.ndarray:
    """Φ by linear interpolation in a table of initcli's norm_cdf: step h = 5.5e-4, error
    ≤ h²/8·max|φ'| ≈ 1e-8, far below any KS statistic a million draws can resolve (1e-3), at
    a fraction of the cost of evaluating erf a million times."""
    if not _CDF_TABLE:
        from ..activations import norm_cdf

        _CDF_TABLE.append(norm_cdf(_CDF_GRID))
    return np.interp(x, _CDF_GRID, _CDF_TABLE[0], left=0.0, right=1.0)


def family_cdf(family: str, std: float):
    """The CDF of a zero-mean member of `family` with this std."""
    if family == "uniform":
        half = math.sqrt(3) * std
        return lambda x: np.clip((x + half) / (2 * half), 0.0, 1.0)
    if family == "normal":
        return lambda x: _norm_cdf(x / std)
    sigma = std / TRUNCATED_NORMAL_STD
    low = float(_norm_cdf(np.array(-TRUNCATION_BOUND)))
    mass = 1 - 2 * low
    return lambda x: np.clip((_norm_cdf(np.clip(x / sigma, -TRUNCATION_BOUND, TRUNCATION_BOUND)) - low) / mass,
                             0.0, 1.0)


def ks_p_value(sorted_sample: np.ndarray, cdf) -> float:
    """Kolmogorov–Smirnov test of a sorted sample against a fully specified CDF: the
    statistic D and its asymptotic p-value with Stephens' (1970) small-n correction,
    p = 2 Σ (−1)^(k−1) exp(−2k²λ²), λ = (√n + 0.12 + 0.11/√n)·D."""
    n = sorted_sample.size
    if n == 0:
        return math.nan
    f = cdf(sorted_sample)
    i = np.arange(1, n + 1)
    d = max(float(np.max(i / n - f)), float(np.max(f - (i - 1) / n)))
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    if lam < 0.2:
        return 1.0
    k = np.arange(1, 101)
    p = 2 * float(np.sum((-1.0) ** (k - 1) * np.exp(-2 * k * k * lam * lam)))
    return min(max(p, 0.0), 1.0)


# -- roles and layouts ------------------------------------------------------------------------------


def _stem(name: str) -> tuple[str, str]:
    head, _, last = name.rpartition(".")
    return head, last


def assign_roles(entries) -> dict[str, str]:
    """role by rank, shape and name: rank ≥ 3 conv; rank 2 embedding (by name) or linear;
    rank 1 `*.weight`/gamma/scale a norm scale, `*.bias` a bias when its `*.weight` has rank ≥ 2
    and a norm shift when it has rank 1; non-float tensors and BatchNorm buffers other."""
    shapes = {e.name: e.shape for e in entries}
    roles = {}
    for e in entries:
        head, last = _stem(e.name)
        rank = len(e.shape)
        floating = _is_float_dtype(e.dtype)
        if not floating or last in _BUFFERS or rank == 0:
            roles[e.name] = "other"
        elif rank >= 3:
            roles[e.name] = "conv"
        elif rank == 2:
            roles[e.name] = "embedding" if _EMBED.search(e.name) else "linear"
        elif last in ("weight", "gamma", "scale", "g"):
            roles[e.name] = "norm_scale"
        elif last in ("bias", "beta", "b"):
            sibling = next((shapes[f"{head}.{w}"] for w in ("weight", "gamma", "kernel", "w")
                            if f"{head}.{w}" in shapes), None) if head else None
            if sibling is not None and len(sibling) == 1 or last == "beta":
                roles[e.name] = "norm_shift"
            else:
                roles[e.name] = "bias"
        else:
            roles[e.name] = "other"
    return roles


def _is_float_dtype(dtype: str) -> bool:
    d = dtype.lower()
    return d.startswith(("float", "bfloat", "f1", "f3", "f6", "bf16", "f8", "half", "double")) and "complex" not in d


def bias_fan_in(name: str, entries_by_name: dict, layout: str) -> int | None:
    """The fan_in of the weight a bias belongs to (torch's default bias is U(±1/√fan_in))."""
    head, _ = _stem(name)
    for w in ("weight", "kernel", "w"):
        shape = entries_by_name.get(f"{head}.{w}")
        if shape is not None and len(shape) >= 2:
            return reading_fans(shape, layout)[0]
    return None


def torch_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """The shape in torch's (out, in, *kernel) layout, for a tensor stored in `layout`."""
    if layout == "torch" or len(shape) < 2:
        return tuple(shape)
    return (shape[-1], shape[-2], *shape[:-2])  # keras: (*kernel, in, out)


def reading_fans(shape: tuple[int, ...], layout: str) -> tuple[int, int]:
    t = torch_shape(shape, layout)
    receptive = math.prod(t[2:])
    return t[1] * receptive, t[0] * receptive


# -- statistics -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    n: int  # elements in the tensor
    used: int  # elements the moments were computed on
    finite: bool
    nonfinite: int
    minimum: float
    maximum: float
    zero_frac: float
    mean: float
    std: float
    kurtosis: float
    max_abs_z: float


def _full_pass(flat: np.ndarray) -> tuple[int, float, float, int]:
    """(non-finite count, min, max, zeros) over every element, CHUNK at a time (float32)."""
    nonfinite, zeros, lo, hi = 0, 0, math.inf, -math.inf
    wide = np.float64 if flat.dtype == np.float64 else np.float32  # float64 beyond float32's range stays
    for start in range(0, flat.size, CHUNK):
        chunk = np.asarray(flat[start:start + CHUNK], dtype=wide)
        bad = ~np.isfinite(chunk)
        count = int(bad.sum())
        if count:
            nonfinite += count
            chunk = chunk[~bad]
        if chunk.size:
            lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
            zeros += chunk.size - int(np.count_nonzero(chunk))
    return nonfinite, lo, hi, zeros


def subsample(flat: np.ndarray, name: str, cap: int | None = None) -> np.ndarray:
    """Every element, or `cap` of them: one at a random offset in each of `cap` equal strides
    (systematic sampling with jitter; seeded by the name, so a rerun gives the same numbers)."""
    cap = SUBSAMPLE if cap is None else cap
    if flat.size <= cap:
        return np.asarray(flat, dtype=np.float64)
    step = flat.size // cap
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    index = np.arange(cap, dtype=np.int64) * step + rng.integers(0, step, cap)
    return np.asarray(flat[index], dtype=np.float64)


def measure(array: np.ndarray, name: str) -> tuple[Stats, np.ndarray]:
    """The tensor's statistics and the (finite, sorted) sample they were computed on."""
    flat = array.reshape(-1)
    nonfinite, lo, hi, zeros = _full_pass(flat)
    sample = subsample(flat, name)
    sample = np.sort(sample[np.isfinite(sample)])
    n = flat.size
    if sample.size == 0:
        return Stats(n, 0, False, nonfinite, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan,
                     math.nan), sample
    # moments in units of a power of two near the largest |w|, exactly rescaled, so that values
    # near float64's limit (or tiny ones) neither overflow nor underflow the fourth powers
    largest = max(abs(lo), abs(hi))
    unit = 2.0 ** math.floor(math.log2(largest)) if 0 < largest < math.inf else 1.0
    with np.errstate(all="ignore"):
        scaled = sample / unit
        mean = float(scaled.mean())
        centred = scaled - mean
        square = centred * centred
        m2 = float(np.mean(square))
        std = math.sqrt(m2)
        if m2 > 0 and math.isfinite(m2):
            m4 = float(np.mean(square * square))
            kurtosis = m4 / m2 / m2 - 3 if math.isfinite(m4) else math.nan
            max_abs_z = max(abs(hi / unit - mean), abs(lo / unit - mean)) / std
        else:
            kurtosis, max_abs_z = math.nan, (0.0 if m2 == 0 else math.nan)
    mean, std = mean * unit, std * unit
    return Stats(n, int(sample.size), nonfinite == 0, nonfinite, lo, hi, zeros / max(n - nonfinite, 1), mean, std,
                 kurtosis, max_abs_z), sample


def outlier_threshold(n: int) -> float:
    """|z| a normal sample of n draws reaches with probability under 1e-3: never below 6."""
    # n·P(|Z| > z) = 1e-3 with the tail ≈ 2φ(z)/z: solve by a few fixed-point steps
    z = 6.0
    for _ in range(20):
        z = math.sqrt(max(2 * math.log(2 * n / (1e-3 * z * math.sqrt(2 * math.pi))), 1.0))
    return max(OUTLIER_Z, z)


# -- exact structure ---------------------------------------------------------------------------------


def _short_side(matrix: np.ndarray, rows: int = 256) -> np.ndarray:
    """Up to `rows` vectors of the short side of a 2-D matrix, as rows of a float64 array."""
    r, c = matrix.shape
    if r <= c:
        return np.asarray(matrix[:rows], dtype=np.float64)
    return np.asarray(matrix[:, :rows], dtype=np.float64).T


def orthogonal_gain(matrix: np.ndarray, eps: float) -> float | None:
    """g when the short side of `matrix` is orthonormal up to g (W·Wᵀ = g²·I), else None.

    A Gaussian matrix's normalised off-diagonal Gram entries are ~1/√L (L the long side); an
    orthogonal one's are rounding, ~eps/√L per stored entry: a tenth of 1/√L separates them,
    and 64·eps covers the QR's own error."""
    long_side = max(matrix.shape)
    if min(matrix.shape) < 2 or long_side > 1 << 20:
        return None
    tol = max(0.1 / math.sqrt(long_side), 64 * eps)
    for rows in (8, 256):  # a few vectors first: a random matrix fails at once
        found = _orthonormal_up_to(_short_side(matrix, rows), tol)
        if found is None:
            return None
    return found


def _orthonormal_up_to(vectors: np.ndarray, tol: float) -> float | None:
    with np.errstate(all="ignore"):  # entries near float64's limit: an inf Gram, not orthogonal
        gram = vectors @ vectors.T
    diag = np.diag(gram)
    c = float(diag.mean())
    if not c > 0 or not math.isfinite(c):
        return None
    off = gram - np.diag(diag)
    if float(np.max(np.abs(diag - c))) / c > tol or float(np.max(np.abs(off))) / c > tol:
        return None
    return math.sqrt(c)


def exact_structure(array: np.ndarray, stats: Stats, role: str, layout: str) -> tuple[str, float] | None:
    """('identity' | 'dirac', value) when the tensor is value·I or value·dirac, else None."""
    shape = array.shape
    zeros = round(stats.zero_frac * stats.n)
    nonzero = stats.n - zeros
    if len(shape) == 2 and nonzero == min(shape) and shape[0] > 1:
        diag = np.diagonal(array)
        if diag.size and np.all(diag == diag[0]) and diag[0] != 0:
            return "identity", float(diag[0])
    if len(shape) >= 3:
        t = shape if layout == "torch" else torch_shape(shape, layout)
        taps = min(t[0], t[1])
        if nonzero == taps:
            centre = tuple(d // 2 for d in t[2:])
            i = np.arange(taps)
            if layout == "torch":
                values = np.asarray(array[(i, i, *centre)])
            else:
                values = np.asarray(array[(*centre, i, i)])
            if values.size and np.all(values == values[0]) and values[0] != 0:
                return "dirac", float(values[0])
    return None


def as_matrix(array: np.ndarray, layout: str) -> np.ndarray:
    """(out, in·kernel) as torch's orthogonal_ flattens it, for a tensor stored in `layout`."""
    if layout == "keras" and array.ndim >= 2:
        array = np.moveaxis(array, -1, 0)
        if array.ndim >= 3:  # (out, *kernel, in) -> (out, in, *kernel)
            array = np.moveaxis(array, -1, 1)
    return array.reshape(array.shape[0], -1)


# -- candidates ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    name: str
    family: str
    expected_std: float
    note: str = ""


def _named(scheme: str, options: list[str]) -> str:
    options = [o for o in options if o]
    return f"{scheme}({','.join(options)})" if options else scheme


_STD_CACHE: dict = {}


def _expected(scheme: str, shape: tuple[int, ...], **options) -> float:
    key = (scheme, shape, tuple(sorted(options.items())))
    if key not in _STD_CACHE:
        _STD_CACHE[key] = make_init(scheme, **options).expected_std(shape)
    return _STD_CACHE[key]


def scaling_candidates(shape: tuple[int, ...]) -> list[Candidate]:
    """Xavier, He, LeCun and torch-default over their modes, gains, slopes and families, for a
    tensor of this torch-layout shape (every std from initcli's scheme library)."""
    out = []
    for family in FAMILIES:
        base = {"uniform": "uniform", "normal": "normal", "truncated-normal": "normal"}[family]
        dist = "distribution=truncated-normal" if family == "truncated-normal" else ""
        for gain, label in GAINS:
            out.append(Candidate(_named(f"xavier-{base}", [dist, label]), family,
                                 _expected(f"xavier-{base}", shape, gain=gain, distribution=family)))
        for mode in ("fan_in", "fan_out"):
            mode_label = "" if mode == "fan_in" else "mode=fan_out"
            for slope in SLOPES:
                options = {"activation": "leaky-relu", "negative_slope": slope} if slope else {}
                out.append(Candidate(_named(f"he-{base}", [mode_label, dist, f"a={slope:g}" if slope else ""]), family,
                                     _expected(f"he-{base}", shape, mode=mode, distribution=family, **options)))
            for gain, label in GAINS:
                if label == "gain=sqrt2":  # lecun·√2 is He
                    continue
                out.append(Candidate(_named(f"lecun-{base}", [mode_label, dist, label]), family,
                                     _expected(f"lecun-{base}", shape, mode=mode, gain=gain, distribution=family)))
    out.append(Candidate("torch-default", "uniform", _expected("torch-default", shape)))
    return out


def fixed_candidates(n_layer: int | None) -> list[Candidate]:
    """The fixed-std conventions: N(0, 0.02) (GPT-2, BERT; timm's trunc_normal_(std=0.02) cuts at
    ±2 absolute, i.e. 100σ, and is the same normal), GPT-2's residual projections
    0.02/√(2·n_layer), N(0, 1) (nn.Embedding) and Keras's embedding U(±0.05)."""
    out = [Candidate("normal(std=0.02)", "normal", _expected("gpt2", (1,)),
                     "GPT-2/BERT N(0, 0.02); timm's trunc_normal_(std=0.02) cuts at ±2 = 100σ: the same normal"),
           Candidate("normal(std=1)", "normal", 1.0, "N(0, 1): nn.Embedding's default"),
           Candidate(f"uniform(limit={KERAS_EMBEDDING_LIMIT:g})", "uniform",
                     _expected("uniform", (1,), limit=KERAS_EMBEDDING_LIMIT), "Keras Embedding's default")]
    if n_layer:
        out.append(Candidate(f"gpt2-residual(n_layer={n_layer})", "normal", GPT2_STD / math.sqrt(2 * n_layer),
                             "GPT-2 residual projection 0.02/√(2·n_layer)"))
    return out


# -- matching ------------------------------------------------------------------------------------------


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


def _z_scores(stats: Stats, candidate: Candidate) -> tuple[float, float, float]:
    kurtosis, kurtosis_var = FAMILY_MOMENTS[candidate.family]
    n = stats.used
    rel_se = math.sqrt((kurtosis + 2) / (4 * n))
    z_std = (stats.std / candidate.expected_std - 1) / rel_se
    z_kurt = (stats.kurtosis - kurtosis) / math.sqrt(kurtosis_var / n)
    z_mean = stats.mean / (candidate.expected_std / math.sqrt(n))
    return z_std, z_kurt, z_mean


def match_candidates(stats: Stats, sample: np.ndarray, candidates: list[Candidate], layout: str,
                     fans: tuple[int | None, int | None]) -> Reading:
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
    # exact ties (the same std, e.g. Xavier and LeCun on a square matrix): the plainest name first
    scored.sort(key=lambda item: (item[0], item[1].name.count("=")))
    names = tuple(dict.fromkeys(c.name for _, c in scored))
    best = scored[0][1]
    p = ks_p_value(sample, family_cdf(best.family, best.expected_std))
    notes = (best.note,) if best.note else ()
    return Reading(layout, *fans, matches=names, expected_std=best.expected_std, p_value=p, score=scored[0][0],
                   nearest=best.name, nearest_ratio=stats.std / best.expected_std, notes=notes)


def _dtype_eps(dtype: str) -> float:
    d = dtype.lower()
    if "bf16" in d or "bfloat" in d:
        return 2.0**-8
    if "f16" in d or "float16" in d or "half" in d:
        return 2.0**-11
    if "f8" in d or "float8" in d:
        return 2.0**-3
    if "64" in d or "double" in d:
        return 2.0**-53
    return 2.0**-24


def examine(name: str, role: str, array: np.ndarray, dtype: str, *, layouts: tuple[str, ...],
            n_layer: int | None, bias_fan: dict) -> Evidence:
    """Measure one tensor and read it in each layout of `layouts` (bias_fan: layout -> the
    fan_in of the weight a bias belongs to)."""
    shape = tuple(int(d) for d in array.shape)
    evidence = Evidence(name, role, shape, dtype, None)
    if array.dtype.kind not in "f" or role == "other" and not _is_float_dtype(dtype):
        kind = {"b": "bool", "i": "integer", "u": "integer", "c": "complex"}.get(array.dtype.kind, str(array.dtype))
        evidence.role = "other"
        evidence.notes.append(f"{kind} tensor ({array.dtype}): not a weight, not matched")
        return evidence
    if array.size == 0:
        evidence.notes.append("empty tensor")
        return evidence
    stats, sample = measure(array, name)
    evidence.stats = stats
    if stats.used < stats.n - stats.nonfinite:
        evidence.notes.append(f"statistics on a subsample of {stats.used:,} of {stats.n:,} elements")
    if not stats.finite:
        evidence.notes.append(f"{stats.nonfinite:,} NaN/inf values (statistics on the finite ones)")
    if stats.used and stats.minimum == stats.maximum:
        evidence.constant = stats.minimum
        return evidence
    if stats.used == 0:
        return evidence
    if 0 < stats.used < MIN_ELEMENTS:
        evidence.notes.append(f"{stats.used} elements: too few to tell a scheme")
        return evidence
    for layout in layouts:
        if role in ("linear", "conv"):
            fans = reading_fans(shape, layout)
            reading = _structured(array, stats, role, layout, dtype, fans, shape)
            if reading is None:
                candidates = scaling_candidates(torch_shape(shape, layout)) + fixed_candidates(n_layer)
                reading = match_candidates(stats, sample, candidates, layout, fans)
        elif role == "embedding":
            candidates = fixed_candidates(n_layer) + scaling_candidates(shape)
            reading = match_candidates(stats, sample, candidates, "", (None, None))
        elif role == "bias":
            fan = bias_fan.get(layout)
            candidates = fixed_candidates(None)
            if fan:  # torch's default bias: U(±1/√fan_in), fan_in of its weight
                candidates.insert(0, Candidate("torch-default", "uniform", 1 / math.sqrt(3 * fan)))
            reading = match_candidates(stats, sample, candidates, "", (fan, None))
        else:
            reading = match_candidates(stats, sample, fixed_candidates(None), "", (None, None))
        evidence.readings[layout] = reading
        if role not in ("linear", "conv"):
            break  # the other roles do not depend on the layout
    return evidence


def _structured(array, stats, role, layout, dtype, fans, shape) -> Reading | None:
    found = exact_structure(array, stats, role, layout)
    if found is not None:
        kind, value = found
        label = "" if value == 1 else f"gain={value:g}"
        return Reading(layout, *fans, matches=(_named(kind if kind == "dirac" else "identity", [label]),), score=0.0,
                       exact=True)
    if stats.zero_frac > 0.5 or not stats.finite:
        return None
    gain = orthogonal_gain(as_matrix(array, layout), _dtype_eps(dtype))
    if gain is None:
        return None
    label = next((lab for g, lab in GAINS if abs(gain / g - 1) < 1e-3), f"gain={gain:.4g}")
    if gain == 1 or abs(gain - 1) < 1e-3:
        label = ""
    expected = make_init("orthogonal", gain=gain).expected_std(torch_shape(shape, layout))
    return Reading(layout, *fans, matches=(_named("orthogonal", [label]),), expected_std=expected, score=0.0,
                   nearest_ratio=stats.std / expected if expected else None, exact=True)


# -- n_layer ---------------------------------------------------------------------------------------------


def infer_n_layer(names) -> int | None:
    """The number of blocks: the most distinct integer components under one prefix
    (transformer.h.0…h.11 -> 12)."""
    blocks: dict[str, set] = {}
    for name in names:
        parts = name.split(".")
        for i, part in enumerate(parts):
            if part.isdigit() and i > 0:
                blocks.setdefault(".".join(parts[:i]), set()).add(int(part))
                break
    if not blocks:
        return None
    best = max(blocks.values(), key=len)
    return len(best) if len(best) >= 2 else None
