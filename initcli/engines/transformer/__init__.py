"""The transformer engine: blocks of multi-head self-attention and an MLP, pre- or post-LN,
causal or not. `kernels` holds the blocks, forward and backward; `runs` the statistics and
propagate's and jacobian's runs over them. `initcli.transformer` re-exports both. This
module only declares the engine (no numpy at import), so the command line can read it at
start-up."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING

from .. import register
from ..base import Engine, OptionSpec, deferred

if TYPE_CHECKING:
    import numpy as np

# declarations the command line reads at start-up, before any numpy: this module imports its
# kernels and runs only when an engine function is called
# the options that make a transformer run smaller, named when it does not fit in memory
MEMORY_OPTIONS = ("--batch", "--depth", "--width", "--seq-len", "--mlp-ratio")
# schemes that cannot draw these weights, or that need the MLP engine
REFUSED_KINDS = {"lsuv": "rescales every layer from the data, which only the MLP engine does",
                 "delta-orthogonal": "draws conv kernels (a centre tap); use orthogonal for Linear weights",
                 "dirac": "draws conv kernels; use identity or orthogonal for Linear weights"}
# A run whose largest product (tokens × width × MLP width) is at most this many multiply-adds
# runs on one BLAS thread: same bytes on any machine. Measured at the defaults (1.3e8 here):
# 0.84 s on one thread, 0.86 s on two, so threads only start to pay beyond it.
SINGLE_THREAD_WORK = 1 << 28
OPTIONS = (
    OptionSpec("heads", int, "transformer: attention heads (default 4); they split --width (default 64) into "
                             "equal parts."),
    OptionSpec("seq_len", int, "transformer: tokens per sequence (default 16)."),
    OptionSpec("causal", bool, "transformer: each token attends to itself and the tokens before it only."),
    OptionSpec("mlp_ratio", float, "transformer: the MLP's hidden units per --width unit (default 4); 0 leaves "
                                   "the MLP out (attention-only blocks). The MLP's activation is --activation."),
    OptionSpec("norm_position", str, "transformer: pre (the default: a LayerNorm before each sublayer, as GPT-2) "
                                     "or post (after each skip's sum, as the original Transformer; Xiong et al. "
                                     "2020)."),
)
RUNS = "initcli.engines.transformer.runs"


def _network(init, run, seed: int):
    from .kernels import build_transformer

    return build_transformer(init, run.shape, run.depth, seed=seed, dtype=run.dtype)


def _forward(stack, activation, x, observe=None):
    from .kernels import forward

    traces = forward(stack, activation, x, observe)
    return traces, traces[-1].out


def _backward(stack, traces, cotangent) -> dict[str, np.ndarray]:
    from .kernels import backward

    grads, _ = backward(stack, traces, cotangent)
    return {f"{index}.{name}": grad for index, block in enumerate(grads, start=1) for name, grad in block.items()}


def _parameters(stack) -> dict[str, np.ndarray]:
    import numpy as np

    return {f"{index}.{f.name}": getattr(block, f.name) for index, block in enumerate(stack.blocks, start=1)
            for f in fields(block) if isinstance(getattr(block, f.name), np.ndarray)}


def _keywords(values: dict) -> dict:
    """The block's geometry, skips (on unless --no-residual) and presets; refuses what a
    transformer block fixes itself (--norm: every sublayer has its LayerNorm; --block)."""
    from ...errors import InitcliError

    if values["norm"].strip().lower() != "none":
        raise InitcliError("norm", "does not apply with --arch transformer: every sublayer has its LayerNorm; "
                                   "--norm-position says where")
    if values["block"] != 1:
        raise InitcliError("block", "does not apply with --arch transformer: a block is attention and MLP")
    return {"heads": values["heads"], "seq_len": values["seq_len"], "causal": values["causal"],
            "mlp_ratio": values["mlp_ratio"], "norm_position": values["norm_position"],
            "residual": True if values["residual"] is None else values["residual"],
            "residual_scale": values["residual_scale"], "param": values["param"],
            "residual_init": values["residual_init"]}


def _describe(params: dict) -> str:
    """'6 pre-LN blocks · width 64 · 4 heads · 16 tokens · MLP ×4'."""
    mlp = f"MLP ×{params['mlp_ratio']:g}" if params["mlp_ratio"] else "no MLP"
    return (f"{params['depth']} {params['norm_position']}-LN blocks · width {params['width']} · "
            f"{params['heads']} heads · {params['seq_len']} tokens{' causal' if params['causal'] else ''} · {mlp}"
            f"{'' if params['residual'] else ' · no skips'}")


def _summary(result) -> dict:
    """compare's transformer columns: the last block's token cosine (rank collapse, Dong et al.
    2021) and the largest mean attention maximum over the blocks (entropy collapse, Zhai et
    al. 2023; 0 when no row has attention)."""
    attn_max = [row.attn_max for row in result.layers if row.attn_max is not None]
    return {"last_token_cosine": result.per_layer()[-1].token_cosine, "max_attn_max": max(attn_max or [0.0])}


ENGINE = register(Engine(
    name="transformer", unit="block", memory_options=MEMORY_OPTIONS, single_thread_work=SINGLE_THREAD_WORK,
    prepare=deferred(RUNS, "prepare"), run_prepared=deferred(RUNS, "run_prepared"),
    propagate=deferred(RUNS, "propagate"), estimate_bytes=deferred(RUNS, "estimate_bytes"),
    work=deferred(RUNS, "work"), prepare_jacobian=deferred(RUNS, "prepare_jacobian"),
    run_jacobian=deferred(RUNS, "run_jacobian"), build=deferred(RUNS, "inputs"), network=_network,
    features=lambda run: run.shape.width, forward=_forward, backward=_backward, parameters=_parameters,
    refused=REFUSED_KINDS, final_norm=lambda stack: stack.shape.norm_position == "pre", options=OPTIONS,
    keywords=_keywords,
    describe=_describe, widths=lambda params: [params["width"]] * (params["depth"] + 1), sample="token",
    skips_by_default=True,
    summary_columns=("last_token_cosine", "max_attn_max"), summary=_summary, chart_columns=("token_cosine",),
    # train's smaller network (a few seconds per scheme on one core), trained with Adam as
    # transformers are in practice
    train_defaults={"depth": 4, "width": 32, "seq_len": 8, "mlp_ratio": 2.0}, train_optimizer="adam",
))
