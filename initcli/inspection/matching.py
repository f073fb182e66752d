"""Which init explains a tensor: roles, layouts, statistics and scheme matching.

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
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, field

import numpy as np

from ..schemes import TRUNC_NORMAL_HIGH, TRUNCATED_NORMAL_STD, TRUNCATION_BOUND, gpt2_residual_std, make_init

Z_ACCEPT = 4.0  # standard errors within which a reading is accepted (two-sided 6e-5 per test)
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

# torch.nn.init.calculate_gain's table (linear/sigmoid 1, tanh 5/3, relu √2, selu 3/4) and the
# leaky slopes people use (0.01 is indistinguishable from relu: its std differs by 5e-5, so
# it is left out and reads as a = 0; 0.2 is the GAN default, 0.3 Keras's LeakyReLU default)
GAINS = ((1.0, ""), (5 / 3, "gain=5/3"), (math.sqrt(2), "gain=sqrt2"), (0.75, "gain=3/4"))
SLOPES = (0.0, 0.1, 0.2, 0.3)
FAMILIES = ("uniform", "normal", "truncated-normal")
GPT2_STD = 0.02  # GPT-2 / BERT initializer_range (Radford et al. 2019; Devlin et al. 2019)
KERAS_EMBEDDING_LIMIT = 0.05  # Keras Embedding's default RandomUniform(-0.05, 0.05)
ROLES = ("linear", "conv", "embedding", "recurrent", "norm_scale", "norm_shift", "bias", "layer_scale", "token",
         "table", "other")
WEIGHT_ROLES = ("linear", "conv", "embedding", "recurrent")  # matrices whose units feed later layers
# name patterns real checkpoints use (HF transformers, timm, torchvision, Keras)
_EMBED = re.compile(r"(embed|(^|[._])(wte|wpe|emb|shared|tok_embeddings|word_embeddings|position_embeddings)([._]|$))",
                    re.IGNORECASE)
_TOKEN = re.compile(r"(^|[._])(cls_token|dist_token|mask_token|reg_token|register_tokens|pos_embed|pos_embedding|"
                    r"position_embedding|position_embeddings|absolute_pos_embed|query_tokens|latents|codevectors|"
                    r"[a-z_]*_token|[a-z_]*_tokens)$", re.IGNORECASE)
_TABLE = re.compile(r"(relative_position_bias_table|relative_attention_bias|rel_pos|rel_pos_[hw]|position_bias|"
                    r"final_logits_bias|attention_biases)", re.IGNORECASE)
_LAYER_SCALE = re.compile(r"(^|[._])(layer_scale[a-z0-9_]*|ls[0-9]?|gamma_[0-9]|lambda[0-9_]*|ls_gamma)([._]|$)",
                          re.IGNORECASE)
_RECURRENT = re.compile(r"(^|\.)(weight|bias)_(ih|hh|hr)_l[0-9]+(_reverse)?$")
_KERAS_RECURRENT = re.compile(r"recurrent_kernel$")
# HF's Conv1D (GPT-2 family) stores (in, out); these model types use it
CONV1D_MODEL_TYPES = ("gpt2", "openai-gpt", "imagegpt", "decision_transformer", "gpt2-medium")
_CONV1D_NAMES = re.compile(r"(^|\.)(c_attn|c_fc|c_proj|q_attn)\.weight$")
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


def _norm_cdf_scaled(x: np.ndarray, std: float) -> np.ndarray:
    """Φ(x/std), interpolated on the grid scaled by std (the same table, one division fewer per x)."""
    _norm_cdf(np.zeros(1))  # the table, built once
    return np.interp(x, _CDF_GRID * std, _CDF_TABLE[0], left=0.0, right=1.0)


def family_cdf(family: str, std: float):
    """The CDF of a zero-mean member of `family` with this std."""
    if family == "uniform":
        half = math.sqrt(3) * std
        return lambda x: np.clip((x + half) / (2 * half), 0.0, 1.0)
    if family == "normal" and 1e-280 < std < 1e280:  # the grid scaled by std, not every x divided by it
        return lambda x: _norm_cdf_scaled(x, std)
    if family == "normal":  # (a scaled grid would underflow or overflow)
        return lambda x: _norm_cdf(x / std)
    sigma = std / TRUNCATED_NORMAL_STD
    low = float(_norm_cdf(np.array(-TRUNCATION_BOUND)))
    mass = 1 - 2 * low
    return lambda x: np.clip((_norm_cdf(np.clip(x / sigma, -TRUNCATION_BOUND, TRUNCATION_BOUND)) - low) / mass,
                             0.0, 1.0)


_STEPS: dict = {}


def _ecdf_steps(n: int) -> np.ndarray:
    """i/n for i = 1…n, kept for the last size asked (most KS samples are KS_SAMPLE long)."""
    if n not in _STEPS:
        _STEPS.clear()
        _STEPS[n] = np.arange(1, n + 1) / n
    return _STEPS[n]


def ks_p_value(sorted_sample: np.ndarray, cdf) -> float:
    """Kolmogorov–Smirnov test of a sorted sample against a fully specified CDF: the
    statistic D and its asymptotic p-value with Stephens' (1970) small-n correction,
    p = 2 Σ (−1)^(k−1) exp(−2k²λ²), λ = (√n + 0.12 + 0.11/√n)·D."""
    n = sorted_sample.size
    if n == 0:
        return math.nan
    f = np.asarray(cdf(sorted_sample), dtype=np.float64)
    if np.may_share_memory(f, sorted_sample):  # a CDF that hands its input back: never change the caller's
        f = f.copy()
    f -= _ecdf_steps(n)  # F(x_i) − i/n: D⁺ = max(i/n − F), D⁻ = max(F − (i−1)/n) = max(F − i/n) + 1/n
    d = max(-float(f.min()), float(f.max()) + 1 / n)
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


_WEIGHT_NAMES = ("weight", "kernel", "w", "filter", "filters", "in_proj_weight", "q_proj_weight", "k_proj_weight",
                 "v_proj_weight")  # the last four: nn.MultiheadAttention's packed projections
# state-space parameters set by formula, not drawn: Mamba's S4D-real A (log 1…N per channel),
# its Δ bias (softplus⁻¹ of a log-uniform Δ) and its skip D (ones)
_SSM = re.compile(r"(^|\.)(A_log|A|D|dt_bias)$|(^|\.)dt_proj\.bias$")
_NORM_MODULE = re.compile(r"(norm|(^|[._])(ln|bn|gn)[0-9_]*$|layernorm|batchnorm|groupnorm)", re.IGNORECASE)


_WEIGHT_NORM_G = re.compile(r"\.parametrizations\.weight\.original0$|\.weight_g$")
_WEIGHT_NORM_V = re.compile(r"\.parametrizations\.weight\.original1$|\.weight_v$")


def set_by_formula(name: str) -> str | None:
    """Why a parameter is computed rather than drawn, or None."""
    if _SSM.search(name):
        return "a state-space parameter set by formula (Mamba's A = −(1…N), Δ bias, skip D), not drawn"
    if _WEIGHT_NORM_G.search(name):
        return "weight norm's magnitude g = ‖v‖, computed from the direction v at init"
    return None


# the last layer of a residual branch (attention's output projection, the MLP's second layer,
# a bottleneck's last conv): at zero, the block starts as the identity; GPT-2 scales these
BRANCH_ENDS = {"out_proj", "o_proj", "c_proj", "down_proj", "fc2", "proj", "wo", "o", "w2", "w3", "pwconv2",
               "linear_2", "linear2", "post_proj", "conv3", "dense_4h_to_h", "out", "output", "mlp_out"}


def is_branch_end(name: str) -> bool:
    parts = name.split(".")
    module = parts[:-1] if len(parts) > 1 else parts
    leaf = module[-1] if module else ""
    if leaf in BRANCH_ENDS:
        return True
    # HF BERT-style: ...layer.N.output.dense / attention.output.dense
    return leaf == "dense" and len(module) >= 2 and module[-2] == "output"


def _leaf(name: str) -> str:
    return _stem(name)[1].split(":")[0].rpartition("/")[2]  # Keras names: 'lstm/lstm_cell/kernel:0'


def assign_roles(entries, config: dict | None = None) -> dict[str, str]:
    """Each tensor's role, from its name patterns and its shape together (an `Entry.role_hint`
    from the reader, e.g. an ONNX op, wins):
    - recurrent: torch's weight_ih/hh_lN, Keras's recurrent_kernel (their biases: bias);
    - table: relative-position bias tables, T5's relative_attention_bias, final_logits_bias;
    - token: cls/dist/mask/register tokens, position embeddings held as a parameter;
    - layer_scale: layer_scale*, ls1/ls2, lambda_1 (rank 1, or (C,1,1)), and a rank-1 gamma
      without a beta or bias beside it;
    - conv: rank ≥ 3 `*.weight`/`*.kernel`; other rank-≥3 parameters are `other`;
    - rank 2: embedding when the name says so (embed, wte, shared…) and no bias sits beside it
      (a Linear named `*embed*` keeps its fans), bias when the name ends in bias, else linear;
    - rank 1: norm_scale (weight, gamma, scale), norm_shift (a bias beside a rank-1 weight,
      beta) or bias;
    - other: non-float tensors, BatchNorm buffers, state-space parameters set by formula."""
    shapes = {e.name: e.shape for e in entries}
    roles = {}
    for e in entries:
        head, last = _stem(e.name)
        leaf = _leaf(e.name)
        rank = len(e.shape)
        hint = getattr(e, "role_hint", None)
        siblings = {w: shapes.get(f"{head}.{w}") for w in ("weight", "gamma", "kernel", "w", "bias", "beta")} \
            if head else {}
        if not _is_float_dtype(e.dtype) or leaf in _BUFFERS or rank == 0:
            roles[e.name] = "other"
        elif hint in ROLES:
            roles[e.name] = hint
        elif set_by_formula(e.name):
            roles[e.name] = "other"
        elif _WEIGHT_NORM_V.search(e.name):  # weight norm's direction v: the weight as initialised
            roles[e.name] = "conv" if rank >= 3 else ("linear" if rank == 2 else "other")
        elif rank >= 2 and len([d for d in e.shape if d != 1]) <= 1 and leaf in ("weight", "gamma", "scale"):
            roles[e.name] = "layer_scale"  # a broadcast per-channel scale (ConvNeXt-V2's GRN γ), not a conv
        elif _RECURRENT.search(e.name):
            roles[e.name] = "recurrent" if leaf.startswith("weight") else "bias"
        elif _KERAS_RECURRENT.search(leaf):
            roles[e.name] = "recurrent"
        elif _TABLE.search(e.name):
            roles[e.name] = "table"
        elif _TOKEN.search(leaf):
            roles[e.name] = "token"
        elif _is_layer_scale(e.name, e.shape, head, leaf, siblings):
            roles[e.name] = "layer_scale"
        elif rank >= 3:
            roles[e.name] = "conv" if leaf in _WEIGHT_NAMES or not head else "other"
        elif rank == 2:
            if leaf.endswith("bias"):
                roles[e.name] = "bias"
            elif head and leaf not in _WEIGHT_NAMES and not _EMBED.search(leaf):
                roles[e.name] = "other"
            elif _EMBED.search(e.name) and siblings.get("bias") is None and not e.name.startswith("lm_head"):
                roles[e.name] = "embedding"
            else:
                roles[e.name] = "linear"
        elif leaf in ("bias", "beta", "b") or leaf.endswith("_bias"):
            sibling = next((siblings[w] for w in ("weight", "gamma", "kernel", "w") if siblings.get(w) is not None),
                           None)
            roles[e.name] = "norm_shift" if sibling is not None and len(sibling) == 1 or leaf == "beta" else "bias"
        elif leaf in ("weight", "gamma", "scale", "g"):
            roles[e.name] = "norm_scale"
        else:
            roles[e.name] = "other"
    return roles


def _is_layer_scale(name: str, shape, head: str, leaf: str, siblings: dict) -> bool:
    squeezed = [d for d in shape if d != 1]
    if len(squeezed) > 1 or not shape:
        return False
    if _LAYER_SCALE.search(name) and not _NORM_MODULE.search(head.rpartition(".")[2] if head else ""):
        return True
    # timm's ConvNeXt/CaiT `gamma` (C,): a scale with no shift beside it is not a norm
    return leaf == "gamma" and len(shape) == 1 and siblings.get("beta") is None and siblings.get("bias") is None \
        and not _NORM_MODULE.search(head.rpartition(".")[2] if head else "")


def conv1d_layout(name: str, config: dict | None) -> str | None:
    """'keras' for the (in, out) matrices of HF's Conv1D (GPT-2's c_attn, c_fc, c_proj), known
    from config.json's model_type or, without one, from those names; else None."""
    if not _CONV1D_NAMES.search(name):
        return None
    model_type = str((config or {}).get("model_type", "")).lower()
    if config and model_type and model_type not in CONV1D_MODEL_TYPES:
        return None
    return "keras"


def _is_float_dtype(dtype: str) -> bool:
    d = dtype.lower()
    return d.startswith(("float", "bfloat", "f1", "f3", "f6", "bf16", "f8", "half", "double")) and "complex" not in d


def bias_fan_in(name: str, entries_by_name: dict, layout: str) -> int | None:
    """The fan_in of the weight a bias belongs to (torch's default bias is U(±1/√fan_in))."""
    head, last = _stem(name)
    weights = ("weight", "kernel", "w") + ((last.removesuffix("bias") + "weight",) if last.endswith("_bias") else ())
    for w in weights:
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


# -- exact structure ---------------------------------------------------------------------------------


# The orthogonality test. Let V hold s vectors of the short side (length L) and E = G/c − I,
# G = V·Vᵀ, c = mean(diag G) = g². For a Gaussian matrix each off-diagonal of E is ≈ N(0, 1/L)
# and each diagonal ≈ N(0, 2/L): E's root mean square is ≈ 1/√L. For an orthogonal matrix
# rounded to the dtype, entries q(1 + δ) with |δ| ≤ eps (truncation; rounding to nearest is
# half), sd(δ) ≤ eps/√3, and entries of size ~1/√L (Σq⁴ ≈ 3/L):
#   off-diagonal Σ q_i q_j (δ_i + δ_j): sd ≤ √2·eps/√(3L);  diagonal 2Σ q² δ: sd ≤ 2·eps/√L,
# so E's RMS ≤ ρ/√L, ρ = eps·√(2/3 + 4/s); the float32 QR behind orthogonal_ adds ≈ 1.4·2⁻²⁴·√L
# (measured; 4× that is allowed). Measured ρ: bf16 0.002-0.003, fp8 e4m3 0.04 (0.23 once its
# entries fall among its subnormals, L ≳ 2¹²), e5m2 0.075 — the bound holds in each.
# A matrix is orthogonal when RMS(E)·√L ≤ τ = min(4ρ, 0.5): four times the rounding, never
# above half a Gaussian's. A Gaussian passes only if χ²_k/k < τ² (k ≈ s(s+1)/2 independent
# entries): by Chernoff with probability ≤ (τ²·e^(1−τ²))^(k/2); short sides too short for that
# to be under ORTHOGONAL_FALSE_PASS are not tested.
ORTHOGONAL_FALSE_PASS = 1e-6
ORTHOGONAL_FLOPS = 1 << 30  # s²·L bound on the Gram's cost: s ≤ 256 vectors, ≥ 16 where there are
ORTHOGONAL_CHUNK = 1 << 20  # elements of the short side's vectors held at once (8 MiB of float64)


def _gram(matrix: np.ndarray, rows: int) -> np.ndarray:
    """V·Vᵀ of the first `rows` vectors of the short side of a 2-D matrix, in float64, reading
    at most ORTHOGONAL_CHUNK elements at a time along the long side."""
    r, c = matrix.shape
    wide = r <= c
    long_side = c if wide else r
    step = max(1, ORTHOGONAL_CHUNK // rows)
    gram = np.zeros((rows, rows))
    with np.errstate(all="ignore"):  # entries near float64's limit: an inf Gram, not orthogonal
        for start in range(0, long_side, step):
            part = matrix[:rows, start:start + step] if wide else matrix[start:start + step, :rows].T
            part = np.asarray(part, dtype=np.float64)
            gram += part @ part.T
            del part
    return gram


def _rounding_rms(eps: float, rows: int, long_side: int) -> float:
    """ρ: RMS(E)·√L an orthogonal matrix rounded to a dtype of this eps can reach (above)."""
    return eps * math.sqrt(2 / 3 + 4 / rows) + 4 * 1.4 * 2.0**-24 * math.sqrt(long_side)


def orthogonal_gain(matrix: np.ndarray, eps: float) -> float | None:
    """g when the short side of `matrix` is orthonormal up to g (W·Wᵀ = g²·I) within its dtype's
    rounding, else None (see the derivation above ORTHOGONAL_FALSE_PASS)."""
    short, long_side = min(matrix.shape), max(matrix.shape)
    if short < 2:
        return None
    budget = int(math.isqrt(ORTHOGONAL_FLOPS // long_side))
    rows = min(short, 256, max(16, budget))
    tau = min(4 * _rounding_rms(eps, rows, long_side), 0.5)
    k = rows * (rows + 1) // 2
    if (k / 2) * math.log(tau * tau * math.exp(1 - tau * tau)) > math.log(ORTHOGONAL_FALSE_PASS):
        return None  # too few vectors to tell orthogonal from Gaussian at this dtype
    found = None
    for stage in sorted({min(rows, 8), rows}):  # a few vectors first: a random matrix fails at once
        stage_tau = min(4 * _rounding_rms(eps, stage, long_side), 0.5)
        found = _orthonormal_up_to(_gram(matrix, stage), stage_tau / math.sqrt(long_side))
        if found is None:
            return None
    return found


def _orthonormal_up_to(gram: np.ndarray, tol: float) -> float | None:
    """√c when RMS(G/c − I) ≤ tol, c the mean of G's diagonal, else None."""
    c = float(np.diag(gram).mean())
    if not c > 0 or not math.isfinite(c):
        return None
    with np.errstate(all="ignore"):
        error = gram / c
        error[np.diag_indices_from(error)] -= 1
        rms = math.sqrt(float(np.mean(error * error)))
    if not rms <= tol:
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
    """A reading: its name (a valid --scheme), its family, its std; `mean` for the fixed
    conventions that are not centred (U(0, b)); `complexity` the options a user must have
    chosen to get it (None: counted from the name), for ordering readings by plausibility."""

    name: str
    family: str
    expected_std: float
    note: str = ""
    mean: float = 0.0
    complexity: int | None = None

    @property
    def cost(self) -> int:
        if self.complexity is not None:
            return self.complexity
        # every option is a choice; a leaky slope is a choice about the activation too
        return self.name.count("=") + (1 if "a=" in self.name else 0)


# Readings are ordered by Σz² + PRIOR_PER_OPTION · options (an information criterion: each
# option a user had to choose costs as much as a fitted parameter in AIC), so plain He comes
# before He with a leaky slope of 0.1 unless the data clearly prefer the slope.
PRIOR_PER_OPTION = 2.0


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
    # U(±1/√fan_out): torchvision's EfficientNet head (uniform_(-1/√out_features, 1/√out_features))
    out.append(Candidate("torch-default(mode=fan_out)", "uniform", _expected("torch-default", shape, mode="fan_out")))
    return out


def fixed_candidates(n_layer: int | None, extra: tuple[Candidate, ...] = ()) -> list[Candidate]:
    """The fixed-std conventions: N(0, 0.02) (GPT-2, BERT; timm's trunc_normal_(std=0.02) cuts at
    ±2 absolute, i.e. 100σ, and is the same normal), GPT-2's residual projections
    0.02/√(2·n_layer), N(0, 1) (nn.Embedding) and Keras's embedding U(±0.05); `extra`: the
    file's own conventions (config.json's initializer_range, stds shared by many tensors)."""
    out = [Candidate("normal(std=0.02)", "normal", _expected("gpt2", (1,)),
                     "GPT-2/BERT N(0, 0.02); timm's trunc_normal_(std=0.02) cuts at ±2 = 100σ: the same normal",
                     complexity=0),
           Candidate("normal(std=1)", "normal", 1.0, "N(0, 1): nn.Embedding's default", complexity=0),
           Candidate(f"uniform(limit={KERAS_EMBEDDING_LIMIT:g})", "uniform",
                     _expected("uniform", (1,), limit=KERAS_EMBEDDING_LIMIT), "Keras Embedding's default", complexity=1),
           Candidate("uniform(low=0,high=1)", "uniform", 1 / math.sqrt(12), "torch's uniform_() default U(0, 1)",
                     mean=0.5, complexity=1)]
    if n_layer:
        out.append(Candidate(f"gpt2-residual(n_layer={n_layer})", "normal", gpt2_residual_std(n_layer),
                             "GPT-2 residual projection 0.02/√(2·n_layer)", complexity=0))
    known = {c.name for c in out}
    out.extend(c for c in extra if c.name not in known)
    return out


def centred(candidates: list[Candidate]) -> list[Candidate]:
    """The zero-mean ones: a weight matrix's readings (U(0, 1) is for gates and masks)."""
    return [c for c in candidates if c.mean == 0]


def recurrent_candidates(shape: tuple[int, ...], hidden: int | None) -> list[Candidate]:
    """torch's LSTM/GRU/RNN draw every weight (and bias) from U(±1/√hidden_size), whatever
    the fans; written as the uniform scheme that gives it."""
    if not hidden:
        return []
    limit = 1 / math.sqrt(hidden)
    return [Candidate(f"uniform(limit={limit:.6g})", "uniform", limit / math.sqrt(3),
                      f"torch's LSTM/GRU/RNN default U(±1/√hidden_size), hidden_size {hidden}", complexity=0)]


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


def _dtype_eps(dtype: str) -> float:
    d = dtype.lower()
    if "bf16" in d or "bfloat" in d:
        return 2.0**-8
    if "f16" in d or "float16" in d or "half" in d:
        return 2.0**-11
    if "e8m0" in d:  # powers of two only
        return 1.0
    if "e5m2" in d:  # two mantissa bits
        return 2.0**-2
    if "f8" in d or "float8" in d:  # e4m3: three
        return 2.0**-3
    if "64" in d or "double" in d:
        return 2.0**-53
    return 2.0**-24


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


def recurrent_hidden(name: str, shapes: dict) -> int | None:
    """hidden_size of a torch RNN/LSTM/GRU parameter: weight_hh_lN is (gates·hidden, hidden),
    or (gates·hidden, proj_size) beside a weight_hr_lN of (proj_size, hidden)."""
    onnx = re.search(r"^(.*)\.(weight_ih|weight_hh|bias)$", name)
    if onnx and not _RECURRENT.search(name):  # ONNX's LSTM/GRU/RNN: R is (directions, gates·hidden, hidden)
        recurrent = shapes.get(f"{onnx.group(1)}.weight_hh")
        return int(recurrent[2]) if recurrent is not None and len(recurrent) == 3 else None
    if not _RECURRENT.search(name):
        return None
    projection = shapes.get(re.sub(r"(weight|bias)_(ih|hh|hr)_l", "weight_hr_l", name))
    if projection is not None and len(projection) == 2:
        return int(projection[1])
    recurrent = shapes.get(re.sub(r"(weight|bias)_(ih|hh|hr)_l", "weight_hh_l", name))
    return int(recurrent[1]) if recurrent is not None and len(recurrent) == 2 else None


def examine(name: str, role: str, array: np.ndarray, dtype: str, *, layouts: tuple[str, ...],
            n_layer: int | None, bias_fan: dict, extra: tuple[Candidate, ...] = (),
            hidden: int | None = None, favoured: tuple[str, ...] = ()) -> Evidence:
    """Measure one tensor and read it in each layout of `layouts` (bias_fan: layout -> the
    fan_in of the weight a bias belongs to; extra: the file's own conventions; hidden: the
    hidden_size of the recurrent layer it belongs to)."""
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
        return Reading(layout, *fans, matches=(_named(kind if kind == "dirac" else "identity", [label]),), score=0.0,
                       exact=True)
    if stats.zero_frac > 0.5 or not stats.finite:
        return None
    eps = _dtype_eps(dtype)
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
    return Reading(layout, *fans, matches=(_named("orthogonal", [label]),), expected_std=expected, score=0.0,
                   nearest_ratio=stats.std / expected if expected else None, notes=notes, exact=True)


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


# -- the file's own conventions ---------------------------------------------------------------------

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
            name = _named(scheme, options)
            note = (f"a convention of this file: {len(group)} matrices of {len(fans)} shapes follow {scheme} "
                    f"with gain {g:.4g}")
            for _, e, _, _ in group:
                expected = make_init(scheme, mode=mode, gain=g, distribution=family).expected_std(
                    torch_shape(e.shape, "torch"))
                found[e.name] = (Candidate(name, family, expected, note, complexity=0),)
    return found
