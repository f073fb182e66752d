"""The transformer engine's runs: per-sublayer statistics, `propagate --arch transformer`
(checked options, memory estimate, theory beside the rows) and `jacobian --arch transformer`.

Theory. Over the weights, for any inputs u_i, u_j of the attention (Wq ⟂ Wk, zero-mean),
E[(s·q_i·k_j)²] = s²·d_h·(σ_q²·m_i + σ_b²)(σ_k²·m_j + σ_b²), m = |u|²/D, σ² = fan_in·Var(W):
the logits' variance, which sets the attention's entropy. A LayerNorm's output has m = 1
(while the stream's variance is well above ε = 1e-5), so the prediction is the same at every
block, except post-LN's first, which reads the raw tokens (m = input_std²). The MLP's hidden
pre-activations likewise have E[h²] = σ_1²·m + σ_b² with m = 1. The stream, the gradients
and `token_cosine` depend on the attention pattern itself and have no closed form here: those
columns are blank. What is known qualitatively (tested): pure attention without skips
collapses every sequence towards rank one doubly exponentially in depth (Dong et al. 2021);
pre-LN skips keep most of each token's own component (the branch adds O(1) to a stream whose
variance grows with depth: collapse is slow), while post-LN renormalises after each sum, so
the shared component grows geometrically and the tokens still collapse (Noci et al. 2022).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ...activations import Activation
from ...checks import MAX_DEPTH, MAX_SIZE, check_dtype, check_memory, check_seed, positive_int
from ...errors import InitcliError
from ...schemes import Init, check_weight_scale, gaussian
from ...stats import RANK_INPUTS, all_finite, dead_fraction, effective_rank, mean_input_cosine, moments
from ...theory import TheoryColumns, parts_ways
from ..base import thread_policy
from ..shared import Recorder as _Recorder
from ..shared import Result, Run, columns_of, jacobian_run, propagate_run, resolve_init, row_sums, seed_streams
from . import SINGLE_THREAD_WORK
from .kernels import (
    ATTN_WEIGHTS,
    DEFAULT_DEPTH,
    MEMORY_OPTIONS,
    MLP_WEIGHTS,
    REFUSED_KINDS,
    AttnCache,
    Block,
    BlockTrace,
    TransformerShape,
    TransformerStack,
    backward,
    block_backward,
    block_forward,
    build_transformer,
    forward,
    row_max,
    transformer_shape,
)

_WORKSPACE = 4 << 20  # small arrays and blockwise float64 work beside the estimate's arrays


# -- statistics -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SublayerStats:
    """One row of `propagate --arch transformer`: a block's attention output, MLP output or
    residual stream (the block's output). None where a column does not apply.

    preact: the attention logits s·q·k (unmasked entries) or the MLP's hidden h; act: the
    sublayer's output (what it adds to the stream) or the stream; grad_var: Var(∂L/∂act);
    weight_std / weight_grad_var: over all the sublayer's weight matrices; saturated_frac and
    dead_frac: of the MLP's φ(h) (a unit is one hidden feature over every token of the batch);
    effective_rank: the participation ratio of the D units' covariance with each token one
    input (256 tokens spread over the batch); input_cosine: between sequences, each flattened; token_cosine: mean
    cosine between distinct tokens of one sequence (1: rank collapse); attn_entropy: mean
    entropy of the attention rows, in nats; attn_max: mean largest attention weight."""

    layer: int
    sublayer: str
    fan_in: int | None
    fan_out: int | None
    weight_std: float | None
    preact_mean: float | None
    preact_var: float | None
    act_mean: float
    act_var: float
    grad_var: float
    weight_grad_var: float | None
    saturated_frac: float | None
    dead_frac: float | None
    effective_rank: float
    input_cosine: float
    token_cosine: float
    attn_entropy: float | None
    attn_max: float | None

    @property
    def unit_output(self) -> bool:
        """Whether this row is a block's output (the stream), which verdicts read."""
        return self.sublayer == "stream"


SUBLAYER_COLUMNS: tuple[str, ...] = columns_of(SublayerStats)


def token_cosine(x: np.ndarray) -> float:
    """Mean over sequences of the mean cosine between distinct tokens of x (B, T, D): with
    unit tokens û, Σ_{i≠j} û_i·û_j = ‖Σ û_i‖² − T. Zero tokens (no direction) are left out;
    nan with fewer than two tokens."""
    if x.shape[1] < 2:
        return math.nan
    unit = x.astype(np.float64)
    norms = np.sqrt(np.einsum("btd,btd->bt", unit, unit))
    live = norms > 0
    unit *= np.divide(1.0, norms, out=np.zeros_like(norms), where=live)[..., None]
    count = live.sum(axis=1)
    sums = unit.sum(axis=1)
    total = np.einsum("bd,bd->b", sums, sums) - count
    pairs = count * (count - 1)
    ok = pairs > 0
    if not ok.any():
        return math.nan
    return float(np.mean(total[ok] / pairs[ok]))


def _pooled(arrays) -> tuple[float, float]:
    """Mean and variance over the entries of several arrays together."""
    total = sum(a.size for a in arrays)
    parts = [(moments(a), a.size) for a in arrays]
    mean = sum(m * size for (m, _), size in parts) / total
    second = sum((v + m * m) * size for (m, v), size in parts) / total
    return mean, max(second - mean * mean, 0.0)


def _attention_stats(cache: AttnCache, causal: bool) -> dict:
    logits, probs = cache.logits, cache.probs
    if causal:  # the masked entries are not logits
        t = logits.shape[-1]
        keep = np.tril(np.ones((t, t), dtype=bool))
        logits = logits[..., keep]
    preact_mean, preact_var = moments(logits)
    # the mean over rows of −Σ p·log p is −Σ over every entry / rows; p·log(p + tiny) is 0 at
    # p = 0 (masked keys) and p·log p to float precision elsewhere. nan probabilities give nan.
    rows = probs.size // probs.shape[-1]
    plogp = probs + np.finfo(probs.dtype).tiny
    np.log(plogp, out=plogp)
    plogp *= probs
    entropy = -float(row_sums(plogp).sum(dtype=np.float64)) / rows
    return {"preact_mean": preact_mean, "preact_var": preact_var, "attn_entropy": entropy,
            "attn_max": float(np.mean(row_max(probs), dtype=np.float64))}


def _common(output: np.ndarray) -> dict:
    act_mean, act_var = moments(output)
    # effective rank over the units, each token one input: 1 when every unit moves together
    tokens = output.reshape(-1, output.shape[-1])
    tokens = tokens[::max(1, len(tokens) // RANK_INPUTS)]  # spread over the batch's sequences
    return {"act_mean": act_mean, "act_var": act_var, "effective_rank": effective_rank(tokens, RANK_INPUTS),
            "input_cosine": mean_input_cosine(output.reshape(output.shape[0], -1)),
            "token_cosine": token_cosine(output)}


class Recorder(_Recorder):
    """Every row's statistics as the forward and backward passes go; progress(1) per block."""

    def __init__(self, stack: TransformerStack, act: Activation, progress: Callable[[int], None] | None = None):
        super().__init__(progress)
        self.stack, self.act = stack, act
        self.forward_stats: dict[tuple[int, str], dict] = {}
        self.backward_stats: dict[tuple[int, str], dict] = {}

    def on_forward(self, index: int, trace: BlockTrace) -> None:
        attn = {**_attention_stats(trace.attn, self.stack.shape.causal), **_common(trace.attn.out),
                "saturated_frac": None, "dead_frac": None}
        self.forward_stats[(index, "attn")] = attn
        if trace.mlp is not None:
            cache = trace.mlp
            preact_mean, preact_var = moments(cache.h)
            saturated = self.act.saturated
            self.forward_stats[(index, "mlp")] = {
                "preact_mean": preact_mean, "preact_var": preact_var, **_common(cache.out),
                "saturated_frac": (float(np.count_nonzero(saturated(cache.act)) / cache.act.size) if saturated
                                   else 0.0),
                "dead_frac": dead_fraction(cache.deriv.reshape(-1, cache.deriv.shape[-1])),
                "attn_entropy": None, "attn_max": None}
        self.forward_stats[(index, "stream")] = {"preact_mean": None, "preact_var": None, **_common(trace.out),
                                                 "saturated_frac": None, "dead_frac": None, "attn_entropy": None,
                                                 "attn_max": None}
        # masked logits are -inf by design; a largest logit of +inf or nan is overflow
        self.check_forward(index, lambda: trace.attn.logits_top < math.inf and all_finite(trace.out))
        self.tick()

    def on_backward(self, index: int, sublayer: str, grad: np.ndarray, grads: dict | None) -> None:
        grad_var = moments(grad)[1]
        self.check_backward(index, lambda: math.isfinite(grad_var) or all_finite(grad))
        record = {"grad_var": grad_var}
        if grads is not None:
            names = ATTN_WEIGHTS if sublayer == "attn" else MLP_WEIGHTS
            record["weight_grad_var"] = _pooled([grads[name] for name in names])[1]
        self.backward_stats[(index, sublayer)] = record
        if sublayer == "attn":
            self.tick()

    def rows(self) -> tuple[SublayerStats, ...]:
        rows = []
        shape = self.stack.shape
        with np.errstate(all="ignore"):
            for index, block in enumerate(self.stack.blocks, start=1):
                for sublayer in shape.sublayers:
                    if sublayer == "stream":
                        fans, weight_std, weight_grad_var = (None, None), None, None
                    else:
                        weights = block.weights(sublayer)
                        fans = (weights[0].shape[1], weights[0].shape[0])
                        weight_std = math.sqrt(_pooled(weights)[1])
                        weight_grad_var = self.backward_stats[(index, sublayer)]["weight_grad_var"]
                    rows.append(SublayerStats(
                        layer=index, sublayer=sublayer, fan_in=fans[0], fan_out=fans[1], weight_std=weight_std,
                        weight_grad_var=weight_grad_var, grad_var=self.backward_stats[(index, sublayer)]["grad_var"],
                        **self.forward_stats[(index, sublayer)]))
        return tuple(rows)


def measure(stack: TransformerStack, act: Activation, x: np.ndarray, cotangent: np.ndarray, *,
            progress: Callable[[int], None] | None = None) -> tuple[tuple[SublayerStats, ...], int | None, int | None]:
    """Forward x, backpropagate the cotangent, measure every sublayer. Returns (rows, first
    block whose forward overflowed, first from the top whose gradient did)."""
    recorder = Recorder(stack, act, progress)
    with np.errstate(all="ignore"):
        traces = forward(stack, act, x, recorder.on_forward)
        backward(stack, traces, cotangent, recorder.on_backward, keep_grads=False)
    return recorder.rows(), recorder.forward_overflow, recorder.backward_overflow


# -- propagate --arch transformer --------------------------------------------------------------


TransformerResult = Result  # the name the Python API has always had


def estimate_bytes(shape: TransformerShape, depth: int, batch: int, dtype) -> int:
    """Peak memory before anything is allocated: the weights; per block the kept arrays of
    the backward pass (about 12 token arrays of width D, 4 of the MLP's width and 2
    attention maps); one block's transients going back, with a float64 copy for statistics."""
    itemsize = np.dtype(dtype).itemsize
    d, hidden, t = shape.width, shape.hidden, shape.seq_len
    tokens = batch * t
    weights = depth * (4 * d * d + 2 * d * hidden + 6 * d + hidden) * itemsize
    attn_maps = batch * shape.heads * t * t
    per_block = (12 * tokens * d + 4 * tokens * hidden + 2 * attn_maps) * itemsize
    transient = (8 * tokens * d + 3 * tokens * hidden + 3 * attn_maps) * itemsize \
        + max(tokens * max(d, hidden), attn_maps) * 8 * 2
    return weights + depth * per_block + transient + _WORKSPACE


@dataclass(frozen=True)
class TransformerRun(Run):
    """A transformer propagate call with every argument checked."""

    shape: TransformerShape
    depth: int

    @property
    def params(self) -> dict:
        return {**self.init.params(), **self.shape.params(), "depth": self.depth, **self.drawn_params()}

    @property
    def estimate(self) -> int:
        return estimate_bytes(self.shape, self.depth, self.batch, self.dtype)


def check_init(init: Init) -> None:
    if init.kind in REFUSED_KINDS:
        raise InitcliError("scheme", f"{init.name} {REFUSED_KINDS[init.kind]}")


def prepare(scheme: str | Init = "xavier-uniform", activation: str = "gelu", *, width: int | None = None,
            heads: int | None = None, seq_len: int | None = None, mlp_ratio: float | None = None,
            causal: bool = False, norm_position: str | None = None, residual: bool | None = None,
            residual_scale: float = 1.0, param: str | None = None, residual_init: str | None = None,
            depth: int | None = None, batch: int = 512,
            bias_std: float = 0.0, input_std: float = 1.0, dtype: str = "float32", seed: int = 0,
            theory: bool = True, sizes=None, **init_options) -> TransformerRun:
    """Check a transformer run's arguments (memory guard included), allocating nothing.
    Depth (blocks) defaults to 6; `init_options` are `schemes.make_init`'s."""
    if sizes is not None:
        raise InitcliError("sizes", "does not apply with --arch transformer: every block has --width units per "
                                    "token")
    init, act = resolve_init(scheme, activation, init_options)
    check_init(init)
    depth = positive_int("depth", DEFAULT_DEPTH if depth is None else depth, MAX_DEPTH)
    shape = transformer_shape(width, heads, seq_len, mlp_ratio, causal=causal, norm_position=norm_position,
                              residual=residual, residual_scale=residual_scale, param=param,
                              residual_init=residual_init, depth=depth)
    batch = positive_int("batch", batch, MAX_SIZE)
    np_dtype = check_dtype(dtype)
    bias_std = check_weight_scale("bias_std", bias_std)
    input_std = check_weight_scale("input_std", input_std)
    seed = check_seed(seed)
    check_memory(estimate_bytes(shape, depth, batch, np_dtype), dtype=np_dtype, options=MEMORY_OPTIONS)
    return TransformerRun(init=init, act=act, batch=batch, bias_std=bias_std, input_std=input_std, dtype=np_dtype,
                          seed=seed, theory=bool(theory), shape=shape, depth=depth)


def inputs(run: TransformerRun) -> tuple[TransformerStack, np.ndarray, np.ndarray]:
    """The stack, the token inputs N(0, input_std²) (batch, T, D) and the unit-Gaussian
    cotangent, from the seed's weights, biases, inputs and cotangent streams."""
    stack = build_transformer(run.init, run.shape, run.depth, bias_std=run.bias_std, seed=run.seed, dtype=run.dtype)
    streams = seed_streams(run.seed)
    tokens = (run.batch, run.shape.seq_len, run.shape.width)
    x = gaussian(streams["inputs"], tokens, run.dtype) * run.dtype.type(run.input_std)
    cotangent = gaussian(streams["cotangent"], tokens, run.dtype)
    return stack, x, cotangent


def work(run: TransformerRun) -> int:
    """Multiply-adds of the largest single product of a forward pass."""
    shape, tokens = run.shape, run.batch * run.shape.seq_len
    return tokens * shape.width * max(shape.width, shape.hidden, shape.seq_len)


def propagate(scheme: str | Init = "xavier-uniform", activation: str = "gelu", *,
              progress: Callable[[int], None] | None = None, **options) -> TransformerResult:
    """`propagation.propagate` for a transformer stack (options: see `prepare`)."""
    return run_prepared(prepare(scheme, activation, **options), progress)


def run_prepared(run: TransformerRun, progress: Callable[[int], None] | None = None) -> TransformerResult:
    """`propagate` for a run `prepare` has checked; progress(1) per block forward and back."""
    return propagate_run(run, progress, threads=thread_policy(work(run), SINGLE_THREAD_WORK), build=inputs,
                         measure=measure, theory=theory_columns)


def predicted_logit_var(run: TransformerRun, block: int) -> float:
    """E[(s·q·k)²] over the weights: s²·d_h·(σ_q²·m + σ_b²)(σ_k²·m + σ_b²), m the second moment
    of the attention's input: 1 after a LayerNorm, input_std² for post-LN's first block."""
    shape = run.shape
    std = run.init.expected_std((shape.width, shape.width))
    sigma_sq = shape.width * std * std  # fan_in·Var(W)
    m = run.input_std * run.input_std if shape.norm_position == "post" and block == 1 else 1.0
    bias_var = run.bias_std * run.bias_std
    query = sigma_sq * shape.factor("wq") ** 2 * m + bias_var
    key = sigma_sq * shape.factor("wk") ** 2 * m + bias_var
    return shape.scale * shape.scale * shape.d_head * query * key


def predicted_hidden_var(run: TransformerRun) -> float:
    """E[h²] of the MLP's hidden pre-activations: σ_1²·1 + σ_b² (its input is LayerNorm's)."""
    std = run.init.expected_std((run.shape.hidden, run.shape.width)) * run.shape.factor("w1")
    return run.shape.width * std * std + run.bias_std * run.bias_std


def theory_columns(run: TransformerRun, rows) -> tuple[TheoryColumns, ...]:
    """theory_preact_var for the attention logits and the MLP's hidden pre-activations; the
    rest blank (no closed form). off_theory flags a measurement further than 3 spreads from
    the prediction, the spread being how far one draw of the weights strays from the average
    over draws, given inputs spread over r directions (r: the effective rank of the tokens
    going in; D for block 1's independent tokens): for the logits the relative variance of
    ‖Σ^½W_qᵀW_kΣ^½‖²_F per head, 4/(r·d_h) + 2/r² (Wishart moments), over H heads; for h,
    2/(r·D·mlp_ratio), a mean over the hidden units of wᵀΣw."""
    blank = TheoryColumns(None, None, None, "")
    if not run.init.iid:  # deterministic weights: no ensemble
        return tuple(blank for _ in rows)
    shape = run.shape
    d, dh = shape.width, shape.d_head
    rank_in = {1: float(d)}  # block → effective rank of the tokens entering it
    for row in rows:
        if row.sublayer == "stream":
            rank_in[row.layer + 1] = row.effective_rank
    attn_rank = {row.layer: row.effective_rank for row in rows if row.sublayer == "attn"}
    columns = []
    for row in rows:
        r = rank_in.get(row.layer, float(d))
        if row.sublayer == "mlp":
            r = min(r, attn_rank.get(row.layer, r))
        r = r if math.isfinite(r) and r >= 1 else 1.0
        if row.sublayer == "attn":
            predicted = predicted_logit_var(run, row.layer)
            spread = math.sqrt((4 / (r * dh) + 2 / (r * r)) / shape.heads)
        elif row.sublayer == "mlp":
            predicted = predicted_hidden_var(run)
            spread = math.sqrt(2 / (r * shape.hidden))
        else:
            columns.append(blank)
            continue
        off = "preact" if row.preact_var is not None and parts_ways(row.preact_var, predicted, spread) else ""
        columns.append(TheoryColumns(predicted, None, None, off))
    return tuple(columns)


# -- jacobian --arch transformer ------------------------------------------------------------

# Each input is a whole sequence whose Jacobian is (T·D)², so fewer inputs than an MLP's 8 give
# as many singular values; the default shape (16 tokens × 64) has 1,024 per input and block.
DEFAULT_JACOBIAN_INPUTS = 2


def estimate_jacobian_bytes(shape: TransformerShape, depth: int, inputs: int, batch: int, dtype) -> int:
    """The stack and its float64 copy, the batch, one block's trace for n = T·D cotangents
    (about 10 token arrays of width D, 3 of the MLP's width and 4 attention maps per
    cotangent), the Jacobians (running, block, product), one SVD's workspace and every
    singular value."""
    n = shape.seq_len * shape.width
    t, d, hidden = shape.seq_len, shape.width, shape.hidden
    weights = depth * (4 * d * d + 2 * d * hidden) * (np.dtype(dtype).itemsize + 8)
    per_cotangent = (10 * t * d + 3 * t * hidden + 4 * shape.heads * t * t) * 8
    kept = depth * inputs * n * 8
    return (weights + batch * t * d * np.dtype(dtype).itemsize + n * per_cotangent + 3 * n * n * 8
            + 5 * n * n * 8 + kept + _WORKSPACE)


def prepare_jacobian(scheme="xavier-uniform", activation: str = "gelu", *, inputs: int | None = None,
                     spectrum: bool = False, **options):
    """Check a transformer Jacobian run before anything is allocated: T·D at most
    `jacobian.MAX_JACOBIAN_WIDTH` (one SVD of (T·D)² per block and input), and the memory."""
    from ..spectra import MAX_JACOBIAN_WIDTH, JacobianRun, check_inputs

    inputs = check_inputs(inputs, positive_int("batch", options.get("batch", 512)), DEFAULT_JACOBIAN_INPUTS)
    options["theory"] = False
    run = prepare(scheme, activation, **options)
    n = run.shape.seq_len * run.shape.width
    if n > MAX_JACOBIAN_WIDTH:
        raise InitcliError("seq_len", f"the Jacobian of a sequence has --seq-len × --width = {n} rows; up to "
                                      f"{MAX_JACOBIAN_WIDTH} are accepted (lower --seq-len or --width)")
    check_memory(estimate_jacobian_bytes(run.shape, run.depth, inputs, run.batch, run.dtype),
                 options=("--inputs", "--seq-len", "--width", "--depth", "--mlp-ratio"))
    return JacobianRun(run, inputs, bool(spectrum))


def block_jacobian(block: Block, shape: TransformerShape, act: Activation, x: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(∂y/∂x as an (T·D, T·D) matrix, y) for one block at one sequence x (1, T, D): one
    backward pass of all T·D unit cotangents against the sequence's trace (broadcast)."""
    n = shape.seq_len * shape.width
    trace = block_forward(block, shape, act, x)
    rows = block_backward(block, shape, trace, np.eye(n).reshape(n, shape.seq_len, shape.width))
    return rows.reshape(n, n), trace.out


def jacobian_spectrum(stack: TransformerStack, act: Activation, x: np.ndarray, *, spectrum: bool = False,
                      progress: Callable[[int], None] | None = None):
    """(JacobianStats per block, every singular value or None) of ∂y_b/∂x after each block b at
    each sequence of x (m, T, D), in float64: the blocks' Jacobians multiplied in turn."""
    from ..spectra import singular_values, spectrum_stats

    stack64 = stack.astype(np.float64)
    n = stack.shape.seq_len * stack.shape.width
    values = [np.empty((len(x), n)) for _ in range(stack.depth)]
    with np.errstate(all="ignore"):
        for i in range(len(x)):
            xi = x[i:i + 1].astype(np.float64)
            total = np.eye(n)
            for b, block in enumerate(stack64.blocks):
                step, xi = block_jacobian(block, stack.shape, act, xi)
                total = step @ total
                values[b][i] = singular_values(total[:, None, :], progress)[0]
    return tuple(spectrum_stats(b + 1, v) for b, v in enumerate(values)), (tuple(values) if spectrum else None)


def run_jacobian(plan, progress: Callable[[int], None] | None = None):
    """The singular values of ∂y_b/∂x after each block b, for the first `inputs` sequences,
    in float64 on one BLAS thread: a `jacobian.JacobianResult` with one row per block."""
    return jacobian_run(plan, progress, build=inputs, spectrum=jacobian_spectrum)
