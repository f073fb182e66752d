"""What `inspect` returns: one `TensorReport` per tensor (the public columns `COLUMNS`), the
file's `Summary` with its chains of layers, and the whole `InspectResult`; with `--against`,
one `Change` per tensor (`AGAINST_COLUMNS`). Small frozen records, rendered elsewhere."""

from __future__ import annotations

from dataclasses import asdict, dataclass

COLUMNS = ("name", "role", "shape", "layout", "fan_in", "fan_out", "mean", "std", "kurtosis", "max_abs_z",
           "zero_frac", "match", "expected_std", "std_ratio", "p_value", "verdict", "note")
LAYOUTS = ("auto", "torch", "keras")
VERDICTS = ("ok", "unusual", "suspicious", "trained")


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
