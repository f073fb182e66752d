"""The file's summary: how many tensors follow each scheme (abstentions counted apart from "no
match"), the suspicious and unusual ones, whether the file looks trained, what a wrapper held
beside the model, and the chains of layers, in words."""

from __future__ import annotations

from collections import Counter

from .chains import file_chains
from .judging import FileContext
from .matching import Evidence
from .records import Summary, TensorReport

ABSTAINED = "(abstained)"
NO_MATCH = "(no match)"


def _count_key(r: TensorReport, e: Evidence) -> str | None:
    if r.match:
        return r.match.split("|")[0]
    if r.role == "other" and r.std is None:
        return None  # not a weight (integers, buffers)
    if r.std is None or e.abstained:
        return ABSTAINED
    return NO_MATCH


def summarise(reports: list[TensorReport], evidence, act, act_reason: str = "",
               context: FileContext | None = None, skipped: tuple = ()) -> Summary:
    keys = [_count_key(r, e) for r, e in zip(reports, evidence)]
    counts = Counter(key for key in keys if key is not None)
    suspicious = tuple((r.name, r.note) for r in reports if r.verdict == "suspicious")
    unusual = tuple((r.name, r.note) for r in reports if r.verdict == "unusual")
    chains = file_chains(reports, evidence, act, act_reason)
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
