"""A tensor's statistics, as the matcher needs them: one pass over every element (non-finite
values, min, max, zeros), then the moments (mean, std, excess kurtosis, the largest |z|) on a
deterministic subsample of at most SUBSAMPLE values read in SUBSAMPLE_BLOCKS stratified
contiguous blocks, and the sorted sample of at most KS_SAMPLE values the KS test runs on. A
handful of extreme values (trunc_normal_'s ±2 clamp, one corrupted weight) are left out of the
moments and reported apart."""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from ..schemes import TRUNC_NORMAL_HIGH

SUBSAMPLE = 1 << 20  # statistics on at most this many elements (a deterministic subsample)
MIN_ELEMENTS = 32  # fewer elements than this: too few to tell a std formula or family apart
SUBSAMPLE_BLOCKS = 1024  # the subsample is this many contiguous blocks, one per stratum (`subsample`)
# The KS test runs on at most KS_SAMPLE of the subsample's values. At the verdict's p = 1e-6 its
# critical statistic is λ/√m, λ = √(ln(2·10⁶)/2) = 2.69; the empirical CDF's sd is ≤ 0.5/√m, so a
# departure D from the matched CDF is caught with probability ≥ 0.999 when √m·D ≥ 2.69 + 3.09·0.5
# = 4.24. The nearest two families (normal and the ±2σ truncated normal at one std) differ by
# D = 0.0167: m = 2¹⁸ catches half that (D ≥ 0.0083); 2¹⁶ would catch only the whole gap.
# (The std and the kurtosis are tested on the whole subsample.)
KS_SAMPLE = 1 << 18
CHUNK = 1 << 24  # passes over a whole tensor elsewhere (--against) go this many elements at a time
PASS_CHUNK = 1 << 18  # `_full_pass` goes this many at a time: 1 MiB of float32, min, max, zeros in cache
OUTLIER_Z = 6.0  # |w − mean| beyond this many std is an outlier (raised for large n, below)


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
    trimmed: int = 0  # extreme values left out of the moments (a handful; see `measure`)
    clamped: int = 0  # values at exactly ±2: torch's trunc_normal_ clamp at its default bounds


def _full_pass(flat: np.ndarray) -> tuple[int, float, float, int]:
    """(non-finite count, min, max, zeros) over every element, PASS_CHUNK at a time (float32).

    min and max alone show a chunk is finite (NaN propagates through them, ±inf is an extreme),
    so isfinite runs only on a chunk holding a non-finite value, and zeros are counted only when
    0 lies between the chunk's extremes (as `chunk == 0`: count_nonzero on an unaligned float
    array, a memory-mapped file's, is 15× slower). Each chunk is dropped before the next is
    read: a bf16 tensor never has two widened chunks alive."""
    nonfinite, zeros, lo, hi = 0, 0, math.inf, -math.inf
    wide = np.float64 if flat.dtype == np.float64 else np.float32  # float64 beyond float32's range stays
    for start in range(0, flat.size, PASS_CHUNK):
        chunk = np.asarray(flat[start:start + PASS_CHUNK], dtype=wide)
        c_lo, c_hi = float(chunk.min()), float(chunk.max())
        if not (math.isfinite(c_lo) and math.isfinite(c_hi)):
            finite = np.isfinite(chunk)
            nonfinite += chunk.size - int(np.count_nonzero(finite))
            chunk = chunk[finite]
            del finite
            c_lo, c_hi = (float(chunk.min()), float(chunk.max())) if chunk.size else (math.inf, -math.inf)
        lo, hi = min(lo, c_lo), max(hi, c_hi)
        if c_lo <= 0 <= c_hi:
            zeros += int(np.count_nonzero(chunk == 0))
        del chunk
    return nonfinite, lo, hi, zeros


def subsample(flat: np.ndarray, name: str, cap: int | None = None, dtype=np.float64) -> np.ndarray:
    """Every element, or `cap` of them (down to a multiple of the blocks) as SUBSAMPLE_BLOCKS
    contiguous blocks of equal length (a block reads as fast as a slice; scattered single
    elements cost 7× more).

    Stratified: the tensor is cut into SUBSAMPLE_BLOCKS strata (sizes differing by at most
    one) and one block starts at a uniform position in each, running on past the stratum's end
    if it must (past the tensor's end it wraps to its start). An element is covered by the
    blocks starting in the `length` positions up to it, each with density 1/stratum: it is
    taken length/S times on average (S its strata's size), alike for every element, so a tensor
    whose rows differ (stacked q/k/v, per-layer scales) is sampled in proportion. Seeded by the
    name: a rerun gives the same numbers. As `dtype` (float64; `measure` asks float32 of a
    tensor no wider, half the memory traffic)."""
    cap = SUBSAMPLE if cap is None else cap
    n = flat.size
    if n <= cap:
        return np.array(flat, dtype=dtype)  # a copy always: `measure` works on it in place
    blocks = min(SUBSAMPLE_BLOCKS, cap)
    length = cap // blocks
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    low = np.arange(blocks, dtype=np.int64) * n // blocks
    size = np.diff(low, append=n)
    starts = low + np.minimum((rng.random(blocks) * size).astype(np.int64), size - 1)
    out = np.empty((blocks, length), dtype)
    inside = starts <= n - length
    if isinstance(flat, np.ndarray):  # every block in one gather, from a view of all windows
        out[inside] = np.lib.stride_tricks.sliding_window_view(flat, length)[starts[inside]]
    else:  # a lazily widened bf16/fp8 tensor: block by block
        for k in np.flatnonzero(inside):
            out[k] = flat[starts[k]:starts[k] + length]
    for k in np.flatnonzero(~inside):  # the last blocks wrap to the tensor's start
        head = int(n - starts[k])
        out[k, :head] = flat[starts[k]:]
        out[k, head:] = flat[:length - head]
    return out.reshape(-1)


def _count_at(flat: np.ndarray, value: float) -> int:
    total = 0
    for i in range(0, flat.size, PASS_CHUNK):
        chunk = np.asarray(flat[i:i + PASS_CHUNK], dtype=np.float32)
        total += int(np.count_nonzero(np.abs(chunk) == value))
        del chunk
    return total


def _extremes(sample: np.ndarray, quartiles: tuple[float, float, float], low: float,
              high: float) -> tuple[np.ndarray | None, int]:
    """The sample's mask of values kept and how many extreme values it drops: those beyond the
    outlier threshold in units of a robust σ (IQR/1.349, the normal's; a uniform's IQR gives
    0.74× its σ, so the cut is further out for it), dropped only when they are at most
    max(4, n/10⁵). A real heavy tail has many more and is left whole (its kurtosis is the
    finding). None: nothing dropped. (low, high: the sample's extremes.)"""
    n = sample.size
    if n < 1000:
        return None, 0
    q1, median, q3 = quartiles
    sigma = (q3 - q1) / 1.349
    if not sigma > 0:
        return None, 0
    reach = outlier_threshold(n) * sigma
    if low >= median - reach and high <= median + reach:
        return None, 0
    keep = np.abs(sample - median) <= reach
    extreme = n - int(np.count_nonzero(keep))
    if 0 < extreme <= max(4, n // 100_000):
        return keep, extreme
    return None, 0


def measure(array: np.ndarray, name: str) -> tuple[Stats, np.ndarray]:
    """The tensor's statistics, and the sorted sample the KS test is run on (every
    k-th value of the subsample the moments are computed on, at most KS_SAMPLE).

    A handful of extreme values do not decide the family: they are left out of the moments
    (`trimmed`) and still reported by max_abs_z. Values at exactly ±2 far out in a small-std
    tensor are torch's trunc_normal_ clamp (its default bounds a = −2, b = 2, reached when the
    erfinv of its float32 uniform hits ±1, about once in 2²⁴ draws): counted as `clamped`.
    The quartiles that set the outlier cut come from the sorted KS sample: at 2¹⁸ draws a
    quartile's standard error is 0.002σ, nothing beside a cut at ≥ 6σ."""
    flat = array.reshape(-1)
    nonfinite, lo, hi, zeros = _full_pass(flat)
    # float32 holds a float32, float16 or bf16 tensor's values exactly; sums are taken in float64
    wide = np.float32 if flat.dtype.itemsize <= 4 else np.float64
    sample = subsample(flat, name, dtype=wide)
    if nonfinite:
        sample = sample[np.isfinite(sample)]
    stride = max(1, -(-sample.size // KS_SAMPLE))
    # every stride-th value of contiguous blocks at random offsets: each element equally likely
    ks_sample = np.sort(sample[::stride])
    m = ks_sample.size
    quartiles = (ks_sample[m // 4], ks_sample[m // 2], ks_sample[(3 * m) // 4]) if m else (0.0, 0.0, 0.0)
    low, high = (float(sample.min()), float(sample.max())) if sample.size else (math.nan, math.nan)
    keep, trimmed = _extremes(sample, quartiles, low, high)
    if keep is not None:
        sample = sample[keep]
        low, high = float(sample.min()), float(sample.max())
        q1, median, q3 = quartiles
        reach = outlier_threshold(keep.size) * (q3 - q1) / 1.349
        ks_sample = ks_sample[np.searchsorted(ks_sample, median - reach, "left"):
                              np.searchsorted(ks_sample, median + reach, "right")]
    clamped = 0
    if sample.size and max(abs(lo), abs(hi)) == TRUNC_NORMAL_HIGH and \
            max(abs(low), abs(high)) < TRUNC_NORMAL_HIGH / 10:
        clamped = _count_at(flat, TRUNC_NORMAL_HIGH)
        if clamped > max(4, flat.size // 100_000):
            clamped = 0
    n = flat.size
    if sample.size == 0:
        return Stats(n, 0, False, nonfinite, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan,
                     math.nan), ks_sample
    # moments in units of a power of two near the largest |w|, exactly rescaled, so that values
    # near float64's limit (or tiny ones) neither overflow nor underflow the fourth powers
    largest = max(abs(lo), abs(hi))
    unit = 2.0 ** math.floor(math.log2(largest)) if 0 < largest < math.inf else 1.0
    used = int(sample.size)
    with np.errstate(all="ignore"):  # in place: the subsample is this function's own (no 8 MiB copies)
        scaled = sample
        scaled /= unit  # (not *= 1/unit: for a subnormal unit, 1/unit overflows)
        mean = float(scaled.mean(dtype=np.float64))
        scaled -= mean
        np.square(scaled, out=scaled)  # the squared deviations
        m2 = float(scaled.mean(dtype=np.float64))
        std = math.sqrt(m2)
        if m2 > 0 and math.isfinite(m2):
            np.square(scaled, out=scaled)  # fourth powers: |w|/unit < 2, so at most 2⁸ (none overflow)
            m4 = float(scaled.mean(dtype=np.float64))
            kurtosis = m4 / m2 / m2 - 3 if math.isfinite(m4) else math.nan
            if clamped:  # the clamp's ±2 is not the distribution's tail: the sample's extremes are
                max_abs_z = max(abs(high / unit - mean), abs(low / unit - mean)) / std
            else:
                max_abs_z = max(abs(hi / unit - mean), abs(lo / unit - mean)) / std
        else:
            kurtosis, max_abs_z = math.nan, (0.0 if m2 == 0 else math.nan)
        del scaled, sample
    mean, std = mean * unit, std * unit
    return Stats(n, used, nonfinite == 0, nonfinite, lo, hi, zeros / max(n - nonfinite, 1), mean, std,
                 kurtosis, max_abs_z, trimmed, clamped), ks_sample


def outlier_threshold(n: int) -> float:
    """|z| a normal sample of n draws reaches with probability under 1e-3: never below 6."""
    # n·P(|Z| > z) = 1e-3 with the tail ≈ 2φ(z)/z: solve by a few fixed-point steps
    z = 6.0
    for _ in range(20):
        z = math.sqrt(max(2 * math.log(2 * n / (1e-3 * z * math.sqrt(2 * math.pi))), 1.0))
    return max(OUTLIER_Z, z)
