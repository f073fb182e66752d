"""Width parametrizations (`--param sp|ntk|mup`): the abc-parametrizations of Yang & Hu 2021
(Tensor Programs IV, "Feature Learning in Infinite-Width Neural Networks", §3 and Table 1)
in the per-layer form of Yang et al. 2022 (Tensor Programs V, "Tuning Large Neural Networks
via Zero-Shot Hyperparameter Transfer", Table 3).

A layer's stored parameter w is drawn with the scheme's variance times n^variance, the layer
computes h = n^multiplier · (a w^T) + b, and its learning rate is the run's lr times
n^sgd_lr or n^adam_lr. n is the layer's width multiplier: fan_out/base_width for the input
layer (its fan_in, the data's dimension, does not grow with width) and fan_in/base_width for
the hidden and readout layers. With base_width 1 (the default) n is the fan itself, as the
tables print it; mup's package takes n relative to a base model's width, so that µP equals
SP there.

Exponents of n (relative to the scheme's variance, which is SP's 1/fan_in for He, Xavier and
LeCun):

    param  layer    multiplier  variance  sgd_lr  adam_lr
    sp     all           0          0        0        0
    ntk    input         0          0        0        0     (fan_in fixed: a_1 = b_1 = 0)
    ntk    hidden     −1/2         +1        0        0     (w ~ N(0, σ²), W = w/√n)
    ntk    readout    −1/2         +1        0        0
    mup    input         0          0       +1        0     (Table 3: SGD LR η·fan_out)
    mup    hidden        0          0        0       −1     (Adam LR η/fan_in)
    mup    readout       0         −1       −1       −1     (init var 1/fan_in², LR η/fan_in)

Biases share the input layer's column in Table 3 ("input weights & all biases"): their
learning rate scales with the layer's fan_out as an input layer's does. NTK's learning rates
are unscaled (c = 0 in Yang & Hu's table); Adam under NTK has no table, so it is unscaled
too. The abc-symmetry (a, b, c) → (a+θ, b−θ, c−2θ) for SGD, (a+θ, b−θ, c−θ) for Adam
(Yang & Hu 2021 §3.1; TP5 Table 8/9) maps this µP onto mup's package form (readout
multiplier 1/n, Adam LR of the readout unscaled): the same network and training.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import InitcliError, suggest

PARAMS = ("sp", "ntk", "mup")
ROLES = ("input", "hidden", "readout")
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class Exponents:
    """Exponents of the width multiplier n for one layer role."""

    multiplier: float = 0.0
    variance: float = 0.0  # on the scheme's variance
    sgd_lr: float = 0.0
    adam_lr: float = 0.0

    def lr(self, optimizer: str) -> float:
        return self.sgd_lr if optimizer == "sgd" else self.adam_lr


_ZERO = Exponents()
_NTK = Exponents(multiplier=-0.5, variance=1.0)
TABLE: dict[str, dict[str, Exponents]] = {
    "sp": {"input": _ZERO, "hidden": _ZERO, "readout": _ZERO},
    "ntk": {"input": _ZERO, "hidden": _NTK, "readout": _NTK},
    "mup": {"input": Exponents(sgd_lr=1.0), "hidden": Exponents(adam_lr=-1.0),
            "readout": Exponents(variance=-1.0, sgd_lr=-1.0, adam_lr=-1.0)},
}
CITATIONS = {
    "sp": "standard parametrization: the scheme's variance, no multipliers, one learning rate",
    "ntk": "Jacot et al. 2018; Yang & Hu 2021, Table 1 (NTP)",
    "mup": "Yang & Hu 2021 (µP); Yang et al. 2022, Table 3",
}


def check_param(name) -> str:
    key = "sp" if name is None else str(name).strip().lower().replace("µ", "mu")
    if key not in PARAMS:
        raise InitcliError("param", f"unknown parametrization '{name}'{suggest(key, list(PARAMS))}; "
                                    f"choose from {', '.join(PARAMS)}")
    return key


def check_base_width(base_width) -> float:
    import math

    try:
        value = math.nan if isinstance(base_width, bool) else float(base_width)
    except (TypeError, ValueError, OverflowError):
        value = math.nan
    # within [1, 2**20] every factor n^±1 of a width up to 2**20 stays inside float32's range
    if not (math.isfinite(value) and 1 <= value <= 2**20):
        raise InitcliError("base_width", f"must be a number from 1 to 2**20, got {str(base_width)[:40]}")
    return value


def roles(depth: int) -> tuple[str, ...]:
    """Layer 1 is the input layer, layer `depth` the readout, the rest hidden; a one-layer
    stack is its own readout (its fan_in is the data's)."""
    if depth == 1:
        return ("readout",)
    return ("input",) + ("hidden",) * (depth - 2) + ("readout",)


@dataclass(frozen=True)
class LayerScaling:
    """One layer's factors: on its output, on its stored weights' std, on its learning rates."""

    role: str
    width_mult: float
    multiplier: float
    std_factor: float
    sgd_lr: float
    adam_lr: float
    bias_sgd_lr: float  # biases take the input column of Table 3, with this layer's fan_out
    bias_adam_lr: float

    @property
    def effective_variance_factor(self) -> float:
        """What the function at init sees: (multiplier · std factor)² on the scheme's variance."""
        return (self.multiplier * self.std_factor) ** 2

    def lr(self, optimizer: str) -> float:
        return self.sgd_lr if optimizer == "sgd" else self.adam_lr

    def bias_lr(self, optimizer: str) -> float:
        return self.bias_sgd_lr if optimizer == "sgd" else self.bias_adam_lr


@dataclass(frozen=True)
class Parametrization:
    name: str
    base_width: float
    layers: tuple[LayerScaling, ...]

    @property
    def plain(self) -> bool:
        """SP: nothing to apply, so runs stay bit-identical to runs without --param."""
        return self.name == "sp"

    @property
    def multipliers(self) -> tuple[float, ...] | None:
        return None if self.plain else tuple(layer.multiplier for layer in self.layers)

    def params(self) -> dict:
        out = {"param": self.name}
        if not self.plain:
            out |= {"base_width": self.base_width,
                    "multipliers": [layer.multiplier for layer in self.layers],
                    "weight_std_factors": [layer.std_factor for layer in self.layers],
                    "lr_factors_sgd": [layer.sgd_lr for layer in self.layers],
                    "lr_factors_adam": [layer.adam_lr for layer in self.layers]}
        return out


def _power(n: float, exponent: float) -> float:
    return 1.0 if exponent == 0 else n ** exponent


def parametrize(name, sizes, base_width: float = 1.0) -> Parametrization:
    """The factors of each layer of a stack of `sizes` (n_0, n_1, …, n_L) under `name`."""
    key = check_param(name)
    base = check_base_width(base_width)
    sizes = [int(s) for s in sizes]
    table = TABLE[key]
    layers = []
    for role, n_in, n_out in zip(roles(len(sizes) - 1), sizes[:-1], sizes[1:]):
        n = (n_out if role == "input" else n_in) / base
        e = table[role]
        bias_n, bias_e = n_out / base, table["input"]
        layers.append(LayerScaling(role, n, _power(n, e.multiplier), _power(n, e.variance / 2), _power(n, e.sgd_lr),
                                   _power(n, e.adam_lr), _power(bias_n, bias_e.sgd_lr),
                                   _power(bias_n, bias_e.adam_lr)))
    return Parametrization(key, base, tuple(layers))


def param_table() -> list[dict]:
    """The exponents, one row per (param, layer role): for `initcli schemes` and the README."""
    return [{"param": name, "layer": role, "multiplier": e.multiplier, "variance": e.variance,
             "sgd_lr": e.sgd_lr, "adam_lr": e.adam_lr, "source": CITATIONS[name]}
            for name, rows in TABLE.items() for role, e in rows.items()]


def predicted_slope(param: str, role: str, step: int, *, readout_zero: bool = False) -> float | None:
    """The exponent of width that a layer's mean |x| should have, where theory states one.
    At init the scheme's variance keeps every layer O(1) (exponent 0) under SP and NTK (the
    same function at init); under µP the readout drawn with variance 1/fan_in² is O(n^−1/2),
    and 0 with a zero readout (no exponent: nothing to fit). After a step µP keeps every
    layer and the output O(1): exponent 0 (Yang & Hu 2021, Theorem 3.3; Yang et al. 2022,
    Table 3). None where the exponent depends on the learning rate's size (SP and NTK after
    a step, whose growth is what a coord check shows)."""
    if param == "mup" and role == "readout" and step == 0:
        return None if readout_zero else -0.5
    if role == "readout" and readout_zero and step == 0:
        return None
    if step == 0 or param == "mup":
        return 0.0
    return None
