"""Initialisation schemes: one variance-scaling core and named presets over it.

Var(W) = gain² · scale / n, with n = fan_in, fan_out or (fan_in + fan_out)/2 by mode, drawn
from a normal, a uniform U(-√(3·Var), √(3·Var)) or a normal truncated to ±2σ (as JAX's
`variance_scaling`). Xavier, He, LeCun and PyTorch's nn.Linear default are presets over it;
zeros, constant, a fixed-std normal, a fixed-limit uniform and orthogonal stand beside it.

Shapes are in PyTorch's layout, (out, in, *kernel), and fans are computed as torch.nn.init
computes them, so that for the same arguments the std (or limit) equals torch's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .activations import DEFAULT_NEGATIVE_SLOPE, get_activation
from .errors import InitcliError, suggest

# Standard deviation of a unit normal truncated to (-2, 2): dividing the std by it makes the
# variance after truncation equal the target (as in JAX's variance_scaling).
TRUNCATED_NORMAL_STD = 0.87962566103423978
TRUNCATION_BOUND = 2.0

FAN_MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("normal", "uniform", "truncated-normal")


@dataclass(frozen=True)
class Scheme:
    """A named preset. `kind` says which sampler applies; the rest is its data."""

    name: str
    kind: str  # "scaling", "fixed" (std given by --std/--limit), "zeros", "constant", "orthogonal"
    distribution: str = "normal"
    scale: float = 1.0
    mode: str = "fan_in"
    slope_corrected: bool = False  # He: scale / (1 + a²) when the activation is leaky-relu
    aliases: tuple[str, ...] = ()
    formula: str = ""
    designed_for: str = ""
    reference: str = ""


GLOROT = "Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward neural networks"
HE = "He et al. 2015, Delving Deep into Rectifiers"
LECUN = "LeCun et al. 1998, Efficient BackProp"

SCHEMES: tuple[Scheme, ...] = (
    Scheme("zeros", "zeros", formula="W = 0", aliases=("zero",),
           designed_for="none (never breaks symmetry)"),
    Scheme("constant", "constant", formula="W = value (--value, default 0.5)", aliases=("ones",),
           designed_for="none (never breaks symmetry)"),
    Scheme("normal", "fixed", "normal", formula="std = --std (default 1)",
           aliases=("standard-normal", "randn"), designed_for="none (ignores the fans)"),
    Scheme("uniform", "fixed", "uniform", formula="limit = --limit (default 1)",
           aliases=("rand",), designed_for="none (ignores the fans)"),
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
    Scheme("identity", "identity", aliases=("eye",), formula="W = I (ones on the diagonal, as torch's eye_)",
           designed_for="linear and residual stacks", reference="Le et al. 2015; torch.nn.init.eye_"),
    Scheme("lsuv", "lsuv", formula="orthogonal, then each layer scaled to unit pre-activation variance on the batch",
           designed_for="any activation (data-driven)",
           reference="Mishkin & Matas 2015, All you need is a good init"),
    Scheme("torch-default", "scaling", "uniform", 1 / 3, "fan_in", aliases=("pytorch", "torch"),
           formula="limit = 1/√fan_in", designed_for="PyTorch nn.Linear's default",
           reference="PyTorch nn.Linear.reset_parameters: kaiming_uniform_(a=√5)"),
)

_BY_NAME = {s.name: s for s in SCHEMES}
_ALIASES = {alias: s.name for s in SCHEMES for alias in s.aliases}
SCHEME_NAMES: tuple[str, ...] = tuple(_BY_NAME)


def get_scheme(name: str) -> Scheme:
    """The preset called `name` or one of its aliases (`xavier`, `kaiming`, `glorot_uniform`…)."""
    key = name.strip().lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in _BY_NAME:
        raise InitcliError(
            "scheme",
            f"unknown scheme '{name}'{suggest(key, list(_BY_NAME) + list(_ALIASES))}; "
            f"choose from {', '.join(SCHEME_NAMES)} (or an alias: {', '.join(_ALIASES)})",
        )
    return _BY_NAME[key]


def compute_fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) of a tensor in PyTorch's layout (out, in, *kernel).

    The receptive field (product of the kernel dimensions) multiplies both, as in
    torch.nn.init._calculate_fan_in_and_fan_out. Rank < 2 has no fans and is refused.
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise InitcliError("shape", f"needs at least 2 dimensions (out, in, *kernel), got {shape}")
    if any(d <= 0 for d in shape):
        raise InitcliError("shape", f"dimensions must be positive integers, got {shape}")
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


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
    except (TypeError, ValueError):
        raise InitcliError(param, f"must be a number, got {value!r}") from None
    if not math.isfinite(number) or (nonnegative and number < 0):
        kind = "a finite number ≥ 0" if nonnegative else "a finite number"
        raise InitcliError(param, f"must be {kind}, got {value!r}")
    return number


@dataclass(frozen=True)
class Init:
    """A scheme with every argument resolved: what `sample_weights` draws from.

    `mode` and `distribution` are the effective ones (the preset's unless overridden).
    `gain` multiplies the weights of every scheme, i.e. the std (scale = gain²).
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

    @property
    def name(self) -> str:
        return self.scheme.name

    @property
    def scale(self) -> float:
        """The variance-scaling `scale` of the preset, slope-corrected for He."""
        scale = self.scheme.scale
        if self.scheme.slope_corrected and self.activation == "leaky-relu":
            scale /= 1 + self.negative_slope**2  # He et al. 2015, eq. 15 with slope a
        return scale

    def expected_std(self, shape: Sequence[int]) -> float:
        """The std the scheme's formula gives for a tensor of this shape (torch layout)."""
        fan_in, fan_out = compute_fans(shape)
        kind = self.scheme.kind
        if kind in ("zeros", "constant"):
            return 0.0
        if kind in ("orthogonal", "lsuv"):  # lsuv starts orthogonal; its scale comes from the data
            rows = int(shape[0])
            cols = math.prod(int(d) for d in shape) // rows
            # the min(rows, cols) orthonormal vectors have unit norm: mean square 1/max(rows, cols)
            return self.gain / math.sqrt(max(rows, cols))
        if kind == "delta-orthogonal":
            taps = math.prod(int(d) for d in shape[2:])
            return self.gain / math.sqrt(max(int(shape[0]), int(shape[1])) * taps)
        if kind == "identity":
            return self.gain * math.sqrt(min(shape[0], shape[1]) / (shape[0] * shape[1]))
        if kind == "fixed":
            base = self.std if self.scheme.distribution == "normal" else self.limit / math.sqrt(3)
            return self.gain * base
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
        return self.gain * math.sqrt(self.scale / n)

    def expected_mean(self) -> float:
        return self.gain * self.value if self.scheme.kind == "constant" else 0.0

    def bound(self, shape: Sequence[int]) -> float | None:
        """The largest |W| the distribution allows: the uniform limit or the truncation point."""
        if self.scheme.kind in ("zeros", "constant"):
            return abs(self.expected_mean())
        if self.scheme.kind in ("orthogonal", "lsuv", "delta-orthogonal", "identity"):
            return self.gain
        std = self.expected_std(shape)
        if self.distribution == "uniform":
            return math.sqrt(3) * std
        if self.distribution == "truncated-normal":
            return TRUNCATION_BOUND * std / TRUNCATED_NORMAL_STD
        return None

    def density(self, shape: Sequence[int]):
        """The probability density the weights are drawn from, as a function of w, or None
        where there is none to draw (zeros, constant, identity, delta-orthogonal). Orthogonal
        entries are near-Gaussian at this std for large matrices."""
        kind = self.scheme.kind
        if kind in ("zeros", "constant", "identity", "delta-orthogonal"):
            return None
        std = self.expected_std(shape)
        if std == 0:
            return None
        if kind in ("orthogonal", "lsuv") or self.distribution == "normal":
            return lambda w: math.exp(-0.5 * (w / std) ** 2) / (std * math.sqrt(2 * math.pi))
        if self.distribution == "uniform":
            limit = math.sqrt(3) * std
            return lambda w: 1 / (2 * limit) if abs(w) <= limit else 0.0
        sigma = std / TRUNCATED_NORMAL_STD  # the normal before truncation to ±2σ
        mass = math.erf(TRUNCATION_BOUND / math.sqrt(2))
        return lambda w: (math.exp(-0.5 * (w / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi) * mass)
                          if abs(w) <= TRUNCATION_BOUND * sigma else 0.0)

    def sample(self, shape: Sequence[int], rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
        """Draw a tensor of `shape` (torch layout). Random draws are made at float32 precision
        whatever `dtype` is, so float32 and float64 runs with one seed hold the same weights."""
        shape = tuple(int(d) for d in shape)
        kind = self.scheme.kind
        if kind == "zeros":
            return np.zeros(shape, dtype=dtype)
        if kind == "constant":
            return np.full(shape, self.gain * self.value, dtype=dtype)
        if kind in ("orthogonal", "lsuv"):
            return (self.gain * _orthogonal(shape, rng)).astype(dtype)
        if kind == "delta-orthogonal":
            weights = np.zeros(shape, dtype=dtype)
            centre = (slice(None), slice(None)) + tuple(d // 2 for d in shape[2:])
            weights[centre] = self.gain * _orthogonal(shape[:2], rng)
            return weights
        if kind == "identity":
            if len(shape) != 2:
                raise InitcliError("shape", f"identity needs a 2-D shape, got {shape}; "
                                            "for conv kernels use delta-orthogonal")
            return (self.gain * np.eye(shape[0], shape[1])).astype(dtype)
        std = self.expected_std(shape)
        if self.distribution == "normal":
            weights = gaussian(rng, shape)
            weights *= np.float32(std)
        elif self.distribution == "uniform":
            limit = math.sqrt(3) * std
            weights = rng.random(shape, dtype=np.float32)
            weights *= np.float32(2 * limit)
            weights -= np.float32(limit)
        else:
            weights = _truncated_standard_normal(shape, rng)
            weights *= np.float32(std / TRUNCATED_NORMAL_STD)
        return weights.astype(dtype, copy=False)

    def params(self) -> dict:
        """The arguments that reproduce this init (for JSON output and saved files)."""
        out = {"scheme": self.name, "gain": self.gain, "mode": self.mode, "distribution": self.distribution,
               "activation": self.activation, "negative_slope": self.negative_slope}
        if self.scheme.kind == "constant":
            out["value"] = self.value
        if self.scheme.kind == "fixed":
            out["std" if self.scheme.distribution == "normal" else "limit"] = (
                self.std if self.scheme.distribution == "normal" else self.limit)
        return out


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


def make_init(
    scheme: str | Scheme = "he-normal",
    *,
    gain: float = 1.0,
    mode: str | None = None,
    distribution: str | None = None,
    activation: str = "relu",
    negative_slope: float = DEFAULT_NEGATIVE_SLOPE,
    value: float = 0.5,
    std: float = 1.0,
    limit: float = 1.0,
) -> Init:
    """Resolve a scheme name and its options into an `Init`, checking every argument."""
    preset = scheme if isinstance(scheme, Scheme) else get_scheme(scheme)
    act = get_activation(activation, negative_slope)
    eff_mode = preset.mode if mode is None else _canonical(mode, FAN_MODES, "mode")
    eff_distribution = (preset.distribution if distribution is None
                        else _canonical(distribution, DISTRIBUTIONS, "distribution"))
    return Init(
        scheme=preset,
        gain=check_number("gain", gain),
        mode=eff_mode,
        distribution=eff_distribution,
        activation=act.name,
        negative_slope=check_number("negative_slope", negative_slope, nonnegative=False),
        value=check_number("value", value, nonnegative=False),
        std=check_number("std", std),
        limit=check_number("limit", limit),
    )


def ignored_options(scheme: str, *, mode: str | None = None, distribution: str | None = None) -> list[str]:
    """The options given that `scheme` does not use: --mode only means something to the
    variance-scaling presets, --distribution also to normal and uniform."""
    kind = get_scheme(scheme).kind
    ignored = []
    if mode is not None and kind != "scaling":
        ignored.append("--mode")
    if distribution is not None and kind not in ("scaling", "fixed"):
        ignored.append("--distribution")
    return ignored


def scheme_table() -> list[dict]:
    """One record per scheme, for `initcli schemes`."""
    return [
        {
            "name": s.name,
            "aliases": ", ".join(s.aliases),
            "distribution": s.distribution if s.kind in ("scaling", "fixed") else s.kind,
            "formula": s.formula,
            "mode": s.mode if s.kind == "scaling" else "",
            "scale": s.scale if s.kind == "scaling" else None,
            "designed_for": s.designed_for,
            "reference": s.reference,
        }
        for s in SCHEMES
    ]


