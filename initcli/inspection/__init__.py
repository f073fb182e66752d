"""Audit the initialisation of a weight file, tensor by tensor, without running its code.

    >>> from initcli.inspection import inspect
    >>> result = inspect("model.safetensors")
    >>> [(t.name, t.match, t.verdict) for t in result.tensors]
    >>> result.summary.lines

One `TensorReport` per tensor (the public columns `COLUMNS`) and a `Summary`: how many
tensors follow each scheme (abstentions counted apart from "no match"), the suspicious and
unusual ones, whether the file looks trained, what a wrapper held beside the model, and the
mean-field forward factor of each chain of layers whose data flow the names give (a
Sequential's consecutive layers) under an activation it names. A zero or tiny tensor is judged
by where it sits: a head, the end of a residual branch, a layer scale, a norm the model adds 1
to are `ok` with a note; zero matrices whose units feed later layers are suspicious. With
`with_changes`, each tensor is compared with the file it started from. Readers (`readers`)
yield one tensor at a time; statistics and matching (`matching`) never know the format.
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
VERDICTS = ("ok", "unusual", "suspicious", "trained")
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
    changes: tuple = ()  # with `against`: one Change per tensor (its row's AGAINST_COLUMNS)

    def rows(self) -> list[dict]:
        if not self.changes:
            return [t.row() for t in self.tensors]
        return [t.row() | c.row() for t, c in zip(self.tensors, self.changes)]


AGAINST_COLUMNS = ("delta_norm_ratio", "std_change")


@dataclass(frozen=True)
class Change:
    """A tensor against the same tensor of the file it started from: ‖W − W₀‖/‖W₀‖ (the
    relative update µP reasons about) and std/std₀ − 1. None where the other file has no
    tensor of that name and shape."""

    delta_norm_ratio: float | None
    std_change: float | None

    def row(self) -> dict:
        return {"delta_norm_ratio": self.delta_norm_ratio, "std_change": self.std_change}


def compare_tensors(current, start) -> Change:
    """‖W − W₀‖/‖W₀‖ and std/std₀ − 1 over every element, in float64, CHUNK at a time (inf
    where W₀ is all zeros and W is not; nan where non-finite values meet)."""
    import numpy as np

    flat, flat0 = current.reshape(-1), start.reshape(-1)
    sums = np.zeros(6)  # Σd², Σw0², Σw, Σw², Σw0, n
    with np.errstate(all="ignore"):
        for i in range(0, flat.size, matching.CHUNK):
            w = np.asarray(flat[i:i + matching.CHUNK], dtype=np.float64)
            w0 = np.asarray(flat0[i:i + matching.CHUNK], dtype=np.float64)
            d = w - w0
            sums += (d @ d, w0 @ w0, w.sum(), w @ w, w0.sum(), w.size)
        n = sums[5]
        var = max(sums[3] / n - (sums[2] / n) ** 2, 0.0)
        var0 = max((sums[1] - sums[4] ** 2 / n) / n, 0.0)
        ratio = math.sqrt(sums[0]) / math.sqrt(sums[1]) if sums[1] > 0 else (0.0 if sums[0] == 0 else math.inf)
        change = math.sqrt(var) / math.sqrt(var0) - 1 if var0 > 0 else (0.0 if var == 0 else math.inf)
    return Change(float(ratio), float(change))


def with_changes(result: InspectResult, path: str | os.PathLike | Source, start: str | os.PathLike) -> InspectResult:
    """`result` (of `inspect(path)`) with each tensor compared with the same tensor of `start`,
    the file it was initialised as: the columns AGAINST_COLUMNS and a summary line."""
    from dataclasses import replace

    changes = []
    owned = not isinstance(path, Source)
    current = open_source(path) if owned else path
    try:
        with open_source(start) as origin:
            shapes = {e.name: e.shape for e in origin.entries}
            mine = {e.name: e for e in current.entries}
            for t in result.tensors:
                entry = mine.get(t.name)
                usable = entry is not None and shapes.get(t.name) == entry.shape and t.std is not None \
                    and getattr(entry, "unreadable", None) is None and entry.dtype != "object"
                changes.append(compare_tensors(current.read(t.name), origin.read(t.name)) if usable
                               else Change(None, None))
            missing = sum(1 for name in shapes if name not in mine)
    finally:
        if owned:
            current.close()
    compared = [(t.name, c.delta_norm_ratio) for t, c in zip(result.tensors, changes)
                if c.delta_norm_ratio is not None and math.isfinite(c.delta_norm_ratio)]
    lines = list(result.summary.lines)
    if compared:
        ranked = sorted(compared, key=lambda item: item[1])
        median = ranked[len(ranked) // 2][1]
        top = ranked[-1]
        lines.append(f"against {start}: {len(compared)} tensors compared, median ‖ΔW‖/‖W₀‖ {median:.3g}, largest "
                     f"{top[1]:.3g} ({top[0]})" + (f"; {missing} tensors only in {start}" if missing else ""))
    else:
        lines.append(f"against {start}: no tensor of the same name and shape to compare")
    summary = replace(result.summary, lines=tuple(lines))
    params = result.params | {"against": str(start)}
    return InspectResult(result.tensors, summary, params, result.columns + AGAINST_COLUMNS, tuple(changes))


def inspect_against(path: str | os.PathLike, start: str | os.PathLike, **options) -> InspectResult:
    """`inspect(path, **options)` compared tensor by tensor with `start` (see `with_changes`)."""
    return with_changes(inspect(path, **options), path, start)


def inspect(path: str | os.PathLike | Source, *, layout: str = "auto", activation: str | None = None,
            negative_slope: float = 0.01, n_layer: int | None = None,
            progress: Callable[[int], None] | None = None) -> InspectResult:
    """Read every tensor of a weight file (.safetensors or a folder of shards, .npz/.npy,
    .pt/.pth/.bin state_dicts, .onnx) and say which init explains each.

    layout: torch (out, in, *kernel), keras (*kernel, in, out), or auto (torch for PyTorch
    files and Hugging Face folders, except HF Conv1D's (in, out) matrices; otherwise each
    tensor read both ways, keeping the reading a scheme explains; where both do, the one most
    of the file's tensors need). activation: the one the chain summary assumes (None: the
    config.json's hidden_act when there is one, else relu). n_layer: GPT-2's residual
    projections are 0.02/√(2·n_layer); from config.json or the names when not given.
    `progress(k)` is called after each tensor with k = 1. `path` may also be an open
    `readers.Source` (left open).
    """
    if layout not in LAYOUTS:
        raise InitcliError("layout", f"must be one of {', '.join(LAYOUTS)}, got '{layout}'")
    if n_layer is not None and (isinstance(n_layer, bool) or not isinstance(n_layer, int) or n_layer < 1):
        raise InitcliError("n_layer", f"must be a positive integer, got {n_layer!r}")
    owned = not isinstance(path, Source)
    source = open_source(path) if owned else path
    try:
        config = getattr(source, "config", None)
        config = config if isinstance(config, dict) else None
        act, act_reason = _activation(activation, negative_slope, config)
        names = [e.name for e in source.entries]
        n_layer_used = n_layer or _config_int(config, "n_layer", "num_hidden_layers", "num_layers") \
            or matching.infer_n_layer(names)
        evidence = _examine_all(source, layout, n_layer_used, progress, config)
        source_format = source.format
        skipped = tuple(getattr(source, "skipped", ()) or ())
    finally:
        if owned:
            source.close()
    path = source.path
    preferred = _preferred_layout(evidence, layout, source_format, config)
    context = _context(evidence, config)
    reports = [_report(e, preferred, context) for e in evidence]
    reports = _file_level_notes(reports)
    summary = _summarise(reports, evidence, act, act_reason, context, skipped)
    params = {"path": str(path), "format": source_format, "layout": layout, "preferred_layout": preferred,
              "activation": act.name, "n_layer": n_layer_used, "tensors": len(reports),
              "subsample": matching.SUBSAMPLE, "trained": context.trained}
    if config is not None and config.get("model_type"):
        params["model_type"] = str(config["model_type"])
    if act.name == "leaky-relu":
        params["negative_slope"] = negative_slope
    return InspectResult(tuple(reports), summary, params)


def _config_int(config: dict | None, *keys: str) -> int | None:
    for key in keys:
        value = (config or {}).get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


# config.json's activation names -> initcli's
_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu", "gelu_pytorch_tanh": "gelu", "gelu_fast": "gelu",
                   "quick_gelu": "gelu", "relu": "relu", "silu": "silu", "swish": "silu", "tanh": "tanh",
                   "sigmoid": "sigmoid", "selu": "selu", "elu": "elu", "leaky_relu": "leaky-relu"}


def _activation(activation: str | None, negative_slope: float, config: dict | None):
    """The activation the chains assume, and why."""
    from ..activations import get_activation

    if activation is not None:
        return get_activation(activation, negative_slope), "as given"
    for key in ("hidden_act", "hidden_activation", "activation_function", "hidden_activation_function", "activation",
                "feed_forward_proj"):
        value = (config or {}).get(key)
        if isinstance(value, str):
            name = _HF_ACTIVATIONS.get(value.lower().removeprefix("gated-"))
            if name:
                return get_activation(name, negative_slope), f"config.json's {key} {value}"
    return get_activation("relu", negative_slope), "assumed: the file does not say; --activation to change"


def _layouts(entry, layout: str, source_format: str, config: dict | None) -> tuple[str, ...]:
    """The layouts to read a tensor in: what the file's producer stores when it is known (an
    ONNX op's hint; HF Conv1D's (in, out); torch for PyTorch files and HF folders), else both."""
    if layout != "auto":
        return (layout,)
    hint = getattr(entry, "layout_hint", None) or matching.conv1d_layout(entry.name, config)
    if hint in ("torch", "keras"):
        return (hint,)
    if source_format == "torch" or config is not None:
        return ("torch",)
    return _layouts_for(entry.shape, ("torch", "keras"))


def _examine_all(source: Source, layout: str, n_layer: int | None, progress, config) -> list[matching.Evidence]:
    entries = sorted(source.entries, key=lambda e: natural_key(e.name))
    roles = matching.assign_roles(entries, config)
    shapes = {e.name: e.shape for e in entries}
    known = _known_stds(config)
    extra = tuple(matching.Candidate(f"normal(std={s:.6g})", "normal", s, "from config.json (initializer_range, or "
                                     "d_model^−½)", complexity=0) for s in known if s != matching.GPT2_STD)
    layouts_of = {e.name: _layouts(e, layout, source.format, config) for e in entries}
    # ONNX's LSTM/GRU/RNN: R is (directions, gates·hidden, hidden); W and B share its rows
    rnn_rows = {shape[1]: shape[2] for e in entries if roles[e.name] == "recurrent" and len(shape := e.shape) == 3
                and shape[2] and shape[1] in (4 * shape[2], 3 * shape[2], shape[2])}

    def hidden_of(entry) -> int | None:
        found = matching.recurrent_hidden(entry.name, shapes)
        if found is None and roles[entry.name] == "recurrent" and len(entry.shape) in (2, 3):
            rows = entry.shape[1]
            found = rnn_rows.get(rows) or (rnn_rows.get(rows // 2) if len(entry.shape) == 2 else None)
        return found

    def one(entry, more=(), favoured=()) -> matching.Evidence:
        role = roles[entry.name]
        unreadable = getattr(entry, "unreadable", None)
        if entry.dtype == "object" or unreadable:  # pickle-only .npz member, or values numpy lacks
            e = matching.Evidence(entry.name, "other", entry.shape, entry.dtype, None)
            e.notes.append(unreadable or "object array: not read (it would need pickle, which initcli never runs)")
            return e
        array = source.read(entry.name)
        lays = layouts_of[entry.name]
        bias_fan = {lay: matching.bias_fan_in(entry.name, shapes, lay) for lay in lays} if role == "bias" else {}
        if role == "bias" and not any(bias_fan.values()):
            bias_fan = {}
        found = matching.examine(entry.name, role, array, entry.dtype, layouts=lays, n_layer=n_layer,
                                 bias_fan=bias_fan, extra=extra + tuple(more),
                                 hidden=hidden_of(entry), favoured=favoured)
        del array
        return found

    evidence = []
    for entry in entries:
        evidence.append(one(entry))
        if progress is not None:
            progress(1)
    # the file's own conventions, read from the tensors no scheme explained: read those again
    conventions = matching.infer_conventions(evidence, known)
    by_name = {e.name: e for e in entries}
    if conventions:
        evidence = [one(by_name[e.name], conventions[e.name]) if e.name in conventions else e for e in evidence]
    # one init drew most of a file: where a tensor's statistics accept the file's most common
    # reading (a small tensor accepting many), that reading comes first
    votes = Counter(r.matches[0] for e in evidence if e.role in ("linear", "conv") for r in e.readings.values()
                    if r.matches and not r.exact)
    favoured = {}
    for e in evidence:
        if e.role not in ("linear", "conv") or e.name in conventions:
            continue
        for r in e.readings.values():
            if r.matches and not r.exact:
                best = max(r.matches, key=lambda m: votes[m])
                if votes[best] >= matching.MIN_SHARED and votes[best] > votes[r.matches[0]]:
                    favoured[e.name] = (best,)
    if favoured:
        evidence = [one(by_name[e.name], (), favoured[e.name]) if e.name in favoured else e for e in evidence]
    return evidence


def _known_stds(config: dict | None) -> tuple[float, ...]:
    out = []
    for key in ("initializer_range", "init_std", "initializer_std"):
        value = (config or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 10:
            out.append(float(value))
    width = _config_int(config, "d_model", "hidden_size", "n_embd")
    if width:  # T5's factor rules: N(0, d_model^−½) for its tables and heads
        out.append(width ** -0.5)
    return tuple(dict.fromkeys(out))


def _layouts_for(shape, layouts):
    """Both readings only where they differ: a square matrix reads the same both ways."""
    if len(layouts) == 2 and len(shape) == 2 and shape[0] == shape[1]:
        return ("torch",)
    return layouts


def _preferred_layout(evidence, layout: str, source_format: str = "", config: dict | None = None) -> str:
    """auto: torch for PyTorch files and HF folders; otherwise the layout that the tensors
    explained in only one reading need most (torch on a tie)."""
    if layout != "auto":
        return layout
    if source_format == "torch" or config is not None:
        return "torch"
    votes = Counter()
    for e in evidence:
        explained = [lay for lay, r in e.readings.items() if r.matches]
        if len(explained) == 1 and len(e.readings) == 2:
            votes[explained[0]] += 1
    return "keras" if votes["keras"] > votes["torch"] else "torch"


def _choose(e: matching.Evidence, preferred: str) -> matching.Reading | None:
    if not e.readings:
        return None
    if len(e.readings) == 1:
        return next(iter(e.readings.values()))
    if preferred in e.readings and e.readings[preferred].matches:
        return e.readings[preferred]
    explained = [r for r in e.readings.values() if r.matches]
    if explained:
        return min(explained, key=lambda r: r.score)
    return e.readings.get(preferred) or next(iter(e.readings.values()))


def _shape_text(shape) -> str:
    return "x".join(map(str, shape)) if shape else "scalar"


# -- what a zero or a tiny tensor does, by where it sits ------------------------------------------

_HEADS = {"head", "heads", "classifier", "lm_head", "score", "logits", "last_linear", "output_layer", "qa_outputs",
          "fc_out", "cls_head", "proj_head"}
EXPLODING = 100.0  # a trained tensor's std this many times its role's median: exploding


def _module(name: str) -> list[str]:
    parts = name.split(".")
    return parts[:-1] if len(parts) > 1 else parts


def is_head(name: str) -> bool:
    module = _module(name)
    leaf = module[-1] if module else ""
    if leaf in _HEADS or any(part in ("head", "classifier") for part in module[:-1]):
        return True
    return leaf == "fc" and not any(part.isdigit() for part in module)


def is_branch_end(name: str) -> bool:
    return matching.is_branch_end(name)


@dataclass(frozen=True)
class FileContext:
    """What the file as a whole says about each row's verdict."""

    trained: bool
    trained_text: str
    adds_one: bool  # the norms compute (1 + w)·x̂ (Gemma): a norm weight at 0 is a unit scale
    last_norms: frozenset  # the last norm of each residual block (zero_init_residual zeroes it)
    typical_std: dict  # role -> median std
    main_reading: str = ""  # the first reading most of the file's weight matrices have


def _context(evidence, config: dict | None) -> FileContext:
    weights = [e for e in evidence if e.role in matching.WEIGHT_ROLES and e.stats is not None
               and e.stats.used >= matching.MIN_ELEMENTS and e.constant is None and e.stats.finite]
    unmatched = [e for e in weights if not any(r.matches for r in e.readings.values())]
    # trained weights stay within an order of magnitude of their init; absurd stds are not training
    plausible = [e for e in unmatched if any(r.nearest_ratio and 0.1 <= r.nearest_ratio <= 10
                                             for r in e.readings.values())]
    trained = len(weights) >= 2 and 2 * len(plausible) >= len(weights)
    text = ""
    if trained:
        kurtoses = sorted(e.stats.kurtosis for e in unmatched if math.isfinite(e.stats.kurtosis))
        tail = f"; median excess kurtosis {kurtoses[len(kurtoses) // 2]:.2g}" if kurtoses else ""
        text = (f"these weights look trained: {len(unmatched)} of {len(weights)} weight tensors match no init "
                f"scheme{tail}; rows say `trained` unless something is broken (NaN/inf, dead units, exploding norms)")
    norms = [e for e in evidence if e.role == "norm_scale"]
    model_type = str((config or {}).get("model_type", "")).lower()
    adds_one = "gemma" in model_type or (
        len(norms) >= 2 and all(e.constant == 0 for e in norms)
        and not any(e.role == "norm_shift" for e in evidence))
    typical: dict = {}
    for role in matching.WEIGHT_ROLES:
        stds = sorted(e.stats.std for e in weights if e.role == role)
        if stds:
            typical[role] = stds[(len(stds) - 1) // 2]  # the lower median: one exploding tensor of two is seen
    firsts = Counter(r.matches[0] for e in weights for r in e.readings.values() if r.matches)
    main = firsts.most_common(1)[0][0] if firsts else ""
    return FileContext(trained, text, adds_one, frozenset(_last_norms(norms)), typical, main)


def _last_norms(norms) -> set[str]:
    """The norm weights that close a residual branch: under a component named <stem><k> (bn3,
    ln2) whose k is the highest of its siblings holding norms (k ≥ 2), or under a branch's
    output layer (proj, fc2, …: LeViT's LinearNorm(bn_weight_init=0))."""
    import re

    best: dict = {}
    found_under: dict = {}
    last = set()
    for e in norms:
        module = _module(e.name)
        if any(part in matching.BRANCH_ENDS for part in module):
            last.add(e.name)
        for i in range(len(module) - 1, -1, -1):  # the innermost <stem><k> only (bn3, not layer4)
            found = re.fullmatch(r"([a-z_]*?)(\d+)", module[i])
            if not found or not found.group(1):
                continue
            key = (".".join(module[:i]), found.group(1))
            k = int(found.group(2))
            best[key] = max(best.get(key, 0), k)
            found_under.setdefault(e.name, []).append((key, k))
            break
    for name, keys in found_under.items():
        if any(k >= 2 and k == best[key] for key, k in keys):
            last.add(name)
    return last


def _zero_note(e: matching.Evidence, c: float, context: FileContext) -> tuple[str, str]:
    """(verdict, note) for a tensor whose every element is c."""
    role, name = e.role, e.name
    if role in matching.WEIGHT_ROLES:
        if context.trained:
            return "suspicious", "all zeros after training: dead" if c == 0 else "a constant after training"
        if c == 0 and is_head(name):
            return "ok", ("zero-initialised head: the model starts at zero output; its gradient (input × error) "
                          "is not zero, so it learns")
        if c == 0 and is_branch_end(name):
            return "ok", "last layer of a residual branch at zero: the block starts as the identity"
        return "suspicious", ("all zeros: never breaks symmetry (its units feed later layers)" if c == 0 else
                              "a constant: every unit computes the same function, symmetry never breaks")
    if role == "norm_scale":
        if c == 1:
            return "ok", ""
        if c == 0 and context.adds_one:
            return "ok", "the norm computes (1 + w)·x̂ (Gemma-style RMSNorm): w = 0 is a unit scale"
        if c == 0 and name in context.last_norms:
            return "ok", "last norm of a residual block at zero (zero_init_residual): the branch starts as identity"
        if context.trained:
            return "trained", f"norm scale at {c:g}"
        return "unusual", f"norm scale at {c:g}, not 1"
    if role == "layer_scale":
        return "ok", f"layer scale γ = {c:g}: each branch starts scaled by {c:g} (near the identity)" \
            if abs(c) < 1 else ""
    if role in ("token", "table") and c == 0:
        return "ok", ("a learned token at zero: the same start for every input" if role == "token" else
                      "a bias table at zero: attention starts without a positional bias")
    if role in ("bias", "norm_shift") and c != 0:
        return ("trained" if context.trained else "unusual"), f"a constant {c:g}, not zero"
    return "ok", ""


def _report(e: matching.Evidence, preferred: str, context: FileContext | None = None) -> TensorReport:
    context = context or FileContext(False, "", False, frozenset(), {})
    s = e.stats
    notes = list(e.notes)
    reading = _choose(e, preferred)
    match, expected, ratio, p_value, verdict = "", None, None, None, "ok"
    broken = False  # NaN/inf, dead units, exploding: suspicious even in a trained file
    off = False  # nothing explains it, or not as drawn: unusual/suspicious fresh, `trained` trained
    layout = reading.layout if reading is not None else ""
    fan_in = fan_out = None
    if e.role in ("linear", "conv", "recurrent"):
        lay = layout or preferred
        fan_in, fan_out = matching.reading_fans(e.shape, lay)
        if reading is not None and reading.fan_in is not None:  # the reading's (per direction for ONNX RNNs)
            fan_in, fan_out = reading.fan_in, reading.fan_out
        layout = lay
    elif e.role == "bias" and reading is not None:
        fan_in = reading.fan_in
    if s is None:  # non-float or empty
        verdict = "ok" if e.role == "other" else "unusual"
    elif e.constant is not None:
        c = e.constant
        match = "zeros" if c == 0 else ("ones" if c == 1 else f"constant(value={c:.6g})")
        verdict, why = _zero_note(e, c, context)
        if why:
            notes.append(why)
        broken = verdict == "suspicious"
    elif e.abstained:
        pass
    elif reading is not None and reading.matches:
        match = "|".join(reading.matches)
        expected, p_value = reading.expected_std, reading.p_value
        ratio = s.std / expected if expected else None
        notes.extend(reading.notes)
        if len(reading.matches) > 1:
            notes.append(f"{len(reading.matches)} readings give this std and family")
        if p_value is not None and p_value < P_VALUE_UNUSUAL:
            verdict, off = "unusual", True
            notes.append(f"KS test rejects {reading.matches[0]} (p = {p_value:.2g}): not drawn from it as is")
        if e.role == "norm_scale" and reading.matches[0] == context.main_reading:
            # HF's EfficientNet, MobileViT…: _init_weights draws BatchNorm weights as it draws the matrices
            notes.append(f"norm scale drawn as the file's matrices are ({reading.matches[0]}): the library's init "
                         "treats norm weights like any weight; the norm starts near zero output")
        elif e.role == "norm_scale":
            verdict, off = "unusual", True
            notes.append("norm scale is not 1")
    elif s.used and reading is not None:
        off = True
        if reading.nearest_ratio is not None:
            ratio = reading.nearest_ratio
            far = ratio > FAR_RATIO or ratio < 1 / FAR_RATIO
            verdict = "suspicious" if far and e.role in matching.WEIGHT_ROLES else "unusual"
            notes.append(f"std {s.std:.4g} matches no scheme; nearest {reading.nearest} (std ratio {ratio:.3g})")
        else:
            verdict = "unusual"
            notes.append("matches no scheme")
    elif s.used and e.role == "norm_scale":
        verdict, off = "unusual", True
        notes.append("norm scale is not 1")
    if s is not None and not s.finite:
        verdict, broken = "suspicious", True
    if s is not None and s.used and e.constant is None and not s.clamped \
            and s.max_abs_z > matching.outlier_threshold(s.n - s.nonfinite) and not (reading is not None and reading.exact):
        if not context.trained:
            verdict = "suspicious"
        off = True
        notes.append(f"outliers: |w − mean| reaches {s.max_abs_z:.3g}σ")
    dead = e.dead.get(layout or preferred, 0) if e.dead else 0
    if dead and e.role in ("linear", "conv", "recurrent"):
        units = "filters" if e.role == "conv" else "rows"
        verdict, broken = "suspicious", True
        notes.append(f"{dead} dead {units}: all-zero weights (their units output a constant)")
    if context.trained and s is not None and s.used and e.role in context.typical_std and e.constant is None:
        typical = context.typical_std[e.role]
        if typical > 0 and s.std > EXPLODING * typical:
            verdict, broken = "suspicious", True
            notes.append(f"exploding: std {s.std:.3g} is {s.std / typical:.3g}× the file's median {e.role} std")
    if context.trained and not broken and (off or verdict in ("unusual", "suspicious")):
        verdict = "trained"
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
        if r.role == "embedding" and r.match and r.std and r.std > EMBEDDING_UNIT and typical < SMALL_STD \
                and r.verdict == "ok":
            note = f"embedding at std {r.std:.3g} feeds matrices at std ~{typical:.2g}"
            r = replace(r, verdict="suspicious", note="; ".join(filter(None, [r.note, note])))
        out.append(r)
    return out


# -- summary ----------------------------------------------------------------------------------------

ABSTAINED = "(abstained)"
NO_MATCH = "(no match)"


def _count_key(r: TensorReport, e: matching.Evidence) -> str | None:
    if r.match:
        return r.match.split("|")[0]
    if r.role == "other" and r.std is None:
        return None  # not a weight (integers, buffers)
    if r.std is None or e.abstained:
        return ABSTAINED
    return NO_MATCH


def _summarise(reports: list[TensorReport], evidence, act, act_reason: str = "",
               context: FileContext | None = None, skipped: tuple = ()) -> Summary:
    keys = [_count_key(r, e) for r, e in zip(reports, evidence)]
    counts = Counter(key for key in keys if key is not None)
    suspicious = tuple((r.name, r.note) for r in reports if r.verdict == "suspicious")
    unusual = tuple((r.name, r.note) for r in reports if r.verdict == "unusual")
    chains = tuple(_chain(group, act, act_reason) for group in _find_chains(reports, evidence))
    matched = [(m, n) for m, n in counts.most_common() if m not in (ABSTAINED, NO_MATCH)]
    lines = [f"{len(reports)} tensors: " + (", ".join(f"{n} {m}" for m, n in matched) or "none matched")]
    if counts[NO_MATCH] or counts[ABSTAINED]:
        reasons = Counter(e.abstained or "no values" for e, key in zip(evidence, keys) if key == ABSTAINED)
        why = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
        lines.append(f"{counts[NO_MATCH]} match no scheme; {counts[ABSTAINED]} abstained" + (f" ({why})" if why else ""))
    others = keys.count(None)
    if others:
        lines.append(f"{others} not weights (integer tensors, buffers): not matched")
    if context is not None and context.trained:
        lines.append(context.trained_text)
    for label, rows in (("suspicious", suspicious), ("unusual", unusual)):
        if rows:
            lines.append(f"{len(rows)} {label}: " + "; ".join(f"{n} ({t})" for n, t in rows[:10])
                         + (" …" if len(rows) > 10 else ""))
    if not suspicious and not unusual:
        trained = sum(1 for r in reports if r.verdict == "trained")
        lines.append("nothing suspicious or unusual" + (f" ({trained} trained rows)" if trained else ""))
    if skipped:
        shown = "; ".join(f"{what} ({reason})" for what, reason in skipped[:10]) + (" …" if len(skipped) > 10 else "")
        lines.append(f"skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} the file holds beside the "
                     f"model's weights: {shown}")
    lines.extend(c.text for c in chains)
    return Summary(tuple(counts.most_common()), suspicious, unusual, chains, tuple(lines))


def _chain_slot(name: str) -> tuple[str, str, int] | None:
    """(parent, stem, index) of a Sequential-style layer: 'mlp.3.weight' -> ('mlp', '', 3),
    'mlp.fc2.weight' -> ('mlp', 'fc', 2). Other names (q/k/v, up/down projections) have no
    known data flow."""
    import re

    module = _module(name)
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
    elif "uniform" in first or first.startswith("torch-default"):
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
