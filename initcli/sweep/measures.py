"""One point of a sweep measured: its propagate run's summary, its depth scales, theory's
columns and, with training, its final loss and score.

Depth scales measured per point (Schoenholz et al. 2017's definitions):
- xi_grad: 1/|slope| of a least-squares line through ln grad_var over the deeper half of the
  layers (where q has settled near q*, as `compare` measures its rates); inf where the
  slope is exactly 0.
- xi_q, xi_c: 1/|slope| of ln|x_l − x*| for x = preact_var, input_cosine, fitted over the
  layers from the first within half the initial distance of x* (the linear regime of the
  map) to the last above the noise floor. x* is exact where theory knows it (q* = 0; c* = 1
  in the ordered phase), else the mean over the deeper half of the stack, and then the floor
  is 3 standard deviations of the deepest quarter. nan where fewer than 2 layers are in the
  window; inf where the distance does not shrink.

With training, each point also trains its MLP — `depth` hidden layers of `width` units with
the point's weights (σ_w as the LeCun-normal gain, or the scheme), read-out included — on a
generated task with `training.train_one`, seeded with the point's run_seed, and adds
`final_loss` and the final score (`final_accuracy`, or `final_r2` for regression). Its biases
start at zero, as `initcli train`'s do: σ_b acts on the propagate columns only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from functools import lru_cache

import numpy as np

from .grid import SUMMARY, THEORY, Point


def propagate_call(point: Point, options: dict) -> dict:
    """propagate's keywords for a point; a residual-init preset implies a residual stack."""
    scheme, extra = (point.scheme, {}) if point.scheme is not None else ("lecun-normal", {"gain": point.sigma_w})
    if point.residual:
        extra |= {"residual": True, "residual_init": point.residual_init}
    if point.param is not None:
        extra["param"] = point.param
    return {"scheme": scheme, "activation": point.activation, "depth": point.depth, "width": point.width,
            "batch": point.batch, "bias_std": point.sigma_b, "seed": point.run_seed, "theory": False,
            **options.get("propagate", {}), **extra}


def train_call(point: Point, options: dict) -> dict:
    """training.train_one's keywords for a point: its weights, shape and seed, zero biases."""
    train = options["train"]
    scheme, init_options = (point.scheme, {}) if point.scheme is not None else ("lecun-normal", {"gain": point.sigma_w})
    return {"scheme": scheme, "activation": point.activation, "task": train["task"], "samples": train["samples"],
            "classes": train["classes"], "noise": train["noise"], "hidden_widths": (point.width,) * point.depth,
            "optimizer": train["optimizer"], "lr": train["lr"], "epochs": train["epochs"], "batch": train["batch"],
            "target": 1.0, "seed": point.run_seed, "dtype": options.get("propagate", {}).get("dtype", "float32"),
            "init_options": init_options}


def train_bytes(point: Point, options: dict) -> int:
    """Peak memory of a point's training, as `training.train` estimates it: parameters with
    their gradients and Adam's moments, then per sample the activations, φ' and a gradient of
    every layer; plus the (loss, score) curve."""
    from ..tasks import FEATURES
    from ..training import CURVE_POINT_BYTES

    train = options["train"]
    itemsize = np.dtype(options.get("propagate", {}).get("dtype", "float32")).itemsize
    classes = 1 if train["task"] == "regression" else (train["classes"] or (3 if train["task"] == "spiral" else 2))
    widths = [FEATURES, *([point.width] * point.depth), classes]
    return (sum(a * b for a, b in zip(widths[:-1], widths[1:])) * itemsize * 4
            + train["samples"] * sum(widths) * (itemsize * 3 + 8) + train["epochs"] * CURVE_POINT_BYTES)


@lru_cache(maxsize=4096)
def theory_columns(activation: str, sigma_w: float, sigma_b: float) -> dict:
    """Mean-field theory's columns (and c*) for a plain MLP of this activation, σ_w and σ_b, remembered."""
    from ..activations import get_activation
    from ..theory import phase

    with np.errstate(all="ignore"):
        p = phase(get_activation(activation), sigma_w, sigma_b)
    return {"theory_q_star": p.q_star, "theory_chi": p.chi, "theory_xi_c": p.xi_c, "theory_xi_q": p.xi_q,
            "theory_xi_grad": p.xi_grad, "theory_phase": p.phase, "c_star": p.c_star}


def effective_sigma_w(point: Point, negative_slope: float | None = None) -> float:
    """σ_w = √fan_in·std of the point's weights; nan where the weights are not i.i.d. zero-mean
    (constant, identity) or scaled by data (lsuv)."""
    if point.scheme is None:
        return point.sigma_w
    from ..schemes import make_init

    init = make_init(point.scheme, activation=point.activation)
    if init.kind in ("zeros", "constant", "identity", "dirac", "lsuv", "fixed"):
        return math.nan
    return init.expected_std((point.width, point.width)) * math.sqrt(point.width)


def _slope(layers: Sequence[int], values: Sequence[float]) -> float:
    x = np.asarray(layers, dtype=np.float64)
    y = np.log(np.asarray(values, dtype=np.float64))
    x = x - x.mean()
    return float(np.dot(x, y - y.mean()) / np.dot(x, x))


def _scale(slope: float) -> float:
    if math.isnan(slope):
        return math.nan
    return math.inf if slope == 0 else 1 / abs(slope)


def gradient_scale(grad_var: Sequence[float]) -> float:
    """ξ_grad: 1/|slope of ln grad_var per layer| over the deeper half of the stack."""
    depth = len(grad_var)
    start = depth // 2 if depth >= 4 else 0
    pairs = [(i + 1, v) for i, v in enumerate(grad_var) if i >= start and math.isfinite(v) and v > 0]
    if len(pairs) < 2:
        return math.nan
    return _scale(_slope(*zip(*pairs)))


def approach_scale(values: Sequence[float], target: float | None, eps: float) -> float:
    """ξ of the approach of a per-layer quantity to its fixed point (see the module docstring).
    `target` None: the fixed point is measured, the mean over the deeper half."""
    values = np.asarray(values, dtype=np.float64)
    depth = len(values)
    if depth < 3 or not np.all(np.isfinite(values)):
        return math.nan
    if target is None:
        target = float(np.mean(values[depth // 2:]))
        tail = values[depth - max(2, depth // 4):]
        floor = 3 * float(np.std(tail, ddof=1))
    else:
        floor = 0.0
    floor = max(floor, 8 * eps * max(1.0, abs(target)))
    distance = np.abs(values - target)
    first = int(np.argmax(distance <= distance[0] / 2)) if np.any(distance <= distance[0] / 2) else depth
    layers = []
    for i in range(first, depth):
        if distance[i] <= floor:
            break
        layers.append(i)
    if len(layers) < 2:
        return math.nan
    slope = _slope([i + 1 for i in layers], distance[layers])
    return math.inf if slope >= 0 else 1 / -slope


def measure_point(point: Point, options: dict) -> dict:
    """The row of one point (without error handling: see `run_point`)."""
    from ..compare import compare_row
    from ..propagation import propagate

    call = propagate_call(point, options)
    result = propagate(**call)
    summary = asdict(compare_row(result))
    # mean-field theory here is the plain MLP's: none for residual or normalised stacks
    plain = not call.get("residual") and str(call.get("norm") or "none").lower() == "none"
    sigma_w = effective_sigma_w(point) if plain else math.nan
    theory = (theory_columns(point.activation, float(sigma_w), float(point.sigma_b)) if math.isfinite(sigma_w)
              else {**{name: math.nan for name in THEORY}, "theory_phase": "", "c_star": math.nan})
    eps = float(np.finfo(result.params["dtype"]).eps)
    layers = result.layers
    q_target = 0.0 if theory["theory_q_star"] == 0 else None
    c_target = 1.0 if theory["c_star"] == 1.0 else None
    row = {**{name: summary[name] for name in SUMMARY},
           "xi_q": approach_scale([layer.preact_var for layer in layers], q_target, eps),
           "xi_c": approach_scale([layer.input_cosine for layer in layers], c_target, eps),
           "xi_grad": gradient_scale([layer.grad_var for layer in layers]),
           **{name: theory[name] for name in THEORY}}
    if "train" in options:
        from ..training import train_one

        trained = train_one(**train_call(point, options)).row
        row["final_loss"] = trained.final_loss
        row[f"final_{options['train']['metric']}"] = trained.final_score
    return row
