"""A --scheme value to its preset: a name, an alias (`xavier`, `kaiming`…) or a spelling with
options, `NAME(key=value,...)`, as `inspect` prints its readings.
"""

from __future__ import annotations

import math
import re

from ..errors import InitcliError, suggest
from .presets import SCHEME_NAMES, SCHEMES, Scheme, gpt2_residual_std

_BY_NAME = {s.name: s for s in SCHEMES}
_ALIASES = {alias: s.name for s in SCHEMES for alias in s.aliases}


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
