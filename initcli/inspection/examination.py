"""Every tensor of a file examined: roles assigned over the whole file, each tensor read in
the layouts its producer may have used, then read again under the file's own conventions and,
where its statistics accept it, the reading most of the file's matrices have; and the layout
the file prefers."""

from __future__ import annotations

from collections import Counter

from .candidates import GPT2_STD, Candidate
from .conventions import MIN_SHARED, infer_conventions
from .matching import Evidence, examine
from .readers import natural_key
from .roles import assign_roles, bias_fan_in, conv1d_layout, recurrent_hidden
from .source import Source


def config_int(config: dict | None, *keys: str) -> int | None:
    """The first of `keys` config.json gives as a positive integer, or None."""
    for key in keys:
        value = (config or {}).get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _layouts(entry, layout: str, source_format: str, config: dict | None) -> tuple[str, ...]:
    """The layouts to read a tensor in: what the file's producer stores when it is known (an
    ONNX op's hint; HF Conv1D's (in, out); torch for PyTorch files and HF folders), else both."""
    if layout != "auto":
        return (layout,)
    hint = getattr(entry, "layout_hint", None) or conv1d_layout(entry.name, config)
    if hint in ("torch", "keras"):
        return (hint,)
    if source_format == "torch" or config is not None:
        return ("torch",)
    return _layouts_for(entry.shape, ("torch", "keras"))


def examine_all(source: Source, layout: str, n_layer: int | None, progress, config) -> list[Evidence]:
    entries = sorted(source.entries, key=lambda e: natural_key(e.name))
    roles = assign_roles(entries, config)
    shapes = {e.name: e.shape for e in entries}
    known = _known_stds(config)
    extra = tuple(Candidate(f"normal(std={s:.6g})", "normal", s, "from config.json (initializer_range, or "
                                     "d_model^−½)", complexity=0) for s in known if s != GPT2_STD)
    layouts_of = {e.name: _layouts(e, layout, source.format, config) for e in entries}
    # ONNX's LSTM/GRU/RNN: R is (directions, gates·hidden, hidden); W and B share its rows
    rnn_rows = {shape[1]: shape[2] for e in entries if roles[e.name] == "recurrent" and len(shape := e.shape) == 3
                and shape[2] and shape[1] in (4 * shape[2], 3 * shape[2], shape[2])}

    def hidden_of(entry) -> int | None:
        found = recurrent_hidden(entry.name, shapes)
        if found is None and roles[entry.name] == "recurrent" and len(entry.shape) in (2, 3):
            rows = entry.shape[1]
            found = rnn_rows.get(rows) or (rnn_rows.get(rows // 2) if len(entry.shape) == 2 else None)
        return found

    def one(entry, more=(), favoured=()) -> Evidence:
        role = roles[entry.name]
        unreadable = getattr(entry, "unreadable", None)
        if entry.dtype == "object" or unreadable:  # pickle-only .npz member, or values numpy lacks
            e = Evidence(entry.name, "other", entry.shape, entry.dtype, None)
            e.notes.append(unreadable or "object array: not read (it would need pickle, which initcli never runs)")
            return e
        array = source.read(entry.name)
        lays = layouts_of[entry.name]
        bias_fan = {lay: bias_fan_in(entry.name, shapes, lay) for lay in lays} if role == "bias" else {}
        if role == "bias" and not any(bias_fan.values()):
            bias_fan = {}
        found = examine(entry.name, role, array, entry.dtype, layouts=lays, n_layer=n_layer,
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
    conventions = infer_conventions(evidence, known)
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
                if votes[best] >= MIN_SHARED and votes[best] > votes[r.matches[0]]:
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
    width = config_int(config, "d_model", "hidden_size", "n_embd")
    if width:  # T5's factor rules: N(0, d_model^−½) for its tables and heads
        out.append(width ** -0.5)
    return tuple(dict.fromkeys(out))


def _layouts_for(shape, layouts):
    """Both readings only where they differ: a square matrix reads the same both ways."""
    if len(layouts) == 2 and len(shape) == 2 and shape[0] == shape[1]:
        return ("torch",)
    return layouts


def preferred_layout(evidence, layout: str, source_format: str = "", config: dict | None = None) -> str:
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
