"""Initialisation schemes: one variance-scaling core and named presets over it.

Var(W) = gain² · scale / n, with n = fan_in, fan_out or (fan_in + fan_out)/2 by mode, drawn
from a normal, a uniform U(-√(3·Var), √(3·Var)) or a normal truncated to ±2σ (as JAX's
`variance_scaling`). Xavier, He, LeCun and PyTorch's nn.Linear default are presets over it;
zeros, ones, constant, normal (with a mean), uniform (symmetric or on [low, high]), torch's
trunc_normal_, sparse_ and dirac_, orthogonal and identity stand beside it.

Shapes are in PyTorch's layout, (out, in, *kernel), and fans are computed as torch.nn.init
computes them, so that for the same arguments the std (or limit) equals torch's; JAX's
in_axis/out_axis/batch_axis choose other axes (defaults 1, 0 and none: torch's layout).

Weights are drawn in float32 whatever the run's dtype (so float32 and float64 runs with one
seed hold the same weights): an init whose weights could exceed float32's range is refused
when it is made, naming the option at fault, rather than overflowing while drawing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .activations import DEFAULT_NEGATIVE_SLOPE, get_activation
from .errors import InitcliError, suggest
from .residual_init import (  # noqa: F401  (importable from here, as before)
    RESIDUAL_INIT_NAMES,
    ResidualInit,
    ResidualPreset,
    get_residual_preset,
    residual_init_table,
    resolve_residual_init,
)

# Standard deviation of a unit normal truncated to (-2, 2): dividing the std by it makes the
# variance after truncation equal the target (as in JAX's variance_scaling).
TRUNCATED_NORMAL_STD = 0.87962566103423978
TRUNCATION_BOUND = 2.0

# The largest float32: every weight is drawn (and rounded) in float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# The largest |z| `gaussian` can return: its radius √(−2 ln(1−u)) with 1 − u ≥ 2⁻⁵³ (float64
# uniforms are multiples of 2⁻⁵³), i.e. √(106 ln 2).
GAUSSIAN_TAIL = math.sqrt(-2 * math.log(2.0**-53))

FAN_MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("normal", "uniform", "truncated-normal")
# torch.nn.init.trunc_normal_'s absolute cut-offs a, b
TRUNC_NORMAL_LOW, TRUNC_NORMAL_HIGH = -2.0, 2.0
DEFAULT_SPARSITY = 0.1  # torch's sparse_ has no default; its documented example uses 0.1
SPARSE_STD = 0.01  # torch.nn.init.sparse_'s default std (Martens 2010)


@dataclass(frozen=True)
class Scheme:
    """A named preset. `kind` says which sampler applies; the rest is its data."""

    name: str
    # "scaling", "fixed" (normal/uniform with --std/--mean or --limit/--low/--high), "zeros",
    # "constant", "trunc-normal", "sparse", "dirac", "orthogonal", "delta-orthogonal",
    # "orthogonal-per-tap",
    # "identity", "lsuv"
    kind: str
    distribution: str = "normal"
    scale: float = 1.0
    mode: str = "fan_in"
    slope_corrected: bool = False  # He: scale / (1 + a²) when the activation is leaky-relu
    aliases: tuple[str, ...] = ()
    formula: str = ""
    designed_for: str = ""
    reference: str = ""
    value: float | None = None  # a constant preset's fixed value (ones: 1); None: --value
    default_std: float = 1.0  # --std when not given


GPT2_INIT_STD = 0.02  # GPT-2's initializer_range
GPT2_DEFAULT_N_LAYER = 12  # GPT-2 small


def gpt2_residual_std(n_layer: int) -> float:
    """GPT-2's residual projections: 0.02/√(2·n_layer) (two residual adds per block)."""
    return GPT2_INIT_STD / math.sqrt(2 * n_layer)


GPT2_RESIDUAL_STD = gpt2_residual_std(GPT2_DEFAULT_N_LAYER)

GLOROT = "Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward neural networks"
HE = "He et al. 2015, Delving Deep into Rectifiers"
LECUN = "LeCun et al. 1998, Efficient BackProp"

SCHEMES: tuple[Scheme, ...] = (
    Scheme("zeros", "zeros", formula="W = 0", aliases=("zero",),
           designed_for="none (never breaks symmetry)", reference="torch.nn.init.zeros_"),
    Scheme("ones", "constant", formula="W = 1", value=1.0,
           designed_for="none (never breaks symmetry)", reference="torch.nn.init.ones_; Keras Ones"),
    Scheme("constant", "constant", formula="W = value (--value, default 0.5)",
           designed_for="none (never breaks symmetry)", reference="torch.nn.init.constant_"),
    Scheme("normal", "fixed", "normal", formula="N(mean, std²): --mean (default 0), --std (default 1)",
           aliases=("standard-normal", "randn"), designed_for="none (ignores the fans)",
           reference="torch.nn.init.normal_"),
    Scheme("uniform", "fixed", "uniform",
           formula="U(-limit, limit) (--limit, default 1), or U(low, high) with --low/--high",
           aliases=("rand",), designed_for="none (ignores the fans)", reference="torch.nn.init.uniform_"),
    Scheme("trunc-normal", "trunc-normal", formula="N(mean, std²) restricted to [low, high] "
           "(--mean 0, --std 1, --low -2, --high 2: absolute bounds, as torch)",
           designed_for="none (ignores the fans); transformers (ViT: std 0.02)",
           reference="torch.nn.init.trunc_normal_"),
    Scheme("sparse", "sparse", formula="N(0, std²) (--std, default 0.01), ⌈sparsity·rows⌉ zeros per column "
           "(--sparsity, default 0.1)", default_std=SPARSE_STD, designed_for="deep nets trained by "
           "Hessian-free optimisation", reference="Martens 2010, Deep learning via Hessian-free optimization; "
           "torch.nn.init.sparse_"),
    Scheme("xavier-normal", "scaling", "normal", 1.0, "fan_avg",
           aliases=("xavier", "glorot", "glorot-normal"),
           formula="std = √(2/(fan_in+fan_out))", designed_for="tanh, sigmoid, linear", reference=GLOROT),
    Scheme("xavier-uniform", "scaling", "uniform", 1.0, "fan_avg", aliases=("glorot-uniform",),
           formula="limit = √(6/(fan_in+fan_out))", designed_for="tanh, sigmoid, linear", reference=GLOROT),
    Scheme("he-normal", "scaling", "normal", 2.0, "fan_in", True,
           aliases=("he", "kaiming", "kaiming-normal"),
           formula="std = √(2/((1+a²)·fan_in))", designed_for="relu, leaky-relu (slope a)", reference=HE),
    Scheme("he-uniform", "scaling", "uniform", 2.0, "fan_in", True, aliases=("kaiming-uniform",),
           formula="limit = √(6/((1+a²)·fan_in))", designed_for="relu, leaky-relu (slope a)", reference=HE),
    Scheme("lecun-normal", "scaling", "normal", 1.0, "fan_in", aliases=("lecun",),
           formula="std = √(1/fan_in)", designed_for="selu, linear", reference=LECUN),
    Scheme("lecun-uniform", "scaling", "uniform", 1.0, "fan_in",
           formula="limit = √(3/fan_in)", designed_for="selu, linear", reference=LECUN),
    Scheme("orthogonal", "orthogonal", formula="Q of QR(N(0,1)), sign-fixed; std = 1/√max(rows, cols)",
           designed_for="linear, tanh (dynamical isometry)",
           reference="Saxe et al. 2013, Exact solutions to the nonlinear dynamics of learning"),
    Scheme("delta-orthogonal", "delta-orthogonal", aliases=("delta",),
           formula="centre tap orthogonal (out×in), every other tap 0; std = 1/√(max(out, in)·∏kernel)",
           designed_for="conv stacks (dynamical isometry)",
           reference="Xiao et al. 2018, Dynamical Isometry and a Mean Field Theory of CNNs"),
    Scheme("orthogonal-per-tap", "orthogonal-per-tap", aliases=("per-tap-orthogonal",),
           formula="every tap an independent orthogonal (out×in) times 1/√∏kernel; std = 1/√(max(out, in)·∏kernel) "
                   "(σ_w² = 1 for C→C, but not isometric); a 2-D shape is one tap: orthogonal",
           designed_for="conv stacks (variance-preserving, random over taps)",
           reference="a variant of delta-orthogonal (Xiao et al. 2018) with every tap orthogonal, as "
                     "orthogonal_ applied per kernel position"),
    Scheme("dirac", "dirac", formula="centre tap of W[g·out/groups + i, i] = 1 for i < min(out/groups, in) "
           "(--groups, default 1), every other entry 0; on a 2-D matrix, eye per group",
           designed_for="conv stacks (preserves the input channels)", reference="torch.nn.init.dirac_"),
    Scheme("identity", "identity", aliases=("eye",), formula="W = I (ones on the diagonal, as torch's eye_)",
           designed_for="linear and residual stacks", reference="Le et al. 2015; torch.nn.init.eye_"),
    Scheme("lsuv", "lsuv", formula="orthogonal, then each layer scaled to unit pre-activation variance on the batch",
           designed_for="any activation (data-driven)",
           reference="Mishkin & Matas 2015, All you need is a good init"),
    Scheme("torch-default", "scaling", "uniform", 1 / 3, "fan_in", aliases=("pytorch", "torch"),
           formula="limit = 1/√fan_in", designed_for="PyTorch nn.Linear's default",
           reference="PyTorch nn.Linear.reset_parameters: kaiming_uniform_(a=√5)"),
    # fixed-std conventions: presets over normal / trunc-normal with their std as default
    Scheme("gpt2", "fixed", "normal", aliases=("bert",), default_std=0.02,
           formula="N(0, 0.02²) (--std to change; GPT-2's residual projections: --std 0.02/√(2·n_layer))",
           designed_for="transformers (GPT-2, BERT: initializer_range 0.02)",
           reference="Radford et al. 2019, Language Models are Unsupervised Multitask Learners; Devlin et al. 2019"),
    Scheme("gpt2-residual", "fixed", "normal", default_std=GPT2_RESIDUAL_STD,
           formula="N(0, (0.02/√(2·n_layer))²): gpt2-residual(n_layer=N); n_layer 12 (GPT-2 small) by default",
           designed_for="the output projections of pre-LN transformer blocks (GPT-2's c_proj)",
           reference="Radford et al. 2019, Language Models are Unsupervised Multitask Learners (section 2.3)"),
    Scheme("timm-trunc-normal", "trunc-normal", aliases=("vit",), default_std=0.02,
           formula="trunc_normal_(std=0.02) with torch's absolute cut-offs ±2, i.e. ±100σ: a plain N(0, 0.02²)",
           designed_for="vision transformers (timm, ViT)",
           reference="timm's trunc_normal_(std=.02); Dosovitskiy et al. 2021, An Image is Worth 16x16 Words"),
)

_BY_NAME = {s.name: s for s in SCHEMES}
_ALIASES = {alias: s.name for s in SCHEMES for alias in s.aliases}
SCHEME_NAMES: tuple[str, ...] = tuple(_BY_NAME)


def get_scheme(name: str) -> Scheme:
    """The preset called `name` or one of its aliases (`xavier`, `kaiming`, `glorot_uniform`…);
    a spelling with options, `NAME(key=value,...)`, names its preset (the options are checked
    here and applied by `make_init`)."""
    if "(" in name or ")" in name:
        name, _ = parse_scheme_spec(name)
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _BY_NAME:
        raise InitcliError(
            "scheme",
            f"unknown scheme '{name}'{suggest(key, list(_BY_NAME) + list(_ALIASES))}; "
            f"choose from {', '.join(SCHEME_NAMES)} (or an alias: {', '.join(_ALIASES)})",
        )
    return _BY_NAME[key]


# NAME(key=value,...): the options a reading of `inspect` prints, so that every reading is a
# valid --scheme. `a` is He's leaky slope (torch's kaiming a); n_layer is gpt2-residual's.
SPEC_KEYS = ("gain", "mode", "distribution", "a", "negative_slope", "value", "std", "limit", "mean", "low", "high",
             "sparsity", "groups", "n_layer")
_SPEC = re.compile(r"^\s*([A-Za-z0-9_\-.]+)\s*\((.*)\)\s*$")
_GAIN_WORDS = {"sqrt2": math.sqrt(2), "sqrt(2)": math.sqrt(2), "√2": math.sqrt(2)}


def _spec_number(key: str, text: str, spec: str) -> float:
    """A number as readings print them: 0.02, 1e-06, 5/3, sqrt2."""
    word = text.strip().lower()
    if word in _GAIN_WORDS:
        return _GAIN_WORDS[word]
    try:
        if "/" in word:
            top, bottom = word.split("/", 1)
            return float(top) / float(bottom)
        return float(word)
    except (ValueError, ZeroDivisionError):
        raise InitcliError("scheme", f"'{spec}': {key}={text} is not a number (such as 0.02, 1e-06, 5/3 or "
                                     "sqrt2)") from None


def parse_scheme_spec(spec: str) -> tuple[str, dict]:
    """'he-normal(mode=fan_out,a=0.1)' -> ('he-normal', {'mode': 'fan_out', 'a': 0.1}):
    `make_init`'s keywords, and `a`, He's leaky slope (torch's kaiming a). A bare name has no
    options."""
    text = str(spec)
    found = _SPEC.match(text)
    if found is None:
        if "(" in text or ")" in text:
            raise InitcliError("scheme", f"'{text}' is not NAME or NAME(key=value,...), e.g. he-normal(mode=fan_out)")
        return text, {}
    name, body = found.group(1), found.group(2).strip()
    options: dict = {}
    for item in (part.strip() for part in body.split(",")) if body else ():
        key, sep, value = item.partition("=")
        key = key.strip().lower().replace("-", "_")
        if not sep or not value.strip():
            raise InitcliError("scheme", f"'{text}': '{item}' is not key=value")
        if key not in SPEC_KEYS:
            raise InitcliError("scheme", f"'{text}': unknown option '{key}'{suggest(key, list(SPEC_KEYS))}; "
                                         f"options are {', '.join(SPEC_KEYS)}")
        value = value.strip()
        if key in ("mode", "distribution"):
            parsed = value
        elif key == "groups" or key == "n_layer":
            if not value.isdecimal() or int(value) < 1 or len(value) > 9:
                raise InitcliError("scheme", f"'{text}': {key} must be a positive integer, got {value}")
            parsed = int(value)
        else:
            parsed = _spec_number(key, value, text)
        if key == "negative_slope":
            key = "a"  # in a scheme's name the slope is He's a, as torch's kaiming_*_(a=…)
        if key in options:
            raise InitcliError("scheme", f"'{text}' gives {key} twice")
        options[key] = parsed
    if "n_layer" in options:
        if name.strip().lower().replace("_", "-") != "gpt2-residual":
            raise InitcliError("scheme", f"'{text}': n_layer is an option of gpt2-residual only")
        if "std" in options:
            raise InitcliError("scheme", f"'{text}': give n_layer or std, not both")
        options["std"] = gpt2_residual_std(options.pop("n_layer"))
    return name, options


def _axes(param: str, axes: int | Sequence[int]) -> tuple[int, ...]:
    """An axis or a sequence of axes as a tuple of ints (bools and non-integers refused)."""
    items = (axes,) if isinstance(axes, (int, np.integer)) else axes
    try:
        items = tuple(items)
    except TypeError:
        raise InitcliError(param, f"must be an axis or a comma list of axes such as 1 or 2,3; got {axes!r}") from None
    if any(isinstance(a, bool) or not isinstance(a, (int, np.integer)) for a in items):
        raise InitcliError(param, f"must be integer axes, got {axes!r}")
    return tuple(int(a) for a in items)


def compute_fans(shape: Sequence[int], *, in_axis: int | Sequence[int] = 1, out_axis: int | Sequence[int] = 0,
                 batch_axis: int | Sequence[int] = ()) -> tuple[int, int]:
    """(fan_in, fan_out) of a tensor in PyTorch's layout (out, in, *kernel).

    The receptive field (product of the kernel dimensions) multiplies both, as in
    torch.nn.init._calculate_fan_in_and_fan_out. Other axes as in JAX's variance_scaling:
    fan_in = ∏ shape[in_axis] · r, fan_out = ∏ shape[out_axis] · r, where r is the product
    of the dimensions in none of in_axis, out_axis and batch_axis (axes may be negative).
    Rank < 2 has no fans and is refused.
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise InitcliError("shape", f"needs at least 2 dimensions (out, in, *kernel) to have fans, got {shape}")
    if any(d <= 0 for d in shape):
        raise InitcliError("shape", f"dimensions must be positive integers, got {shape}")
    rank = len(shape)
    groups = {}
    owner: dict[int, str] = {}
    given = (("in_axis", in_axis), ("out_axis", out_axis), ("batch_axis", batch_axis))
    defaults = {"in_axis": (1,), "out_axis": (0,), "batch_axis": ()}
    for param, axes in given:
        resolved = []
        for axis in _axes(param, axes):
            if not -rank <= axis < rank:
                raise InitcliError(param, f"axis {axis} is out of range for a {rank}-D shape {shape} "
                                          f"(axes run from {-rank} to {rank - 1})")
            axis %= rank
            if axis in owner:
                other = owner[axis]
                # blame the option that was moved from its default (in_axis=0 meets out_axis's 0)
                moved = param if _axes(param, axes) != defaults[param] or \
                    _axes(other, dict(given)[other]) == defaults[other] else other
                raise InitcliError(moved, f"axis {axis} is both an {other.replace('_', ' ')} and a "
                                          f"{param.replace('_', ' ')}; in, out and batch axes must differ")
            owner[axis] = param
            resolved.append(axis)
        groups[param] = resolved
    seen = set(owner)
    if not groups["in_axis"] or not groups["out_axis"]:
        raise InitcliError("in_axis" if not groups["in_axis"] else "out_axis", "needs at least one axis")
    receptive_field = math.prod(d for axis, d in enumerate(shape) if axis not in seen)
    fan_in = math.prod(shape[axis] for axis in groups["in_axis"]) * receptive_field
    fan_out = math.prod(shape[axis] for axis in groups["out_axis"]) * receptive_field
    return fan_in, fan_out


def _canonical(value: str, choices: Sequence[str], param: str) -> str:
    key = value.strip().lower()
    for choice in choices:
        if key in (choice, choice.replace("_", "-"), choice.replace("-", "_")):
            return choice
    raise InitcliError(param, f"unknown value '{value}'{suggest(key, list(choices))}; choose from {', '.join(choices)}")


def check_number(param: str, value: float, *, nonnegative: bool = True) -> float:
    """A finite number (≥ 0 unless `nonnegative` is false), or a one-line InitcliError."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float's range
        raise InitcliError(param, f"must be a finite number, got {str(value)[:40]}") from None
    if not math.isfinite(number) or (nonnegative and number < 0):
        kind = "a finite number ≥ 0" if nonnegative else "a finite number"
        raise InitcliError(param, f"must be {kind}, got {value!r}")
    return number


def check_weight_scale(param: str, value: float, *, tail: float = GAUSSIAN_TAIL) -> float:
    """A std (or scale) whose draws, up to `tail` times it, fit in float32: for --bias-std and
    the like. Refused above FLOAT32_MAX / tail, with the bound in the message."""
    value = check_number(param, value)
    if value * tail > FLOAT32_MAX:
        raise InitcliError(param, f"must be at most {FLOAT32_MAX / tail:.3g}: its draws reach {tail:.3g}× it, "
                                  f"beyond float32's largest value {FLOAT32_MAX:.3g}, in which initcli draws; "
                                  f"got {value:g}")
    return value


def _normal_pdf(w: float, mean: float, std: float, weight: float = 1.0) -> float:
    """weight · N(mean, std²) density at w, without overflow or warnings for tiny stds (a
    density beyond float64's range is inf)."""
    with np.errstate(all="ignore"):
        z = (np.float64(w) - mean) / np.float64(std)
        return float(weight * np.exp(-0.5 * z * z) / (np.float64(std) * math.sqrt(2 * math.pi)))


# Gauss–Legendre nodes for the truncated-normal moments: 8 panels of 24 nodes on [0, 1] are
# exact to float64 rounding for a Gaussian piece spanning at most 2·√80 ≈ 18 std units.
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(24)
_PANELS = 8
_T = ((np.arange(_PANELS)[:, None] + (_GL_NODES[None, :] + 1) / 2) / _PANELS).ravel()
_TW = np.tile(_GL_WEIGHTS / (2 * _PANELS), _PANELS)
_LOG_CUTOFF = 40.0  # e⁻⁴⁰ ≈ 4e-18: density beyond this (relative to the peak) is below float64's eps


@dataclass(frozen=True)
class TruncatedNormal:
    """N(mean, std²) restricted to [low, high] (torch's trunc_normal_), with its moments and
    density computed without cancellation or overflow, even far in a tail.

    m = clip(mean, low, high) is the support's most likely point; κ = (m − mean)/std; in
    units u = (x − m)/std the log-density relative to m is −u(u + 2κ)/2. The support that
    matters ([lo, hi], where that is ≥ −40) is integrated by Gauss–Legendre quadrature."""

    mean: float
    std: float
    low: float
    high: float

    def _span(self) -> tuple[float, float, float, float, float, float]:
        """(m, κ, u0, du, lo, width): the support that matters is u ∈ [u0, u0 + du] in std
        units about m, i.e. x ∈ [lo, lo + width]. The width is taken in x units where both
        cut-offs bound it (a std far above high − low) and in std units otherwise (a tail far
        from the mean, where lo + width would round to lo)."""
        mean, std, low, high = self.mean, self.std, self.low, self.high
        m = min(max(mean, low), high)
        with np.errstate(all="ignore"):
            kappa = float(np.float64(m - mean) / std)
            span = float(np.float64(high - low) / std)  # may be inf: that is fine below
        if not math.isfinite(kappa):
            kappa = math.copysign(1e300, kappa)  # beyond any draw: a point mass at m
        # the largest |u| on the far side of m with −|u|(|u| + 2|κ|)/2 ≥ −40 (stable root)
        reach = 2 * _LOG_CUTOFF / (abs(kappa) + math.sqrt(kappa * kappa + 2 * _LOG_CUTOFF))
        if low <= mean <= high:
            with np.errstate(all="ignore"):
                below, above = float(np.float64(mean - low) / std), float(np.float64(high - mean) / std)
            u0, u1 = -min(below, reach), min(above, reach)
            lo = low if below <= reach else mean + u0 * std
            width = (high - lo) if above <= reach else (mean + u1 * std) - lo
            if below <= reach and above <= reach:
                width = high - low
            elif below > reach and above > reach:
                width = (u1 - u0) * std
        elif mean < low:
            u0, u1 = 0.0, min(span, reach)
            lo, width = low, (high - low) if span <= reach else u1 * std
        else:
            u0, u1 = -min(span, reach), 0.0
            width = (high - low) if span <= reach else -u0 * std
            lo = low if span <= reach else high - width
        return m, kappa, u0, u1 - u0, lo, width

    def _weights(self) -> tuple[float, float, np.ndarray]:
        """(lo, width, normalised quadrature weights at the nodes _T of [lo, lo + width])."""
        m, kappa, u0, du, lo, width = self._span()
        with np.errstate(all="ignore"):
            u = u0 + _T * du
            logp = -0.5 * u * (u + 2 * kappa)
            p = _TW * np.exp(np.where(np.isfinite(logp), logp, -np.inf))
        total = p.sum()
        if not (total > 0 and math.isfinite(total)):
            p = np.zeros_like(_TW)
            p[0] = 1.0  # everything at lo = m
            total = 1.0
        return lo, width, p / total

    def moments(self) -> tuple[float, float]:
        """(mean, std) of the truncated distribution."""
        if self.std == 0:
            return min(max(self.mean, self.low), self.high), 0.0
        lo, width, p = self._weights()
        t_mean = float(p @ _T)
        t_std = math.sqrt(max(float(p @ (_T - t_mean) ** 2), 0.0))
        return lo + width * t_mean, width * t_std

    def density(self) -> Callable[[float], float] | None:
        if self.std == 0:
            return None
        m, kappa, u0, du, _, _ = self._span()
        with np.errstate(all="ignore"):
            u = u0 + _T * du
            mass_u = float(np.sum(_TW * np.exp(-0.5 * u * (u + 2 * kappa)))) * du  # ∫ e^(log p) du
        std, low, high = self.std, self.low, self.high

        def pdf(w: float) -> float:
            if not low <= w <= high:
                return 0.0
            with np.errstate(all="ignore"):
                uu = (np.float64(w) - m) / std
                return float(np.exp(-0.5 * uu * (uu + 2 * kappa)) / (np.float64(std) * mass_u))

        return pdf

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n float64 draws, exactly distributed (up to rounding), in a bounded number of rounds:
        inside the support, normal draws rejected outside it (mass ≥ 0.3) or uniform ones on a
        narrow support; in a tail, uniform draws on a short support or Robert's (1995)
        translated-exponential proposal, each accepting at least ~0.3 of its draws."""
        mean, std, low, high = self.mean, self.std, self.low, self.high
        if std == 0:
            return np.full(n, min(max(mean, low), high))
        if mean > high:  # mirror the right tail onto the left one
            return -TruncatedNormal(-mean, std, -high, -low).sample(n, rng)
        out = np.empty(n)
        pending = np.arange(n)
        with np.errstate(all="ignore"):
            if mean >= low:  # mean inside [low, high]
                alpha, beta = (low - mean) / std, (high - mean) / std
                mass = 0.5 * (math.erf(beta / math.sqrt(2)) - math.erf(alpha / math.sqrt(2)))
                while pending.size:
                    if mass >= 0.3:
                        x = mean + std * rng.standard_normal(pending.size)
                        ok = (x >= low) & (x <= high)
                    else:  # [low, high] is under 0.8 std wide: a uniform proposal accepts ≥ 0.72
                        x = low + (high - low) * rng.random(pending.size)
                        z = (x - mean) / std
                        ok = rng.random(pending.size) < np.exp(-0.5 * z * z)
                    out[pending[ok]] = x[ok]
                    pending = pending[~ok]
            else:  # mean < low: the left end of the support is the mode
                kappa = min((low - mean) / std, 1e300)
                width = (high - low) / std
                uniform = width * (2 * kappa + width) / 2 <= 1  # acceptance ≥ e⁻¹
                rate = (kappa + math.hypot(kappa, 2)) / 2  # Robert's optimal rate
                shift = -2 / (kappa + math.hypot(kappa, 2))  # κ − rate, without cancellation
                while pending.size:
                    if uniform:
                        u = width * rng.random(pending.size)
                        ok = rng.random(pending.size) < np.exp(-0.5 * u * (u + 2 * kappa))
                    else:
                        u = rng.standard_exponential(pending.size) / rate
                        ok = (u <= width) & (rng.random(pending.size) < np.exp(-0.5 * (u + shift) ** 2))
                    out[pending[ok]] = low + std * u[ok]
                    pending = pending[~ok]
        return np.clip(out, low, high)


@dataclass(frozen=True)
class Init:
    """A scheme with every argument resolved: what `sample_weights` draws from.

    `mode` and `distribution` are the effective ones (the preset's unless overridden, and the
    preset's for schemes that do not use them). `gain` multiplies the weights of every
    scheme, i.e. the std (scale = gain²). `low`/`high` are the uniform's bounds when given
    (None: ±limit) and trunc-normal's cut-offs. What each formula says, and how weights are
    drawn, belongs to the scheme's kind (`KINDS`): these methods hand the work to it.
    """

    scheme: Scheme
    gain: float = 1.0
    mode: str = "fan_in"
    distribution: str = "normal"
    activation: str = "relu"
    negative_slope: float = DEFAULT_NEGATIVE_SLOPE
    value: float = 0.5
    std: float = 1.0
    limit: float = 1.0
    mean: float = 0.0
    low: float | None = None
    high: float | None = None
    sparsity: float = DEFAULT_SPARSITY
    groups: int = 1
    in_axis: tuple[int, ...] = (1,)
    out_axis: tuple[int, ...] = (0,)
    batch_axis: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return self.scheme.name

    @property
    def kind(self) -> str:
        return self.scheme.kind

    @property
    def scheme_kind(self) -> SchemeKind:
        """The kind object holding this scheme's formula, density and sampler."""
        return KINDS[self.scheme.kind]

    @property
    def iid(self) -> bool:
        """Does mean-field theory apply (see `SchemeKind.iid`)?"""
        return self.scheme_kind.iid

    @property
    def fill_value(self) -> float:
        """A constant preset's value before the gain: ones' 1, constant's --value."""
        return self.value if self.scheme.value is None else self.scheme.value

    @property
    def _slope_factor(self) -> float:
        """√(1 + a²) for He with leaky-relu (He et al. 2015, eq. 15 with slope a), else 1;
        by hypot, so a slope of 1e160 gives 1e160 rather than an overflow."""
        if self.scheme.slope_corrected and self.activation == "leaky-relu":
            return math.hypot(1.0, self.negative_slope)
        return 1.0

    @property
    def scale(self) -> float:
        """The variance-scaling `scale` of the preset, slope-corrected for He (0 where the
        correction takes it below float64's range)."""
        factor = self._slope_factor
        return self.scheme.scale / factor / factor

    def fans(self, shape: Sequence[int]) -> tuple[int, int]:
        """(fan_in, fan_out) with this init's axes (torch's layout unless overridden)."""
        return compute_fans(shape, in_axis=self.in_axis, out_axis=self.out_axis, batch_axis=self.batch_axis)

    def _bounds(self) -> tuple[float, float]:
        """The uniform scheme's [low, high] (±limit unless given), or trunc-normal's cut-offs."""
        return self.scheme_kind.bounds(self)

    def _need_fans(self, shape: Sequence[int]) -> tuple[int, ...]:
        shape = tuple(int(d) for d in shape)
        if len(shape) < 2 and self.scheme_kind.needs_fans:
            raise InitcliError("shape", f"{self.name} needs a tensor of at least 2 dimensions (out, in, *kernel); a "
                                        f"1-D shape {shape} (a bias vector) takes zeros, ones, constant, normal, "
                                        "uniform or trunc-normal, which need no fans")
        if not shape or any(d <= 0 for d in shape):
            raise InitcliError("shape", f"needs positive dimensions (out, in, *kernel), got {shape}")
        return shape

    # -- what the formula says ---------------------------------------------------------

    def expected_std(self, shape: Sequence[int]) -> float:
        """The std the scheme's formula gives for a tensor of this shape (torch layout)."""
        return self.scheme_kind.std(self, self._need_fans(shape))

    def expected_mean(self, shape: Sequence[int] | None = None) -> float:
        """The mean the formula gives; identity and dirac need the shape."""
        return self.scheme_kind.mean(self, shape)

    def bound(self, shape: Sequence[int]) -> float | None:
        """The largest |W| the distribution allows: the uniform limit or the truncation point."""
        return self.scheme_kind.bound(self, shape)

    def largest_weight(self) -> float:
        """An upper bound on |W| over every shape and draw (n ≥ 1 for the scaling schemes);
        inf where it is beyond float64. What `make_init` checks against float32's range."""
        return self.scheme_kind.largest_weight(self)

    def density(self, shape: Sequence[int]):
        """The probability density the weights are drawn from, as a function of w, or None
        where there is none to draw (zeros, constant, identity, dirac, delta-orthogonal, lsuv,
        whose scale comes from the data). Orthogonal entries are near-Gaussian at this std
        for large matrices; for sparse, the density of its nonzero part (the rest is a spike
        at 0). Tiny stds give large densities, never an overflow or a warning."""
        return self.scheme_kind.density(self, shape)

    # -- drawing -------------------------------------------------------------------------

    def sample(self, shape: Sequence[int], rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
        """Draw a tensor of `shape` (torch layout). Random draws are made at float32 precision
        whatever `dtype` is, so float32 and float64 runs with one seed hold the same weights."""
        return self.scheme_kind.sample(self, self._need_fans(shape), rng, dtype)

    def params(self) -> dict:
        """The arguments that reproduce this init (for JSON output and saved files)."""
        out = {"scheme": self.name, "gain": self.gain, "mode": self.mode, "distribution": self.distribution,
               "activation": self.activation, "negative_slope": self.negative_slope}
        out.update(self.scheme_kind.params(self))
        return out


# -- scheme kinds ------------------------------------------------------------------------
#
# One small object per kind of scheme (a Scheme's `kind` names it): its formula (std, mean,
# bound and largest weight, from the shape and fans), its density, its sampler over an
# explicit numpy Generator, the options `params` records, and `iid`. A new kind is one class
# and one `register_kind` call; `Init` needs no edit.

# How far a draw can reach in stds (before the location) for each distribution
_TAILS = {"normal": GAUSSIAN_TAIL, "uniform": math.sqrt(3), "truncated-normal": TRUNCATION_BOUND / TRUNCATED_NORMAL_STD}


def variance_scaling_std(scale: float, fan_in: float, fan_out: float, mode: str) -> float:
    """√(scale/n), n = fan_in, fan_out or (fan_in + fan_out)/2 by mode: the variance-scaling
    core (Glorot & Bengio 2010; He et al. 2015; JAX's variance_scaling) before the gain."""
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    return math.sqrt(scale / n)


def _location_scale_density(distribution: str, mean: float, std: float, half: float) -> Callable[[float], float]:
    """The density of `distribution` about `mean` with this std (`half`: the uniform's half-width;
    the truncated normal is cut at ±2 stds of the normal before truncation)."""
    if distribution == "normal":
        return lambda w: _normal_pdf(w, mean, std)
    if distribution == "uniform":
        return lambda w: 1 / (2 * half) if abs(w - mean) <= half else 0.0
    sigma = std / TRUNCATED_NORMAL_STD  # the normal before truncation to ±2σ
    mass = math.erf(TRUNCATION_BOUND / math.sqrt(2))
    return lambda w: (_normal_pdf(w, mean, sigma, 1 / mass) if abs(w - mean) <= TRUNCATION_BOUND * sigma else 0.0)


def _draw_location_scale(shape: tuple[int, ...], rng: np.random.Generator, distribution: str, mu: float,
                         sigma: float, half: float, dtype) -> np.ndarray:
    """mu + draws of `distribution` with std sigma (the uniform's half-width `half`), in float32."""
    if distribution == "normal":
        weights = gaussian(rng, shape)
        weights *= np.float32(sigma)
    elif distribution == "uniform":
        # (2u − 1) is exact in float32 for u on the 2⁻²⁴ grid; one rounding, no overflow
        weights = rng.random(shape, dtype=np.float32)
        weights *= np.float32(2)
        weights -= np.float32(1)
        weights *= np.float32(half)
    else:
        weights = _truncated_standard_normal(shape, rng)
        weights *= np.float32(sigma / TRUNCATED_NORMAL_STD)
    if mu != 0:
        weights += np.float32(mu)
        if distribution == "uniform":  # keep rounding inside [low, high]
            np.clip(weights, np.float32(mu - half), np.float32(mu + half), out=weights)
    return weights.astype(dtype, copy=False)


@dataclass(frozen=True)
class SchemeKind:
    """What a kind of scheme computes for an `Init`.

    `iid` answers "does mean-field theory apply?": true where the weights are an ensemble whose
    variance map is the i.i.d. one (variance-scaling and fixed draws; orthogonal kinds, whose
    rotation-invariant entries give the same forward variance map at large width, Pennington et
    al. 2017; lsuv, which starts orthogonal), false for deterministic weights (zeros, constant,
    identity, dirac), whose mean, not their spread, carries the signal. `needs_fans`: false for
    the kinds a 1-D shape (a bias vector) can take. `variance_scaling`: --mode and the preset's
    scale mean something to it; `takes_distribution`: --distribution does. `options`: the
    options it may use (`uses` narrows them for a preset); `range_options`: those that could
    take its weights past float32's range, blamed by `make_init`. Shapes reaching `std` and
    `sample` are checked by `Init`; `mean`, `bound` and `density` check them where they use them.
    """

    name: str
    iid: bool = True
    needs_fans: bool = True
    variance_scaling: bool = False
    takes_distribution: bool = False
    options: tuple[str, ...] = ()
    range_options: tuple[str, ...] = ()

    def uses(self, scheme: Scheme) -> tuple[str, ...]:
        """The options this preset uses (gain applies to all but zeros)."""
        return self.options

    def std(self, init: Init, shape: tuple[int, ...]) -> float:
        raise NotImplementedError(f"scheme kind {self.name} has no std")

    def mean(self, init: Init, shape: Sequence[int] | None) -> float:
        return 0.0

    def bound(self, init: Init, shape: Sequence[int]) -> float | None:
        raise NotImplementedError(f"scheme kind {self.name} has no bound")

    def largest_weight(self, init: Init) -> float:
        raise NotImplementedError(f"scheme kind {self.name} has no largest weight")

    def density(self, init: Init, shape: Sequence[int]) -> Callable[[float], float] | None:
        return None

    def sample(self, init: Init, shape: tuple[int, ...], rng: np.random.Generator, dtype) -> np.ndarray:
        raise NotImplementedError(f"scheme kind {self.name} has no sampler")

    def params(self, init: Init) -> dict:
        """The options beyond Init's common ones that reproduce this init."""
        return {}

    def bounds(self, init: Init) -> tuple[float, float]:
        """The uniform's [low, high]: ±limit unless given."""
        return (-init.limit if init.low is None else init.low, init.limit if init.high is None else init.high)


@dataclass(frozen=True)
class ScalingKind(SchemeKind):
    """Var(W) = gain² · scale / n by mode, normal, uniform or truncated normal: Glorot, He, LeCun."""

    def std(self, init, shape):
        fan_in, fan_out = init.fans(shape)
        return init.gain * variance_scaling_std(init.scheme.scale, fan_in, fan_out, init.mode) / init._slope_factor

    def bound(self, init, shape):
        std = init.expected_std(shape)
        if init.distribution == "uniform":
            return math.sqrt(3) * std
        if init.distribution == "truncated-normal":
            return TRUNCATION_BOUND * std / TRUNCATED_NORMAL_STD
        return None

    def largest_weight(self, init):
        return init.gain * math.sqrt(init.scale) * _TAILS[init.distribution]

    def density(self, init, shape):
        std = init.expected_std(shape)
        if std == 0:
            return None
        return _location_scale_density(init.distribution, 0.0, std, math.sqrt(3) * std)

    def sample(self, init, shape, rng, dtype):
        sigma = init.expected_std(shape)
        return _draw_location_scale(shape, rng, init.distribution, 0.0, sigma, math.sqrt(3) * sigma, dtype)

    def params(self, init):
        if (init.in_axis, init.out_axis, init.batch_axis) != ((1,), (0,), ()):
            return dict(in_axis=list(init.in_axis), out_axis=list(init.out_axis), batch_axis=list(init.batch_axis))
        return {}


@dataclass(frozen=True)
class FixedKind(SchemeKind):
    """normal (--mean, --std) and uniform (±--limit or --low/--high), ignoring the fans."""

    @staticmethod
    def location_half(init: Init) -> tuple[float, float, float]:
        """(μ, σ, half-width) before the gain: the normal scheme's mean and std; the uniform
        scheme's centre, (high − low)/√12 and (high − low)/2. The half-width is that of the
        uniform distribution with this σ (√3σ), exact for the uniform scheme."""
        if init.scheme.distribution == "normal":
            return init.mean, init.std, math.sqrt(3) * init.std
        low, high = init._bounds()
        half = high / 2 - low / 2  # halves first: high − low can exceed float64 only in theory
        return low / 2 + high / 2, half / math.sqrt(3), half

    def uses(self, scheme):
        if scheme.distribution == "normal":
            return ("mean", "std", "distribution")
        return ("limit", "low", "high", "distribution")

    def std(self, init, shape):
        return init.gain * self.location_half(init)[1]

    def mean(self, init, shape):
        return init.gain * self.location_half(init)[0]

    def bound(self, init, shape):
        mu, sigma, half = self.location_half(init)
        reach = {"normal": None, "uniform": half, "truncated-normal": TRUNCATION_BOUND * sigma / TRUNCATED_NORMAL_STD
                 }[init.distribution]
        return None if reach is None else init.gain * (abs(mu) + reach)

    def largest_weight(self, init):
        mu, sigma, half = self.location_half(init)
        tail = _TAILS[init.distribution]
        return init.gain * (abs(mu) + (half if init.distribution == "uniform" else tail * sigma))

    def density(self, init, shape):
        std = init.expected_std(shape)
        if std == 0:
            return None
        return _location_scale_density(init.distribution, init.expected_mean(shape), std,
                                       init.gain * self.location_half(init)[2])

    def sample(self, init, shape, rng, dtype):
        mu, sigma, half = self.location_half(init)
        return _draw_location_scale(shape, rng, init.distribution, init.gain * mu, init.gain * sigma,
                                    init.gain * half, dtype)

    def params(self, init):
        if init.scheme.distribution == "normal":
            return dict(mean=init.mean, std=init.std)
        if init.scheme.distribution == "uniform":
            if init.low is None and init.high is None:
                return {"limit": init.limit}
            low, high = init._bounds()
            return {"low": low, "high": high}
        return {}


@dataclass(frozen=True)
class TruncNormalKind(SchemeKind):
    """torch's trunc_normal_: N(mean, std²) restricted to absolute cut-offs [low, high]."""

    @staticmethod
    def truncated(init: Init) -> TruncatedNormal:
        low, high = init._bounds()
        return TruncatedNormal(init.mean, init.std, low, high)

    def bounds(self, init):
        return (TRUNC_NORMAL_LOW if init.low is None else init.low,
                TRUNC_NORMAL_HIGH if init.high is None else init.high)

    def std(self, init, shape):
        return init.gain * self.truncated(init).moments()[1]

    def mean(self, init, shape):
        return init.gain * self.truncated(init).moments()[0]

    def bound(self, init, shape):
        return init.gain * max(abs(v) for v in init._bounds())

    def largest_weight(self, init):
        return init.gain * max(abs(v) for v in init._bounds())

    def density(self, init, shape):
        if init.expected_std(shape) == 0:
            return None
        gain = init.gain
        pdf = self.truncated(init).density()
        return None if pdf is None else (lambda w: pdf(w / gain) / gain)

    def sample(self, init, shape, rng, dtype):
        draws = self.truncated(init).sample(math.prod(shape), rng)
        draws *= init.gain
        return draws.astype(np.float32).reshape(shape).astype(dtype, copy=False)

    def params(self, init):
        low, high = init._bounds()
        return dict(mean=init.mean, std=init.std, low=low, high=high)


@dataclass(frozen=True)
class SparseKind(SchemeKind):
    """torch's sparse_: N(0, std²) with ⌈sparsity·rows⌉ zeros per column."""

    @staticmethod
    def zeros_per_column(init: Init, rows: int) -> int:
        """⌈sparsity·rows⌉, computed as torch's sparse_ computes it."""
        return min(rows, math.ceil(init.sparsity * rows))

    def std(self, init, shape):
        rows = shape[0]
        return init.gain * init.std * math.sqrt((rows - self.zeros_per_column(init, rows)) / rows)

    def bound(self, init, shape):
        return None

    def largest_weight(self, init):
        return init.gain * GAUSSIAN_TAIL * init.std

    def density(self, init, shape):
        if init.expected_std(shape) == 0:
            return None
        rows = int(shape[0])
        kept = (rows - self.zeros_per_column(init, rows)) / rows
        return lambda w: _normal_pdf(w, 0.0, init.gain * init.std, kept)

    def sample(self, init, shape, rng, dtype):
        return _sparse(shape, self.zeros_per_column(init, shape[0]), init.gain * init.std, rng).astype(dtype, copy=False)

    def params(self, init):
        return dict(sparsity=init.sparsity, std=init.std)


@dataclass(frozen=True)
class ZerosKind(SchemeKind):
    """W = 0."""

    def std(self, init, shape):
        return 0.0

    def bound(self, init, shape):
        return abs(init.expected_mean())

    def largest_weight(self, init):
        return 0.0

    def sample(self, init, shape, rng, dtype):
        return np.zeros(shape, dtype=dtype)


@dataclass(frozen=True)
class ConstantKind(SchemeKind):
    """W = gain · value (ones: value 1)."""

    def std(self, init, shape):
        return 0.0

    def mean(self, init, shape):
        return init.gain * init.fill_value

    def bound(self, init, shape):
        return abs(init.expected_mean())

    def largest_weight(self, init):
        return init.gain * abs(init.fill_value)

    def sample(self, init, shape, rng, dtype):
        return np.full(shape, init.gain * init.fill_value, dtype=dtype)  # within float32: make_init checked

    def params(self, init):
        return {"value": init.value} if init.scheme.value is None else {}


@dataclass(frozen=True)
class OrthogonalKind(SchemeKind):
    """Q of the QR of a Gaussian matrix, as torch's orthogonal_; lsuv starts from it."""

    def std(self, init, shape):
        rows = shape[0]
        cols = math.prod(shape) // rows
        # the min(rows, cols) orthonormal vectors have unit norm: mean square 1/max(rows, cols)
        return init.gain / math.sqrt(max(rows, cols))

    def bound(self, init, shape):
        return init.gain

    def largest_weight(self, init):
        return init.gain  # orthonormal vectors: entries within ±1

    def density(self, init, shape):
        std = init.expected_std(shape)
        return None if std == 0 else (lambda w: _normal_pdf(w, 0.0, std))

    def sample(self, init, shape, rng, dtype):
        return (init.gain * _orthogonal(shape, rng)).astype(dtype)


@dataclass(frozen=True)
class LsuvKind(OrthogonalKind):
    """Orthogonal, then rescaled per layer from the data (by the engine): no density to draw."""

    def density(self, init, shape):
        return None


def _taps_std(init: Init, shape: tuple[int, ...]) -> float:
    """delta: one orthogonal tap of mean square 1/max(out, in) among ∏kernel taps; per tap:
    every tap orthogonal, scaled by 1/√taps. Either way fan_in·Var = in/max(out, in)."""
    taps = math.prod(shape[2:])
    return init.gain / math.sqrt(max(shape[0], shape[1]) * taps)


@dataclass(frozen=True)
class DeltaOrthogonalKind(SchemeKind):
    """The kernel's centre tap orthogonal, every other tap 0 (Xiao et al. 2018)."""

    def std(self, init, shape):
        return _taps_std(init, shape)

    def bound(self, init, shape):
        return init.gain

    def largest_weight(self, init):
        return init.gain

    def sample(self, init, shape, rng, dtype):
        weights = np.zeros(shape, dtype=dtype)
        centre = (slice(None), slice(None)) + tuple(d // 2 for d in shape[2:])
        weights[centre] = init.gain * _orthogonal(shape[:2], rng)
        return weights


@dataclass(frozen=True)
class OrthogonalPerTapKind(SchemeKind):
    """Every tap an independent orthogonal matrix, times 1/√taps."""

    def std(self, init, shape):
        return _taps_std(init, shape)

    def bound(self, init, shape):  # orthogonal entries are within ±1, then / √taps
        return init.gain / math.sqrt(math.prod(init._need_fans(shape)[2:]))

    def largest_weight(self, init):
        return init.gain

    def density(self, init, shape):
        std = init.expected_std(shape)
        return None if std == 0 else (lambda w: _normal_pdf(w, 0.0, std))

    def sample(self, init, shape, rng, dtype):
        return (init.gain * _orthogonal_per_tap(shape, rng)).astype(dtype)


@dataclass(frozen=True)
class OnesPatternKind(SchemeKind):
    """A fixed pattern of ones (identity, dirac): a fraction p of the entries is gain, the rest 0."""

    def ones_fraction(self, init: Init, shape: tuple[int, ...]) -> float:
        raise NotImplementedError

    def std(self, init, shape):
        # a fraction p of the entries is 1, the rest 0: std √(p(1 − p)) about the mean p
        p = self.ones_fraction(init, shape)
        return init.gain * math.sqrt(p * (1 - p))

    def mean(self, init, shape):
        if shape is None:
            raise TypeError(f"the mean of {init.name} depends on the shape: pass it")
        return init.gain * self.ones_fraction(init, init._need_fans(shape))

    def bound(self, init, shape):
        return init.gain

    def largest_weight(self, init):
        return init.gain


@dataclass(frozen=True)
class IdentityKind(OnesPatternKind):
    """W = I, as torch's eye_."""

    def ones_fraction(self, init, shape):
        return min(shape[0], shape[1]) / (shape[0] * shape[1])

    def sample(self, init, shape, rng, dtype):
        if len(shape) != 2:
            raise InitcliError("shape", f"identity needs a 2-D shape, got {shape}; "
                                        "for conv kernels use delta-orthogonal or dirac")
        return (init.gain * np.eye(shape[0], shape[1])).astype(dtype)


@dataclass(frozen=True)
class DiracKind(OnesPatternKind):
    """torch's dirac_: each input channel feeds one output channel per group at the centre tap."""

    def ones_fraction(self, init, shape):
        per_group = shape[0] // init.groups
        return init.groups * min(per_group, shape[1]) / math.prod(shape)

    def sample(self, init, shape, rng, dtype):
        return _dirac(shape, init.groups, init.gain).astype(dtype, copy=False)

    def params(self, init):
        return {"groups": init.groups}


KINDS: dict[str, SchemeKind] = {}


def register_kind(kind: SchemeKind) -> SchemeKind:
    """Add a scheme kind (a Scheme whose `kind` is its name then draws through it)."""
    if kind.name in KINDS:
        raise ValueError(f"scheme kind {kind.name} is already registered")
    KINDS[kind.name] = kind
    return kind


for _kind in (
    ZerosKind("zeros", iid=False, needs_fans=False),
    ConstantKind("constant", iid=False, needs_fans=False, options=("value",), range_options=("value",)),
    FixedKind("fixed", needs_fans=False, takes_distribution=True,
              options=("mean", "std", "distribution", "limit", "low", "high"),
              range_options=("mean", "std", "low", "high", "limit")),
    TruncNormalKind("trunc-normal", needs_fans=False, options=("mean", "std", "low", "high"),
                    range_options=("low", "high")),
    ScalingKind("scaling", variance_scaling=True, takes_distribution=True,
                options=("mode", "distribution", "in_axis", "out_axis", "batch_axis")),
    SparseKind("sparse", options=("sparsity", "std"), range_options=("std",)),
    OrthogonalKind("orthogonal"),
    LsuvKind("lsuv"),
    DeltaOrthogonalKind("delta-orthogonal"),
    OrthogonalPerTapKind("orthogonal-per-tap"),
    IdentityKind("identity", iid=False),
    DiracKind("dirac", iid=False, options=("groups",)),
):
    register_kind(_kind)
# schemes whose formula needs no fans: the only ones a 1-D shape (a bias vector) can take
NO_FAN_KINDS = tuple(name for name, kind in KINDS.items() if not kind.needs_fans)


def gaussian(rng: np.random.Generator, shape: Sequence[int], dtype=np.float32) -> np.ndarray:
    """Standard normal draws by the Box–Muller transform (Box & Muller 1958).

    Here about twice as fast as numpy's ziggurat, which costs more than a matrix product of
    the same size. The radius √(−2 ln u) comes from float64 uniforms, so the tails reach
    about 8.5σ as a normal's should; the angle, which needs no such range, from float32 ones.
    """
    shape = tuple(int(d) for d in shape)
    n = math.prod(shape)
    half = (n + 1) // 2
    radius = np.sqrt(-2.0 * np.log1p(-rng.random(half))).astype(np.float32)  # 1 − u ∈ (0, 1]
    angle = rng.random(half, dtype=np.float32)
    angle *= np.float32(2 * math.pi)
    out = np.empty(2 * half, dtype=np.float32)
    np.multiply(radius, np.cos(angle), out=out[:half])
    np.multiply(radius, np.sin(angle), out=out[half:])
    return out[:n].reshape(shape).astype(dtype, copy=False)


def _truncated_standard_normal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """N(0,1) conditioned on (-2, 2), by redrawing the ~4.6% that fall outside."""
    out = gaussian(rng, shape)
    flat = out.reshape(-1)
    outside = np.flatnonzero(np.abs(flat) >= TRUNCATION_BOUND)
    while outside.size:
        flat[outside] = gaussian(rng, (outside.size,))
        outside = outside[np.abs(flat[outside]) >= TRUNCATION_BOUND]
    return out


def _orthogonal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A (semi-)orthogonal tensor as torch.nn.init.orthogonal_ builds it: flatten to
    (rows, numel/rows), QR of a Gaussian matrix (of its transpose when rows < cols), and
    multiply Q's columns by sign(diag R) so the result is Haar-distributed (Mezzadri 2007)."""
    rows = shape[0]
    cols = math.prod(shape) // rows
    draw = gaussian(rng, (rows, cols), np.float64)
    if rows < cols:
        draw = draw.T
    q, r = np.linalg.qr(draw)
    q *= np.where(np.diag(r) < 0, -1.0, 1.0)
    if rows < cols:
        q = q.T
    return q.reshape(shape)


def _orthogonal_per_tap(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """An (out, in, *kernel) tensor whose every tap W[:, :, t] is an independent Haar
    (semi-)orthogonal out×in matrix (as `_orthogonal` draws one), all divided by √taps so that
    Σ_t W_tᵀW_t = I for out ≥ in: a C→C kernel has σ_w² = C·taps·Var(W) = 1. The conv it
    makes is not an isometry (at spatial frequency ω it is Σ_t W_t·e^{iω·t}, not orthogonal)
    but preserves the mean square, E[JᵀJ] = I. One tap (a 2-D shape) is `_orthogonal`'s draw."""
    rows, cols = shape[0], shape[1]
    taps = math.prod(shape[2:])
    draw = gaussian(rng, (taps, rows, cols), np.float64)
    if rows < cols:
        draw = draw.swapaxes(1, 2)
    q, r = np.linalg.qr(draw)  # one QR per tap, batched
    q *= np.where(np.diagonal(r, axis1=1, axis2=2) < 0, -1.0, 1.0)[:, None, :]  # Haar (Mezzadri 2007)
    if rows < cols:
        q = q.swapaxes(1, 2)
    q /= math.sqrt(taps)
    return np.moveaxis(q, 0, -1).reshape(shape)


def _dirac(shape: tuple[int, ...], groups: int, gain: float) -> np.ndarray:
    """torch.nn.init.dirac_: for each of `groups` groups of out/groups output channels, input
    channel i feeds output channel g·out/groups + i at the kernel's centre (index k // 2 of
    each kernel dimension), for i < min(out/groups, in); a 2-D shape has no kernel (eye_ per
    group, where torch only takes 3- to 5-D conv kernels)."""
    if shape[0] % groups:
        raise InitcliError("groups", f"must divide the {shape[0]} output channels of shape {shape}, got {groups}")
    per_group = shape[0] // groups
    taps = min(per_group, shape[1])
    weights = np.zeros(shape, dtype=np.float32)
    rows = (np.arange(groups)[:, None] * per_group + np.arange(taps)[None, :]).ravel()
    cols = np.tile(np.arange(taps), groups)
    weights[(rows, cols) + tuple(d // 2 for d in shape[2:])] = np.float32(gain)
    return weights


def _sparse(shape: tuple[int, ...], zeros: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """torch.nn.init.sparse_: N(0, std²) entries, then in each column `zeros` rows, chosen
    uniformly without replacement, set to 0. 2-D only, as torch."""
    if len(shape) != 2:
        raise InitcliError("shape", f"sparse needs a 2-D (out, in) shape, as torch's sparse_, got {shape}")
    weights = gaussian(rng, shape)
    weights *= np.float32(std)
    if zeros:
        rows, cols = shape
        # the `zeros` smallest of i.i.d. uniform keys: a uniformly random subset of each column's rows
        keys = rng.random(shape, dtype=np.float32)
        chosen = keys.argsort(axis=0, kind="stable")[:zeros] if zeros < rows else np.arange(rows)[:, None]
        weights[chosen, np.arange(cols)[None, :]] = 0
    return weights


def make_init(
    scheme: str | Scheme = "he-normal",
    *,
    gain: float = 1.0,
    mode: str | None = None,
    distribution: str | None = None,
    activation: str = "relu",
    negative_slope: float = DEFAULT_NEGATIVE_SLOPE,
    value: float | None = None,
    std: float | None = None,
    limit: float | None = None,
    mean: float | None = None,
    low: float | None = None,
    high: float | None = None,
    sparsity: float | None = None,
    groups: int | None = None,
    in_axis: int | Sequence[int] | None = None,
    out_axis: int | Sequence[int] | None = None,
    batch_axis: int | Sequence[int] | None = None,
) -> Init:
    """Resolve a scheme name and its options into an `Init`, checking every argument.

    None means "not given": value 0.5, std the scheme's (1; sparse 0.01), limit 1, mean 0,
    sparsity 0.1, groups 1, in_axis 1, out_axis 0, batch_axis none. The uniform scheme takes
    either `limit` (U(−limit, limit)) or `low`/`high` (U(low, high); the one not given is
    ∓1, so low=0 alone is torch's uniform_ default U(0, 1)), never both. trunc-normal's
    `low`/`high` are its absolute cut-offs (default −2, 2, as torch's a, b).

    An init whose weights could exceed float32's range (weights are drawn in float32) is
    refused, naming the option at fault and the largest value it may take.
    """
    if isinstance(scheme, str) and ("(" in scheme or ")" in scheme):
        # options spelled in the name (as inspect prints readings): they fill what the caller left at
        # its default; the same option given twice with two values is refused
        scheme, spelled = parse_scheme_spec(scheme)
        given = {"gain": gain, "mode": mode, "distribution": distribution, "activation": activation,
                 "negative_slope": negative_slope, "value": value, "std": std, "limit": limit, "mean": mean,
                 "low": low, "high": high, "sparsity": sparsity, "groups": groups}
        defaults = {"gain": 1.0}
        slope = spelled.pop("a", None)
        for key, spelled_value in spelled.items():
            current = given[key]
            if current is not None and current != defaults.get(key) and current != spelled_value:
                raise InitcliError(key, f"is {current} but the scheme '{scheme}(…)' gives {key}={spelled_value}; "
                                        "give it once")
            given[key] = spelled_value
        if slope is not None:
            # He's slope a, as torch's kaiming a: the std × 1/√(1 + a²), i.e. a gain, so that the
            # network's activation (and what params record of it) stays the caller's
            if not get_scheme(scheme).slope_corrected:
                raise InitcliError("scheme", f"'{scheme}(…a=…)': a is He's leaky slope; {scheme} has none")
            slope = check_number("scheme", slope, nonnegative=False)
            network = get_activation(activation, given["negative_slope"])
            if network.name == "leaky-relu":
                if given["negative_slope"] != slope:
                    raise InitcliError("negative_slope", f"is {given['negative_slope']} but the scheme gives a={slope}; "
                                                         "give it once")
            else:
                given["gain"] = check_number("gain", given["gain"]) / math.hypot(1.0, slope)
        gain, mode, distribution, negative_slope = given["gain"], given["mode"], given["distribution"], \
            given["negative_slope"]
        value, std, limit, mean, low, high = (given[k] for k in ("value", "std", "limit", "mean", "low", "high"))
        sparsity, groups = given["sparsity"], given["groups"]
    preset = scheme if isinstance(scheme, Scheme) else get_scheme(scheme)
    negative_slope = check_number("negative_slope", negative_slope, nonnegative=False)
    act = get_activation(activation, negative_slope)
    kind = KINDS[preset.kind]
    eff_mode = preset.mode if mode is None or not kind.variance_scaling else _canonical(mode, FAN_MODES, "mode")
    if distribution is not None:
        distribution = _canonical(distribution, DISTRIBUTIONS, "distribution")
    eff_distribution = distribution if distribution is not None and kind.takes_distribution else preset.distribution
    if "limit" in kind.uses(preset) and limit is not None and (low is not None or high is not None):
        raise InitcliError("limit", "give either --limit (U(-limit, limit)) or --low/--high (U(low, high)), "
                                    "not both")
    resolved = dict(
        gain=check_number("gain", gain),
        value=0.5 if value is None else check_number("value", value, nonnegative=False),
        std=preset.default_std if std is None else check_number("std", std),
        limit=1.0 if limit is None else check_number("limit", limit),
        mean=0.0 if mean is None else check_number("mean", mean, nonnegative=False),
        low=None if low is None else check_number("low", low, nonnegative=False),
        high=None if high is None else check_number("high", high, nonnegative=False),
        sparsity=DEFAULT_SPARSITY if sparsity is None else check_number("sparsity", sparsity),
        groups=1 if groups is None else groups,
        in_axis=(1,) if in_axis is None else _axes("in_axis", in_axis),
        out_axis=(0,) if out_axis is None else _axes("out_axis", out_axis),
        batch_axis=() if batch_axis is None else _axes("batch_axis", batch_axis),
    )
    if resolved["sparsity"] > 1:
        raise InitcliError("sparsity", f"must be a fraction between 0 and 1, got {sparsity!r}")
    if isinstance(resolved["groups"], bool) or not isinstance(resolved["groups"], (int, np.integer)) \
            or resolved["groups"] < 1:
        raise InitcliError("groups", f"must be a positive integer, got {groups!r}")
    init = Init(scheme=preset, mode=eff_mode, distribution=eff_distribution, activation=act.name,
                negative_slope=negative_slope, **resolved)
    if "low" in kind.range_options and (low is not None or high is not None):  # uniform's or trunc-normal's
        lo, hi = init._bounds()
        if not lo < hi:
            raise InitcliError("high" if high is not None else "low",
                               f"the interval needs low < high, got low {lo:g} and high {hi:g}")
    _check_range(init, {"mean": mean, "low": low, "high": high, "limit": limit, "value": value, "std": std})
    return init


def _check_range(init: Init, given: dict) -> None:
    """Refuse an init whose weights could exceed float32's range, blaming --gain when the
    scheme's own parameters alone fit, else the largest of those parameters that was given."""
    largest = init.largest_weight()
    if largest <= FLOAT32_MAX:
        return
    own = largest / init.gain if init.gain > 0 else 0.0
    if init.gain > 1 and own <= FLOAT32_MAX:
        param, given_value = "gain", init.gain
    else:
        used = init.scheme_kind.range_options
        candidates = [p for p in used if given.get(p) is not None]
        param = max(candidates, key=lambda p: abs(float(given[p]))) if candidates else "gain"
        given_value = float(given[param]) if candidates else init.gain
    # |W| grows in proportion to the parameter at fault (all of it, for --gain, --std, --value)
    allowed = FLOAT32_MAX / (largest / abs(given_value)) if math.isfinite(largest) and given_value else None
    reach = f"up to {largest:.3g}" if math.isfinite(largest) else "beyond float64's range"
    hint = f"; at most about {allowed:.3g} here" if allowed and param in ("gain", "std", "value") else ""
    raise InitcliError(param, f"{given_value:g} gives weights {reach}, but initcli draws weights in float32, "
                              f"whose largest value is {FLOAT32_MAX:.3g}{hint}")


INIT_KEYWORDS = ("gain", "mode", "distribution", "activation", "negative_slope", "value", "std", "limit", "mean",
                 "low", "high", "sparsity", "groups", "in_axis", "out_axis", "batch_axis")


def init_from_params(params: dict) -> Init:
    """The Init that `Init.params()` (or a result's params) records: for charts and
    reproductions, so no caller needs to know which keywords a scheme uses."""
    options = {k: params[k] for k in INIT_KEYWORDS if params.get(k) is not None}
    if "limit" in options and ("low" in options or "high" in options):
        del options["limit"]
    return make_init(params["scheme"], **options)


def ignored_options(scheme: str, **given) -> list[str]:
    """The options given (not None) that `scheme` does not use, as --options: --mode and the
    fan axes only mean something to the variance-scaling presets, --distribution also to
    normal and uniform, --value to constant, --mean/--std to normal, trunc-normal (and --std
    to sparse), --limit to uniform, --low/--high to uniform and trunc-normal, --sparsity to
    sparse, --groups to dirac. Unknown keywords are a TypeError (a caller's mistake)."""
    preset = get_scheme(scheme)
    known = {option for kind in KINDS.values() for option in kind.options}
    unknown = set(given) - known
    if unknown:
        raise TypeError(f"ignored_options: unknown option(s) {', '.join(sorted(unknown))}")
    uses = KINDS[preset.kind].uses(preset)
    if preset.value is not None:  # ones: its value is fixed
        uses = ()
    return ["--" + option.replace("_", "-") for option, value in given.items()
            if value is not None and option not in uses]


def scheme_table(residual_inits: bool = False) -> list[dict]:
    """One record per scheme, for `initcli schemes`. With `residual_inits`, each row also
    has a `kind` ('scheme' or 'residual-init') and the residual-init presets follow the
    schemes."""
    rows = [
        {
            "name": s.name,
            "aliases": ", ".join(s.aliases),
            "distribution": s.distribution if KINDS[s.kind].takes_distribution else s.kind,
            "formula": s.formula,
            "mode": s.mode if KINDS[s.kind].variance_scaling else "",
            "scale": s.scale if KINDS[s.kind].variance_scaling else None,
            "designed_for": s.designed_for,
            "reference": s.reference,
        }
        for s in SCHEMES
    ]
    if not residual_inits:
        return rows
    return ([{"kind": "scheme", **row} for row in rows]
            + [{"kind": "residual-init", **row} for row in residual_init_table()])
