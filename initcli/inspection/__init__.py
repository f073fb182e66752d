"""Audit the initialisation of a weight file, tensor by tensor, without running its code.

    >>> from initcli.inspection import inspect
    >>> result = inspect("model.safetensors")
    >>> [(t.name, t.match, t.verdict) for t in result.tensors]
    >>> result.summary.lines

One `TensorReport` per tensor (the public columns `COLUMNS`) and a `Summary`: how many
tensors follow each scheme, the suspicious ones, and the mean-field forward factor of each
chain of connecting 2-D matrices under an activation. Readers (`readers`) yield one tensor at a
time; statistics and matching (`matching`) never know the format.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ..errors import InitcliError
from . import matching
from .readers import Source, natural_key, open_source

COLUMNS = ("name", "role", "shape", "layout", "fan_in", "fan_out", "mean", "std", "kurtosis", "max_abs_z",
           "zero_frac", "match", "expected_std", "std_ratio", "p_value", "verdict", "note")
LAYOUTS = ("auto", "torch", "keras")
VERDICTS = ("ok", "unusual", "suspicious")
P_VALUE_UNUSUAL = 1e-6  # a KS p-value below this: the matched family does not describe the values
FAR_RATIO = 2.0  # a std this far (either way) from the nearest scheme is suspicious, nearer unusual
EMBEDDING_UNIT = 0.5  # an embedding at std above this beside matrices at 0.02-like stds is flagged
SMALL_STD = 0.1


@dataclass(frozen=True)
class TensorReport:
    name: str
    role: str
    shape: str
    layout: str
    fan_in: int | None
    fan_out: int | None
    mean: float | None
    std: float | None
    kurtosis: float | None
    max_abs_z: float | None
    zero_frac: float | None
    match: str
    expected_std: float | None
    std_ratio: float | None
    p_value: float | None
    verdict: str
    note: str

    def row(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ChainLayer:
    name: str
    fan_in: int
    fan_out: int
    weight_var: float  # mean square of the weights
    sigma_w2: float  # fan_in · weight_var
    forward_factor: float  # q_l / q_{l−1} under the activation (mean field)
    chi: float  # the backward factor σ'_w²·E[φ'(h)²]


@dataclass(frozen=True)
class Chain:
    layers: tuple[ChainLayer, ...]
    activation: str
    forward_product: float  # q_L / q_0
    text: str


@dataclass(frozen=True)
class Summary:
    counts: tuple[tuple[str, int], ...]  # match (first reading) -> tensors, most first
    suspicious: tuple[tuple[str, str], ...]  # (name, note)
    unusual: tuple[tuple[str, str], ...]
    chains: tuple[Chain, ...]
    lines: tuple[str, ...]  # the summary in words

    def document(self) -> dict:
        return {"counts": dict(self.counts), "suspicious": [{"name": n, "note": t} for n, t in self.suspicious],
                "unusual": [{"name": n, "note": t} for n, t in self.unusual],
                "chains": [{"activation": c.activation, "forward_product": c.forward_product, "text": c.text,
                            "layers": [asdict(layer) for layer in c.layers]} for c in self.chains],
                "lines": list(self.lines)}


@dataclass(frozen=True)
class InspectResult:
    tensors: tuple[TensorReport, ...]
    summary: Summary
    params: dict
    columns: tuple[str, ...] = COLUMNS

    def rows(self) -> list[dict]:
        return [t.row() for t in self.tensors]


def inspect(path: str | os.PathLike | Source, *, layout: str = "auto", activation: str = "relu", negative_slope: float = 0.01,
            n_layer: int | None = None, progress: Callable[[int], None] | None = None) -> InspectResult:
    """Read every tensor of a weight file (.safetensors or a folder of shards, .npz/.npy,
    .pt/.pth/.bin state_dicts, .onnx) and say which init explains each.

    layout: torch (out, in, *kernel), keras (*kernel, in, out), or auto (each tensor read both
    ways, keeping the reading a scheme explains; where both do, the one most of the file's
    tensors need). activation: the one the mean-field chain summary assumes. n_layer: GPT-2's
    residual projections are 0.02/√(2·n_layer); inferred from the names when not given.
    `progress(k)` is called after each tensor with k = 1. `path` may also be an open
    `readers.Source` (left open).
    """
    from ..activations import get_activation

    if layout not in LAYOUTS:
        raise InitcliError("layout", f"must be one of {', '.join(LAYOUTS)}, got '{layout}'")
    act = get_activation(activation, negative_slope)
    if n_layer is not None and (isinstance(n_layer, bool) or not isinstance(n_layer, int) or n_layer < 1):
        raise InitcliError("n_layer", f"must be a positive integer, got {n_layer!r}")
    owned = not isinstance(path, Source)
    source = open_source(path) if owned else path
    try:
        evidence = _examine_all(source, layout, n_layer, progress)
        source_format, n_layer_used = source.format, n_layer or matching.infer_n_layer(e.name for e in source.entries)
    finally:
        if owned:
            source.close()
    path = source.path
    preferred = _preferred_layout(evidence, layout)
    reports = [_report(e, preferred) for e in evidence]
    reports = _file_level_notes(reports)
    summary = _summarise(reports, evidence, act)
    params = {"path": str(path), "format": source_format, "layout": layout, "preferred_layout": preferred,
              "activation": act.name, "n_layer": n_layer_used, "tensors": len(reports),
              "subsample": matching.SUBSAMPLE}
    if act.name == "leaky-relu":
        params["negative_slope"] = negative_slope
    return InspectResult(tuple(reports), summary, params)


def _examine_all(source: Source, layout: str, n_layer: int | None, progress) -> list[matching.Evidence]:
    entries = sorted(source.entries, key=lambda e: natural_key(e.name))
    roles = matching.assign_roles(entries)
    shapes = {e.name: e.shape for e in entries}
    if n_layer is None:
        n_layer = matching.infer_n_layer(shapes)
    layouts = ("torch", "keras") if layout == "auto" else (layout,)
    found = []
    for entry in entries:
        role = roles[entry.name]
        if entry.dtype == "object":  # an .npz member that only pickle could read: never read it
            e = matching.Evidence(entry.name, "other", entry.shape, entry.dtype, None)
            e.notes.append("object array: not read (it would need pickle, which initcli never runs)")
            found.append(e)
            continue
        array = source.read(entry.name)
        bias_fan = {lay: matching.bias_fan_in(entry.name, shapes, lay) for lay in layouts} if role == "bias" else {}
        if role == "bias" and not any(bias_fan.values()):
            bias_fan = {}
        found.append(matching.examine(entry.name, role, array, entry.dtype, layouts=_layouts_for(entry.shape, layouts),
                                      n_layer=n_layer, bias_fan=bias_fan))
        del array
        if progress is not None:
            progress(1)
    return found


def _layouts_for(shape, layouts):
    """Both readings only where they differ: a square matrix reads the same both ways."""
    if len(layouts) == 2 and len(shape) == 2 and shape[0] == shape[1]:
        return ("torch",)
    return layouts


def _preferred_layout(evidence, layout: str) -> str:
    """auto: the layout that the tensors explained in only one reading need most (torch on a tie)."""
    if layout != "auto":
        return layout
    votes = Counter()
    for e in evidence:
        explained = [lay for lay, r in e.readings.items() if r.matches]
        if len(explained) == 1 and len(e.readings) == 2:
            votes[explained[0]] += 1
    return "keras" if votes["keras"] > votes["torch"] else "torch"


def _choose(e: matching.Evidence, preferred: str) -> matching.Reading | None:
    if not e.readings:
        return None
    if preferred in e.readings and e.readings[preferred].matches:
        return e.readings[preferred]
    explained = [r for r in e.readings.values() if r.matches]
    if explained:
        return min(explained, key=lambda r: r.score)
    return e.readings.get(preferred) or next(iter(e.readings.values()))


def _shape_text(shape) -> str:
    return "x".join(map(str, shape)) if shape else "scalar"


def _report(e: matching.Evidence, preferred: str) -> TensorReport:
    s = e.stats
    notes = list(e.notes)
    reading = _choose(e, preferred)
    match, expected, ratio, p_value, verdict = "", None, None, None, "ok"
    layout = reading.layout if reading is not None else ""
    fan_in = fan_out = None
    if e.role in ("linear", "conv"):
        lay = layout or preferred
        fan_in, fan_out = matching.reading_fans(e.shape, lay)
        layout = lay
    elif e.role == "bias" and reading is not None:
        fan_in = reading.fan_in
    if s is None:  # non-float or empty
        verdict = "ok" if e.role == "other" else "unusual"
    elif e.constant is not None:
        c = e.constant
        match = "zeros" if c == 0 else ("ones" if c == 1 else f"constant(value={c:.6g})")
        if e.role in ("linear", "conv", "embedding"):
            verdict = "suspicious"
            notes.append("all zeros: never breaks symmetry" if c == 0 else
                         "a constant: every unit computes the same function, symmetry never breaks")
        elif e.role == "norm_scale" and c != 1:
            verdict = "unusual"
            notes.append(f"norm scale at {c:g}, not 1")
        elif e.role in ("bias", "norm_shift") and c != 0:
            verdict = "unusual"
            notes.append(f"a constant {c:g}, not zero")
    elif reading is not None and reading.matches:
        match = "|".join(reading.matches)
        expected, p_value = reading.expected_std, reading.p_value
        ratio = s.std / expected if expected else None
        notes.extend(reading.notes)
        if len(reading.matches) > 1:
            notes.append(f"{len(reading.matches)} readings give this std and family")
        if p_value is not None and p_value < P_VALUE_UNUSUAL:
            verdict = "unusual"
            notes.append(f"KS test rejects {reading.matches[0]} (p = {p_value:.2g}): not drawn from it as is")
        if e.role == "norm_scale":
            verdict = "unusual"
            notes.append("norm scale is not 1")
    elif s.used and reading is not None:
        if reading.nearest_ratio is not None:
            ratio = reading.nearest_ratio
            far = ratio > FAR_RATIO or ratio < 1 / FAR_RATIO
            verdict = "suspicious" if far and e.role in ("linear", "conv", "embedding") else "unusual"
            notes.append(f"std {s.std:.4g} matches no scheme; nearest {reading.nearest} (std ratio {ratio:.3g})")
        else:
            verdict = "unusual"
            notes.append("matches no scheme")
    elif s.used and e.role == "norm_scale":
        verdict = "unusual"
        notes.append("norm scale is not 1")
    if s is not None and not s.finite:
        verdict = "suspicious"
    if s is not None and s.used and e.constant is None and s.max_abs_z > matching.outlier_threshold(s.n - s.nonfinite) \
            and not (reading is not None and reading.exact):
        verdict = "suspicious"
        notes.append(f"outliers: |w − mean| reaches {s.max_abs_z:.3g}σ")
    stat = (lambda v: None if s is None or not s.used or v is None or (isinstance(v, float) and math.isnan(v))
            else v)
    return TensorReport(
        name=e.name, role=e.role, shape=_shape_text(e.shape), layout=layout, fan_in=fan_in, fan_out=fan_out,
        mean=stat(s and s.mean), std=stat(s and s.std), kurtosis=stat(s and s.kurtosis),
        max_abs_z=stat(s and s.max_abs_z), zero_frac=stat(s and s.zero_frac), match=match, expected_std=expected,
        std_ratio=ratio, p_value=p_value, verdict=verdict, note="; ".join(notes))


def _file_level_notes(reports: list[TensorReport]) -> list[TensorReport]:
    """An embedding at std ~1 feeding a model whose matrices mostly follow the 0.02 convention
    (GPT-2/BERT): the embedding's init was skipped. Beside torch-default matrices N(0, 1) is
    simply nn.Embedding's default."""
    from dataclasses import replace

    matrices = [r for r in reports if r.role in ("linear", "conv") and r.std]
    fixed = [r for r in matrices if r.match.split("|")[0].startswith(("normal(std=0.02)", "gpt2-residual"))]
    if not matrices or 2 * len(fixed) < len(matrices):
        return reports
    stds = sorted(r.std for r in matrices)
    typical = stds[len(stds) // 2]
    out = []
    for r in reports:
        if r.role == "embedding" and r.std and r.std > EMBEDDING_UNIT and typical < SMALL_STD:
            note = f"embedding at std {r.std:.3g} feeds matrices at std ~{typical:.2g}"
            r = replace(r, verdict="suspicious", note="; ".join(filter(None, [r.note, note])))
        out.append(r)
    return out


# -- summary ----------------------------------------------------------------------------------------


def _summarise(reports: list[TensorReport], evidence, act) -> Summary:
    counts = Counter(r.match.split("|")[0] if r.match else "(no match)" for r in reports if r.role != "other"
                     or r.match)
    suspicious = tuple((r.name, r.note) for r in reports if r.verdict == "suspicious")
    unusual = tuple((r.name, r.note) for r in reports if r.verdict == "unusual")
    chains = tuple(_chain(group, act) for group in _find_chains(reports, evidence))
    lines = [f"{len(reports)} tensors: " + ", ".join(f"{n} {m}" for m, n in counts.most_common())]
    if suspicious:
        lines.append(f"{len(suspicious)} suspicious: " + "; ".join(f"{n} ({t})" for n, t in suspicious[:10])
                     + (" …" if len(suspicious) > 10 else ""))
    else:
        lines.append("nothing suspicious")
    lines.extend(c.text for c in chains)
    return Summary(tuple(counts.most_common()), suspicious, unusual, chains, tuple(lines))


def _find_chains(reports, evidence) -> list[list[tuple[TensorReport, float]]]:
    """Runs of 2-D linear matrices, in model order, each one's fan_in the previous one's fan_out."""
    chains, current = [], []
    for r, e in zip(reports, evidence):
        if r.role != "linear" or e.stats is None or not e.stats.used or not e.stats.finite or r.fan_in is None:
            if r.role in ("linear", "conv", "embedding"):
                if len(current) >= 2:
                    chains.append(current)
                current = []
            continue
        weight_var = e.stats.std * e.stats.std + e.stats.mean * e.stats.mean  # floats: inf, never OverflowError
        if current and current[-1][0].fan_out != r.fan_in:
            if len(current) >= 2:
                chains.append(current)
            current = []
        current.append((r, weight_var))
    if len(current) >= 2:
        chains.append(current)
    return chains


def _chain(group, act) -> Chain:
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
    head = f"these {len(layers)} Linear layers ({layers[0].name} … {layers[-1].name}) at {var_text} under {act.name}"
    if not product > 0:
        text = f"{head} stop the forward signal (a zero matrix): ×{product:.3g} over the chain"
    else:
        verb = "keep" if 0.9 <= mean_factor <= 1.1 else ("grow" if mean_factor > 1 else "shrink")
        text = f"{head} {verb} the forward variance ×{_factor(mean_factor)} per layer: ×{product:.3g} over the chain"
    return Chain(tuple(layers), act.name, product, text)


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


def density_for(report: TensorReport):
    """The density of the first matched reading (for histograms), or None: a zero-mean normal,
    uniform or ±2σ-truncated normal at the expected std."""
    if not report.match or not report.expected_std:
        return None
    first = report.match.split("|")[0]
    std = report.expected_std
    if "truncated-normal" in first:
        family = "truncated-normal"
    elif "uniform" in first or first == "torch-default":
        family = "uniform"
    else:
        family = "normal"
    if family == "uniform":
        half = math.sqrt(3) * std
        return lambda w: 1 / (2 * half) if abs(w) <= half else 0.0
    sigma = std / matching.TRUNCATED_NORMAL_STD if family == "truncated-normal" else std
    bound = matching.TRUNCATION_BOUND * sigma if family == "truncated-normal" else math.inf
    mass = math.erf(matching.TRUNCATION_BOUND / math.sqrt(2)) if family == "truncated-normal" else 1.0

    def pdf(w: float) -> float:
        if abs(w) > bound:
            return 0.0
        z = w / sigma
        return math.exp(-0.5 * z * z) / (sigma * math.sqrt(2 * math.pi) * mass)

    return pdf


# -- the engine on a chain found in the file ----------------------------------------------------------

PROPAGATE_BATCH = 512


def propagate_chain(path: str | os.PathLike, result: InspectResult, *, activation: str = "relu",
                    negative_slope: float = 0.01, batch: int = PROPAGATE_BATCH, seed: int = 0):
    """Push `batch` random N(0, 1) inputs through the longest chain `inspect` found (its
    matrices as stored, biases left out), backpropagate a N(0, 1) cotangent, and measure every
    layer with the `propagate` engine. Returns (chain, layer records) or None without a chain."""
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
    layers, _, _ = measure(stack, get_activation(activation, negative_slope), x, cotangent)
    return chain, layers
