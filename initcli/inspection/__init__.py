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
`with_changes`, each tensor is compared with the file it started from.

The parts, one module each: `readers` (one reader per file format, yielding one tensor at a
time), `matching` (statistics and scheme matching, which never know the format),
`examination` (every tensor of a file examined), `judging` (each tensor's row and verdict),
`summary` and `chains` (the file's summary and its chains of layers), `changes` (--against)
and `records` (what is returned). This module is the driver; their public names stay
importable from here.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..errors import InitcliError
from . import tensor_stats
from .chains import PROPAGATE_BATCH, propagate_chain  # noqa: F401  (re-exported: defined here before)
from .changes import compare_tensors, with_changes  # noqa: F401  (re-exported: defined here before)
from .examination import config_int, examine_all, preferred_layout
from .families import density_for  # noqa: F401  (re-exported: defined here before)
from .judging import (  # noqa: F401  (re-exported: defined here before)
    EMBEDDING_UNIT,
    EXPLODING,
    FAR_RATIO,
    P_VALUE_UNUSUAL,
    SMALL_STD,
    FileContext,
    file_context,
    file_level_notes,
    tensor_report,
)
from .readers import Source, natural_key, open_source  # noqa: F401  (natural_key: importable here, as before)
from .records import (  # noqa: F401  (re-exported: defined here before)
    AGAINST_COLUMNS,
    COLUMNS,
    LAYOUTS,
    VERDICTS,
    Chain,
    ChainLayer,
    Change,
    InspectResult,
    Summary,
    TensorReport,
)
from .roles import infer_n_layer, is_branch_end, is_head  # noqa: F401  (is_branch_end, is_head: as before)
from .summary import ABSTAINED, NO_MATCH, summarise  # noqa: F401  (re-exported: defined here before)


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
        n_layer_used = n_layer or config_int(config, "n_layer", "num_hidden_layers", "num_layers") \
            or infer_n_layer(names)
        evidence = examine_all(source, layout, n_layer_used, progress, config)
        source_format = source.format
        skipped = tuple(getattr(source, "skipped", ()) or ())
    finally:
        if owned:
            source.close()
    path = source.path
    preferred = preferred_layout(evidence, layout, source_format, config)
    context = file_context(evidence, config)
    reports = [tensor_report(e, preferred, context) for e in evidence]
    reports = file_level_notes(reports)
    summary = summarise(reports, evidence, act, act_reason, context, skipped)
    params = {"path": str(path), "format": source_format, "layout": layout, "preferred_layout": preferred,
              "activation": act.name, "n_layer": n_layer_used, "tensors": len(reports),
              "subsample": tensor_stats.SUBSAMPLE, "trained": context.trained}
    if config is not None and config.get("model_type"):
        params["model_type"] = str(config["model_type"])
    if act.name == "leaky-relu":
        params["negative_slope"] = negative_slope
    return InspectResult(tuple(reports), summary, params)


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
