"""Chains of layers whose data flow the names give (a Sequential's consecutive Linear layers):
the mean-field forward factor of each under an activation, and `propagate_chain`, which runs the
`propagate` engine through the longest one."""

from __future__ import annotations

import math
import os

from .readers import open_source
from .records import Chain, ChainLayer, InspectResult, TensorReport
from .roles import module_parts


def _chain_slot(name: str) -> tuple[str, str, int] | None:
    """(parent, stem, index) of a Sequential-style layer: 'mlp.3.weight' -> ('mlp', '', 3),
    'mlp.fc2.weight' -> ('mlp', 'fc', 2). Other names (q/k/v, up/down projections) have no
    known data flow."""
    import re

    module = module_parts(name)
    if not module or not name.endswith(".weight"):
        return None
    found = re.fullmatch(r"([a-z_]*?)_?(\d+)", module[-1])
    if not found:
        return None
    return ".".join(module[:-1]), found.group(1), int(found.group(2))


def _find_chains(reports, evidence) -> list[list[tuple[TensorReport, float]]]:
    """Runs of 2-D linear matrices where the data flow is known: consecutive layers of one
    Sequential-style prefix (mlp.0, mlp.2 …; fc1, fc2 …), each one's fan_in the previous one's
    fan_out. Attention's parallel projections and layers across a residual add have no such
    names and are never chained."""
    groups: dict = {}
    for r, e in zip(reports, evidence):
        if r.role != "linear" or e.stats is None or not e.stats.used or not e.stats.finite or r.fan_in is None:
            continue
        slot = _chain_slot(r.name)
        if slot is None:
            continue
        weight_var = e.stats.std * e.stats.std + e.stats.mean * e.stats.mean  # floats: inf, never OverflowError
        groups.setdefault(slot[:2], []).append((slot[2], r, weight_var))
    chains = []
    for _, members in sorted(groups.items()):
        members.sort(key=lambda item: item[0])
        current: list = []
        for _, r, v in members:
            if current and current[-1][0].fan_out != r.fan_in:
                if len(current) >= 2:
                    chains.append(current)
                current = []
            current.append((r, v))
        if len(current) >= 2:
            chains.append(current)
    return chains


def _chain(group, act, act_reason: str = "") -> Chain:
    from ..theory import mean_field, phi_sq

    sizes = [group[0][0].fan_in] + [r.fan_out for r, _ in group]
    weight_vars = [v for _, v in group]
    # the chain is fed as if by a layer before it at q = 1, so that every layer's factor
    # q_l/q_{l−1} is the same map (σ_w²/2 under relu)
    theory = mean_field(act, weight_vars, sizes, input_second_moment=phi_sq(act, 1.0))
    previous = 1.0
    layers = []
    for (r, v), t in zip(group, theory):
        factor = t.preact_var / previous if previous > 0 else 0.0
        layers.append(ChainLayer(r.name, r.fan_in, r.fan_out, v, r.fan_in * v, factor, t.chi))
        previous = t.preact_var
    product = theory[-1].preact_var
    factors = [layer.forward_factor for layer in layers]
    if all(0 < f < math.inf for f in factors):
        mean_factor = math.exp(min(sum(math.log(f) for f in factors) / len(factors), 709.0))
    else:
        mean_factor = math.inf if any(f == math.inf for f in factors) else math.nan
    sigma = [layer.sigma_w2 for layer in layers]
    var_text = _var_text(sigma)
    why = f" ({act_reason})" if act_reason else ""
    head = (f"these {len(layers)} Linear layers ({layers[0].name} … {layers[-1].name}) at {var_text} under "
            f"{act.name}{why}")
    if not product > 0:
        text = f"{head} stop the forward signal (a zero matrix): ×{product:.3g} over the chain"
    else:
        verb = "keep" if 0.9 <= mean_factor <= 1.1 else ("grow" if mean_factor > 1 else "shrink")
        text = f"{head} {verb} the forward variance ×{_factor(mean_factor)} per layer: ×{product:.3g} over the chain"
    return Chain(tuple(layers), act.name, product, text)


def file_chains(reports, evidence, act, act_reason: str = "") -> tuple[Chain, ...]:
    """Every chain the names give, with its mean-field factors under `act`."""
    return tuple(_chain(group, act, act_reason) for group in _find_chains(reports, evidence))


def _var_text(sigma_w2: list[float]) -> str:
    """'Var ≈ 1/(3·fan_in)' when σ_w² = fan_in·Var is near a simple fraction for every layer."""
    lo, hi = min(sigma_w2), max(sigma_w2)
    mid = math.sqrt(lo * hi)
    for value, text in ((1 / 3, "1/(3·fan_in)"), (1.0, "1/fan_in"), (2.0, "2/fan_in")):
        if abs(lo / value - 1) < 0.1 and abs(hi / value - 1) < 0.1:
            return f"Var ≈ {text}"
    return f"σ_w² = fan_in·Var ≈ {mid:.3g}" if lo > 0 and hi / lo < 1.2 else \
        f"σ_w² = fan_in·Var from {lo:.3g} to {hi:.3g}"


def _factor(value: float) -> str:
    if not math.isfinite(value):
        return "nan"
    if value < 1 and 1 / value < 1000:
        return f"1/{1 / value:.3g}"
    return f"{value:.3g}"


PROPAGATE_BATCH = 512


def propagate_chain(path: str | os.PathLike, result: InspectResult, *, activation: str | None = None,
                    negative_slope: float = 0.01, batch: int = PROPAGATE_BATCH, seed: int = 0):
    """Push `batch` random N(0, 1) inputs through the longest chain `inspect` found (its
    matrices as stored, biases left out), backpropagate a N(0, 1) cotangent, and measure every
    layer with the `propagate` engine under `activation` (None: the chain's, the one the
    summary names). Returns (chain, layer records) or None without a chain."""
    import numpy as np

    from ..activations import get_activation
    from ..engine import Stack, seed_streams
    from ..propagation import measure
    from ..schemes import gaussian

    if not result.summary.chains:
        return None
    chain = max(result.summary.chains, key=lambda c: len(c.layers))
    layouts = {t.name: t.layout for t in result.tensors}
    weights = []
    with open_source(path) as source:
        for layer in chain.layers:
            w = np.asarray(source.read(layer.name), dtype=np.float32)
            weights.append(np.ascontiguousarray(w.T if layouts[layer.name] == "keras" else w))  # to (out, in)
    stack = Stack(tuple(weights), tuple(np.zeros(w.shape[0], np.float32) for w in weights))
    streams = seed_streams(seed)
    x = gaussian(streams["inputs"], (batch, stack.sizes[0]))
    cotangent = gaussian(streams["cotangent"], (batch, stack.sizes[-1]))
    act = get_activation(chain.activation if activation is None else activation, negative_slope)
    layers, _, _ = measure(stack, act, x, cotangent)
    return chain, layers
