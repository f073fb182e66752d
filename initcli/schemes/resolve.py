"""`make_init`: a scheme name and its options resolved into a checked `Init` (float32's range
included); the reverse from recorded params; and which given options a scheme ignores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..activations import DEFAULT_NEGATIVE_SLOPE, get_activation
from ..errors import InitcliError
from .core import (
    DEFAULT_SPARSITY,
    DISTRIBUTIONS,
    FAN_MODES,
    FLOAT32_MAX,
    as_axes,
    canonical_choice,
    check_number,
)
from .init import Init
from .kinds import KINDS
from .parsing import get_scheme, parse_scheme_spec
from .presets import Scheme


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
    eff_mode = preset.mode if mode is None or not kind.variance_scaling else canonical_choice(mode, FAN_MODES, "mode")
    if distribution is not None:
        distribution = canonical_choice(distribution, DISTRIBUTIONS, "distribution")
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
        in_axis=(1,) if in_axis is None else as_axes("in_axis", in_axis),
        out_axis=(0,) if out_axis is None else as_axes("out_axis", out_axis),
        batch_axis=() if batch_axis is None else as_axes("batch_axis", batch_axis),
    )
    if resolved["sparsity"] > 1:
        raise InitcliError("sparsity", f"must be a fraction between 0 and 1, got {sparsity!r}")
    if isinstance(resolved["groups"], bool) or not isinstance(resolved["groups"], (int, np.integer)) \
            or resolved["groups"] < 1:
        raise InitcliError("groups", f"must be a positive integer, got {groups!r}")
    init = Init(scheme=preset, mode=eff_mode, distribution=eff_distribution, activation=act.name,
                negative_slope=negative_slope, **resolved)
    if "low" in kind.range_options and (low is not None or high is not None):  # uniform's or trunc-normal's
        lo, hi = init.interval()
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
