"""The transformer engine: blocks of multi-head self-attention and an MLP, pre- or post-LN,
causal or not. `kernels` holds the blocks, forward and backward; `runs` the statistics and
propagate's and jacobian's runs over them. `initcli.transformer` re-exports both."""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from .. import register
from ..base import Engine
from . import kernels, runs


def _network(init, run, seed: int):
    return kernels.build_transformer(init, run.shape, run.depth, seed=seed, dtype=run.dtype)


def _forward(stack, activation, x, observe=None):
    traces = kernels.forward(stack, activation, x, observe)
    return traces, traces[-1].out


def _backward(stack, traces, cotangent) -> dict[str, np.ndarray]:
    grads, _ = kernels.backward(stack, traces, cotangent)
    return {f"{index}.{name}": grad for index, block in enumerate(grads, start=1) for name, grad in block.items()}


def _parameters(stack) -> dict[str, np.ndarray]:
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
    name="transformer", unit="block", kernels=kernels, memory_options=kernels.MEMORY_OPTIONS,
    single_thread_work=runs.SINGLE_THREAD_WORK,
    prepare=runs.prepare, run_prepared=runs.run_prepared, propagate=runs.propagate,
    estimate_bytes=runs.estimate_bytes, work=runs.work,
    prepare_jacobian=runs.prepare_jacobian, run_jacobian=runs.run_jacobian,
    build=runs.inputs, network=_network, features=lambda run: run.shape.width, forward=_forward,
    backward=_backward, parameters=_parameters,
    refused=kernels.REFUSED_KINDS, final_norm=lambda stack: stack.shape.norm_position == "pre",
    own_options=("heads", "seq_len", "mlp_ratio", "norm_position", "causal"), keywords=_keywords,
    describe=_describe, widths=lambda params: [params["width"]] * (params["depth"] + 1), sample="token",
    skips_by_default=True,
    summary_columns=("last_token_cosine", "max_attn_max"), summary=_summary, chart_columns=("token_cosine",),
    # train's smaller network (a few seconds per scheme on one core), trained with Adam as
    # transformers are in practice
    train_defaults={"depth": 4, "width": 32, "seq_len": 8, "mlp_ratio": 2.0}, train_optimizer="adam",
))
