"""The transformer engine's kernels: blocks of attention and MLP, forward and backward.

A stack of `depth` blocks on sequences of T tokens of width D (arrays (batch, T, D)). Each
block is a multi-head softmax self-attention sublayer and an MLP sublayer (left out with
mlp_ratio 0), each behind a LayerNorm (no affine: at init torch's γ = 1, β = 0 are the
identity), with skip connections (residual scale α, default 1):

    pre-LN  (Xiong et al. 2020, GPT-2):  x' = x + α·Attn(LN(x)),   y = x' + α·MLP(LN(x'))
    post-LN (Vaswani et al. 2017):       x' = LN(x + α·Attn(x)),   y = LN(x' + α·MLP(x'))

and without skips x' = Attn(LN(x)), y = MLP(LN(x')) (pre) or x' = LN(Attn(x)), y = LN(MLP(x'))
(post). Attn(u) = concat_h(P_h V_h)·W_oᵀ + b_o with Q, K, V = u·W_{q,k,v}ᵀ + b split into H
heads of d_h = D/H, P_h = softmax(s·Q_h K_hᵀ) over the keys (the later ones masked with
`causal`), s = 1/√d_h, or 1/d_h under µP (Yang et al. 2022, §J: the logits' scale for
queries and keys that become correlated during training). MLP(v) = φ(v·W_1ᵀ + b_1)·W_2ᵀ + b_2
with D·mlp_ratio hidden units. Every weight is drawn by the scheme in torch's (out, in)
layout (fans D and D, or D and D·r), biases from N(0, bias_std²).

Inputs are token vectors drawn N(0, input_std²) from the seed: distinct tokens, so no
positional encoding is needed for the signal to be told apart. The loss is L = Σ g ⊙ y_L for
a unit-Gaussian cotangent g, as in `propagate`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from ...activations import Activation
from ...checks import MAX_SIZE, positive_int
from ...errors import InitcliError
from ...residual_init import ResidualInit
from ...schemes import Init, gaussian
from ...stats import all_finite
from ..shared import layer_norm, layer_norm_backward, row_sums, seed_streams
from . import MEMORY_OPTIONS, REFUSED_KINDS  # noqa: F401  (importable from here, as before)

NORM_POSITIONS = ("pre", "post")
DEFAULT_WIDTH = 64
DEFAULT_HEADS = 4
DEFAULT_SEQ_LEN = 16
DEFAULT_MLP_RATIO = 4.0  # Vaswani et al. 2017: d_ff = 4·d_model
DEFAULT_DEPTH = 6
MAX_MLP_RATIO = 64.0
SUBLAYERS = ("attn", "mlp", "stream")


@dataclass(frozen=True)
class TransformerShape:
    """A block's geometry and wiring."""

    width: int
    heads: int
    seq_len: int
    mlp_ratio: float
    causal: bool = False
    norm_position: str = "pre"
    residual: bool = True
    residual_scale: float = 1.0
    logit_scale: str = "sqrt"  # "sqrt": 1/√d_head; "mup": 1/d_head
    skip_scale: float = 1.0  # s of s·x + α·f(x): DeepNorm's α on the skip
    # factors on the weights the scheme drew, by matrix name (a residual-init preset's)
    weight_factors: tuple[tuple[str, float], ...] = ()
    residual_init: ResidualInit | None = None

    def factor(self, name: str) -> float:
        return dict(self.weight_factors).get(name, 1.0)

    @property
    def d_head(self) -> int:
        return self.width // self.heads

    @property
    def hidden(self) -> int:
        """The MLP's hidden units, D·r rounded; 0 without an MLP."""
        return int(round(self.width * self.mlp_ratio))

    @property
    def scale(self) -> float:
        return 1 / math.sqrt(self.d_head) if self.logit_scale == "sqrt" else 1 / self.d_head

    @property
    def sublayers(self) -> tuple[str, ...]:
        return ("attn", "mlp", "stream") if self.hidden else ("attn", "stream")

    def params(self) -> dict:
        return {"arch": "transformer", "width": self.width, "heads": self.heads, "seq_len": self.seq_len,
                "mlp_ratio": self.mlp_ratio, "causal": self.causal, "norm_position": self.norm_position,
                "residual": self.residual, "residual_scale": self.residual_scale,
                "logit_scale": "1/d_head" if self.logit_scale == "mup" else "1/sqrt(d_head)",
                **(self.residual_init.params() if self.residual_init is not None else {})}


def transformer_shape(width: int | None = None, heads: int | None = None, seq_len: int | None = None,
                      mlp_ratio: float | None = None, *, causal: bool = False, norm_position: str | None = None,
                      residual: bool | None = None, residual_scale: float = 1.0, param: str | None = None,
                      residual_init: str | None = None, depth: int | None = None) -> TransformerShape:
    """Check the transformer options (None: the defaults: width 64, 4 heads, 16 tokens, MLP
    ratio 4, pre-LN, skips on)."""
    width = positive_int("width", DEFAULT_WIDTH if width is None else width, MAX_SIZE)
    heads = positive_int("heads", DEFAULT_HEADS if heads is None else heads)
    if width % heads:
        raise InitcliError("heads", f"must divide --width {width} into heads of equal size, got {heads}")
    seq_len = positive_int("seq_len", DEFAULT_SEQ_LEN if seq_len is None else seq_len, MAX_SIZE)
    ratio = DEFAULT_MLP_RATIO if mlp_ratio is None else mlp_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.integer, np.floating)) \
            or not math.isfinite(ratio) or not 0 <= ratio <= MAX_MLP_RATIO:
        raise InitcliError("mlp_ratio", f"must be a number from 0 (no MLP) to {MAX_MLP_RATIO:g}, got {mlp_ratio!r}")
    ratio = float(ratio)
    if ratio and round(width * ratio) < 1:
        raise InitcliError("mlp_ratio", f"gives no hidden unit at --width {width}; use 0 for no MLP or a larger "
                                        f"ratio")
    position = "pre" if norm_position is None else str(norm_position).strip().lower()
    if position not in NORM_POSITIONS:
        raise InitcliError("norm_position", f"unknown position '{norm_position}'; choose from pre, post")
    if not isinstance(residual_scale, (int, float)) or isinstance(residual_scale, bool) \
            or not math.isfinite(residual_scale) or abs(residual_scale) > 1e6:
        raise InitcliError("residual_scale", f"must be a finite number of size at most 1e6, got {residual_scale!r}")
    residual = True if residual is None else bool(residual)
    if not residual and residual_scale != 1.0:
        raise InitcliError("residual_scale", "only applies with skip connections (drop --no-residual)")
    name = "sp" if param is None else str(param).strip().lower()
    if name not in ("sp", "mup"):
        raise InitcliError("param", f"with --arch transformer accepts sp or mup (µP's 1/d_head attention "
                                    f"scale), got '{param}'")
    shape = TransformerShape(width, heads, seq_len, ratio, bool(causal), position, residual, float(residual_scale),
                             "mup" if name == "mup" else "sqrt")
    if residual_init is None or str(residual_init).strip().lower() == "none":
        return shape
    return with_residual_init(shape, residual_init, norm_position, depth)


# What each residual-init preset scales in a transformer block: the matrices that write into the
# stream (GPT-2's c_proj: W_o and W_2), or DeepNet's β-scaled ones (V, O and the MLP, not Q, K).
_PRESET_MATRICES = {"gpt2": ("wo", "w2"), "deepnorm": ("wv", "wo", "w1", "w2")}
_PRESETS_REFUSED = {
    "fixup": "is for normalisation-free ResNets (Zhang et al. 2019); a transformer block keeps its LayerNorms",
    "t-fixup": "removes the LayerNorms (Huang et al. 2020), which this engine keeps in every block",
}


def with_residual_init(shape: TransformerShape, name: str, norm_position: str | None,
                       depth: int | None) -> TransformerShape:
    """The shape with preset `name`'s constants for `depth` blocks: gpt2 scales W_o and W_2 by
    1/√(2·n_layer) (Radford et al. 2019: N = 2·n_layer residual layers); deepnorm is post-LN
    with the skip × (2N)^¼ and W_v, W_o, W_1, W_2 × (8N)^−¼ (Wang et al. 2022, encoder); rezero
    and skipinit start every branch at α = 0; depth-mup multiplies each branch by 1/√N."""
    from dataclasses import replace

    from ...residual_init import get_residual_preset, resolve_residual_init

    preset = get_residual_preset(name)
    if preset.name in _PRESETS_REFUSED:
        raise InitcliError("residual_init", f"{preset.name} {_PRESETS_REFUSED[preset.name]}; with --arch "
                                            f"transformer use gpt2, deepnorm, rezero, skipinit or depth-mup")
    if not shape.residual:
        raise InitcliError("residual_init", "needs skip connections (drop --no-residual)")
    if shape.residual_scale != 1.0:
        raise InitcliError("residual_scale", f"does not apply with --residual-init {preset.name}, which sets the "
                                             "branch multiplier itself")
    if depth is None:
        raise InitcliError("depth", "a residual-init preset needs the number of blocks")
    position = shape.norm_position
    if preset.name == "deepnorm":
        if norm_position is not None and position != "post":
            raise InitcliError("norm_position", "must be post with --residual-init deepnorm: DeepNorm is "
                                                "LN(α·x + f(x)) after each sum")
        position = "post"
    constants = resolve_residual_init(preset.name, depth, 1)
    factor = constants.weight_scales[-1]
    names = [n for n in _PRESET_MATRICES.get(preset.name, ()) if shape.hidden or n not in MLP_WEIGHTS]
    return replace(shape, norm_position=position, residual_scale=constants.residual_scale,
                   skip_scale=constants.skip_scale, weight_factors=tuple((n, factor) for n in names),
                   residual_init=constants)


# -- weights --------------------------------------------------------------------------------

ATTN_WEIGHTS = ("wq", "wk", "wv", "wo")
MLP_WEIGHTS = ("w1", "w2")


@dataclass(frozen=True)
class Block:
    """One block's weights (torch's (out, in) layout) and biases; w1/w2 None without an MLP."""

    wq: np.ndarray
    wk: np.ndarray
    wv: np.ndarray
    wo: np.ndarray
    bq: np.ndarray
    bk: np.ndarray
    bv: np.ndarray
    bo: np.ndarray
    w1: np.ndarray | None = None
    b1: np.ndarray | None = None
    w2: np.ndarray | None = None
    b2: np.ndarray | None = None

    def weights(self, sublayer: str) -> tuple[np.ndarray, ...]:
        names = ATTN_WEIGHTS if sublayer == "attn" else MLP_WEIGHTS
        return tuple(getattr(self, name) for name in names)


@dataclass(frozen=True)
class TransformerStack:
    blocks: tuple[Block, ...]
    shape: TransformerShape

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def astype(self, dtype) -> TransformerStack:
        return TransformerStack(tuple(Block(**{f.name: None if getattr(b, f.name) is None
                                               else getattr(b, f.name).astype(dtype) for f in fields(Block)})
                                      for b in self.blocks), self.shape)


def build_transformer(init: Init, shape: TransformerShape, depth: int, *, bias_std: float = 0.0, seed: int = 0,
                      dtype="float32") -> TransformerStack:
    """Draw every block's weights with `init` from the seed's weights stream, in the order
    Wq, Wk, Wv, Wo, W1, W2 block by block, and the biases from the biases stream."""
    dtype = np.dtype(dtype)
    streams = seed_streams(seed)
    d, hidden = shape.width, shape.hidden
    blocks = []
    for _ in range(depth):
        draws = {name: init.sample((d, d), streams["weights"], dtype) for name in ATTN_WEIGHTS}
        if hidden:
            draws["w1"] = init.sample((hidden, d), streams["weights"], dtype)
            draws["w2"] = init.sample((d, hidden), streams["weights"], dtype)
        for name, factor in shape.weight_factors:  # a residual-init preset's, on the drawn weights
            draws[name] = draws[name] * dtype.type(factor)
        for name, size in (("bq", d), ("bk", d), ("bv", d), ("bo", d)) + ((("b1", hidden), ("b2", d)) if hidden
                                                                          else ()):
            draws[name] = (bias_std * gaussian(streams["biases"], (size,))).astype(dtype)
        blocks.append(Block(**draws))
    return TransformerStack(tuple(blocks), shape)


# -- the pieces -----------------------------------------------------------------------------


def row_max(x: np.ndarray) -> np.ndarray:
    """Maxima over the last axis, shape (…, 1) (nan where a row holds one): column by column
    while rows are short, where numpy's own reduction is slowest."""
    if x.shape[-1] > 32:
        return x.max(axis=-1, keepdims=True)
    top = x[..., :1].copy()
    for j in range(1, x.shape[-1]):
        np.maximum(top, x[..., j:j + 1], out=top)
    return top


def _heads(x: np.ndarray, heads: int) -> np.ndarray:
    """(B, T, D) → (B, H, T, d_h)."""
    b, t, d = x.shape
    return x.reshape(b, t, heads, d // heads).transpose(0, 2, 1, 3)


def _tokens_times(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x (…, T, n) times a matrix w (n, m), all tokens as the rows of one product: numpy's
    matmul would make one small product per sequence, a third slower at 16 tokens."""
    return (x.reshape(-1, x.shape[-1]) @ w).reshape(x.shape[:-1] + (w.shape[-1],))


def _linear(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = _tokens_times(x, w.T)
    if b.any():
        out += b
    return out


# Logits within ±_EXP_SAFE need no shift before exp: e^60 summed over any sequence stays
# finite, and e^−60 is a normal float32. Without the shift exp reads each logit exactly.
_EXP_SAFE = 60.0


def _softmax(logits: np.ndarray, top: float, bottom: float) -> np.ndarray:
    """Softmax over the last axis; -inf (masked) entries get 0. `top` and `bottom` are the
    largest and smallest logits before masking: within ±_EXP_SAFE, exp is taken as it is;
    otherwise each row's largest logit is subtracted first. A row whose logits overflowed
    gives nan, reported as overflow."""
    if bottom >= -_EXP_SAFE and top <= _EXP_SAFE:
        e = np.exp(logits)
    else:
        e = np.subtract(logits, row_max(logits))
        np.exp(e, out=e)
    e /= row_sums(e)
    return e


@dataclass
class AttnCache:
    u: np.ndarray  # the sublayer's input
    q: np.ndarray  # (B, H, T, d_h), views of one (B, T, 3, H, d_h) array
    k: np.ndarray
    v: np.ndarray
    logits: np.ndarray  # (B, H, T, T), masked entries -inf
    probs: np.ndarray
    mixed: np.ndarray  # concat_h(P V): (B, T, D)
    out: np.ndarray
    logits_top: float = math.nan  # the largest logit: nan or +inf when they overflowed


@dataclass
class MlpCache:
    v: np.ndarray
    h: np.ndarray
    act: np.ndarray  # φ(h)
    deriv: np.ndarray  # φ'(h)
    out: np.ndarray


def _qkv_weights(block: Block) -> tuple[np.ndarray, np.ndarray]:
    """W_q, W_k, W_v stacked (3D, D), and their biases: one product serves all three."""
    return np.concatenate((block.wq, block.wk, block.wv)), np.concatenate((block.bq, block.bk, block.bv))


def attention(block: Block, shape: TransformerShape, u: np.ndarray) -> AttnCache:
    heads = shape.heads
    b, t, d = u.shape
    weights, biases = _qkv_weights(block)
    qkv = _linear(u, weights, biases).reshape(b, t, 3, heads, d // heads)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    logits = q @ k.transpose(0, 1, 3, 2)
    logits *= logits.dtype.type(shape.scale)
    top, bottom = float(logits.max()), float(logits.min())
    if shape.causal:
        t = shape.seq_len
        logits[..., np.triu_indices(t, 1)[0], np.triu_indices(t, 1)[1]] = -np.inf
    probs = _softmax(logits, top, bottom)
    if shape.causal:
        top = float(logits.max())  # of the logits kept
    mixed = np.empty((b, t, heads, d // heads), dtype=probs.dtype)  # concat_h(P V), written in place
    np.matmul(probs, v, out=mixed.transpose(0, 2, 1, 3))
    mixed = mixed.reshape(b, t, d)
    return AttnCache(u, q, k, v, logits, probs, mixed, _linear(mixed, block.wo, block.bo), top)


def attention_backward(block: Block, shape: TransformerShape, cache: AttnCache, grad: np.ndarray,
                       grads: dict | None, bias_grads: bool = True) -> np.ndarray:
    """∂L/∂u from ∂L/∂out; the weight (and with bias_grads the bias) gradients into `grads`
    when given."""
    heads, scale = shape.heads, shape.scale
    if grads is not None:
        _weight_grads(grads, "wo", "bo", grad, cache.mixed, bias_grads)
    d_mixed = _heads(_tokens_times(grad, block.wo), heads)
    d_probs = d_mixed @ cache.v.transpose(0, 1, 3, 2)
    # ∂L/∂Q, ∂L/∂K, ∂L/∂V go straight into one (…, T, 3, H, d_h) array: its rows are the
    # stacked projections' deltas, for one weight-gradient product and one input-gradient product
    n, h, t, dh = d_mixed.shape
    d_qkv = np.empty((n, t, 3, h, dh), dtype=d_probs.dtype)
    np.matmul(cache.probs.transpose(0, 1, 3, 2), d_mixed, out=d_qkv[:, :, 2].transpose(0, 2, 1, 3))
    # softmax: dS = P ⊙ (dP − Σ_j P_j dP_j); masked entries have P = 0 and get none
    d_logits = d_probs * cache.probs
    d_logits = np.subtract(d_probs, row_sums(d_logits), out=d_logits)
    d_logits *= cache.probs
    d_logits *= d_logits.dtype.type(scale)
    np.matmul(d_logits, cache.k, out=d_qkv[:, :, 0].transpose(0, 2, 1, 3))
    np.matmul(d_logits.transpose(0, 1, 3, 2), cache.q, out=d_qkv[:, :, 1].transpose(0, 2, 1, 3))
    d_qkv = d_qkv.reshape(n, t, 3 * h * dh)
    weights, _ = _qkv_weights(block)
    if grads is not None:
        stacked = {}
        _weight_grads(stacked, "w", "b", d_qkv, cache.u, bias_grads)
        d = h * dh
        for i, name in enumerate("qkv"):
            grads["w" + name] = stacked["w"][i * d:(i + 1) * d]
            if bias_grads:
                grads["b" + name] = stacked["b"][i * d:(i + 1) * d]
    return _tokens_times(d_qkv, weights)


def mlp(block: Block, act: Activation, v: np.ndarray) -> MlpCache:
    h = _linear(v, block.w1, block.b1)
    a, deriv = act.apply(h)
    if a is h:  # the identity returns its input; h is observed apart from φ(h)
        a = h.copy()
    if not all_finite(h):  # past an overflow relu'(nan) = 0 would report a clean zero
        deriv = np.where(np.isnan(h), np.nan, deriv).astype(deriv.dtype)
    return MlpCache(v, h, a, deriv, _linear(a, block.w2, block.b2))


def mlp_backward(block: Block, cache: MlpCache, grad: np.ndarray, grads: dict | None,
                 bias_grads: bool = True) -> np.ndarray:
    if grads is not None:
        _weight_grads(grads, "w2", "b2", grad, cache.act, bias_grads)
    d_h = _tokens_times(grad, block.w2)
    d_h *= cache.deriv
    if grads is not None:
        _weight_grads(grads, "w1", "b1", d_h, cache.v, bias_grads)
    return _tokens_times(d_h, block.w1)


def _weight_grads(grads: dict, weight: str, bias: str, delta: np.ndarray, inputs: np.ndarray,
                  bias_grads: bool = True) -> None:
    """∂L/∂W = Σ_tokens δ ⊗ input, and with bias_grads ∂L/∂b = Σ_tokens δ."""
    flat_delta = delta.reshape(-1, delta.shape[-1])
    grads[weight] = flat_delta.T @ inputs.reshape(-1, inputs.shape[-1])
    if bias_grads:
        grads[bias] = flat_delta.sum(axis=0)


# -- a block --------------------------------------------------------------------------------


@dataclass
class BlockTrace:
    """What a block's backward pass needs, and its outputs."""

    x: np.ndarray  # the block's input
    attn: AttnCache
    mlp: MlpCache | None
    norms: list  # (normed, inv_std) of each LayerNorm, in order
    mid: np.ndarray  # the stream between the sublayers (x')
    out: np.ndarray  # the block's output (y)


def block_forward(block: Block, shape: TransformerShape, act: Activation, x: np.ndarray) -> BlockTrace:
    alpha = x.dtype.type(shape.residual_scale)
    norms = []

    def norm(z):
        normed, inv_std = layer_norm(z)
        norms.append((normed, inv_std))
        return normed

    skip = x.dtype.type(shape.skip_scale)

    def join(stream, branch):  # s·x + α·f(x), or the branch alone without skips
        if not shape.residual:
            return branch
        return (stream * skip if skip != 1 else stream) + (branch * alpha if alpha != 1 else branch)

    if shape.norm_position == "pre":
        attn = attention(block, shape, norm(x))
        mid = join(x, attn.out)
        cache = mlp(block, act, norm(mid)) if shape.hidden else None
        out = join(mid, cache.out) if cache is not None else mid
    else:
        attn = attention(block, shape, x)
        mid = norm(join(x, attn.out))
        cache = mlp(block, act, mid) if shape.hidden else None
        out = norm(join(mid, cache.out)) if cache is not None else mid
    return BlockTrace(x, attn, cache, norms, mid, out)


def block_backward(block: Block, shape: TransformerShape, trace: BlockTrace, grad: np.ndarray,
                   grads: dict | None = None, on_sublayer: Callable[[str, np.ndarray], None] | None = None,
                   bias_grads: bool = True) -> np.ndarray:
    """∂L/∂x from ∂L/∂y. on_sublayer(name, ∂L/∂(sublayer output)) sees the MLP's, then the
    attention's; `grads` receives every weight's gradient, and with bias_grads every bias's."""
    alpha = grad.dtype.type(shape.residual_scale)
    norms = list(trace.norms)

    def unnorm(g):  # back through the last LayerNorm not yet passed
        normed, inv_std = norms.pop()
        return layer_norm_backward(g, normed, inv_std)

    skip = grad.dtype.type(shape.skip_scale)

    def branch_grad(g):
        return g * alpha if shape.residual and alpha != 1 else g

    def skip_grad(g):
        return g * skip if skip != 1 else g

    if shape.norm_position == "pre":
        d_mid = grad
        if trace.mlp is not None:
            d_branch = branch_grad(grad)
            if on_sublayer is not None:
                on_sublayer("mlp", d_branch)
            d_v = unnorm(mlp_backward(block, trace.mlp, d_branch, grads, bias_grads))
            d_mid = skip_grad(grad) + d_v if shape.residual else d_v
        d_branch = branch_grad(d_mid)
        if on_sublayer is not None:
            on_sublayer("attn", d_branch)
        d_u = unnorm(attention_backward(block, shape, trace.attn, d_branch, grads, bias_grads))
        return skip_grad(d_mid) + d_u if shape.residual else d_u
    d_mid = grad
    if trace.mlp is not None:
        d_sum = unnorm(grad)
        d_branch = branch_grad(d_sum)
        if on_sublayer is not None:
            on_sublayer("mlp", d_branch)
        d_v = mlp_backward(block, trace.mlp, d_branch, grads, bias_grads)
        d_mid = skip_grad(d_sum) + d_v if shape.residual else d_v
    d_sum = unnorm(d_mid)
    d_branch = branch_grad(d_sum)
    if on_sublayer is not None:
        on_sublayer("attn", d_branch)
    d_x = attention_backward(block, shape, trace.attn, d_branch, grads, bias_grads)
    return skip_grad(d_sum) + d_x if shape.residual else d_x


def forward(stack: TransformerStack, act: Activation, x: np.ndarray,
            observe: Callable[[int, BlockTrace], None] | None = None) -> list[BlockTrace]:
    traces = []
    for index, block in enumerate(stack.blocks, start=1):
        trace = block_forward(block, stack.shape, act, x)
        if observe is not None:
            observe(index, trace)
        traces.append(trace)
        x = trace.out
    return traces


def backward(stack: TransformerStack, traces: list[BlockTrace], cotangent: np.ndarray,
             observe: Callable[[int, str, np.ndarray, dict | None], None] | None = None, *,
             keep_grads: bool = True) -> tuple[list[dict] | None, np.ndarray]:
    """Backpropagate ∂L/∂y_L = cotangent. observe(block, sublayer, ∂L/∂act, weight grads or
    None) top down: "stream" with the block output's gradient, then "mlp" and "attn" with
    their outputs' gradients and weight gradients (the biases' too with keep_grads). Returns
    (per-block gradient dicts bottom up, or None, and ∂L/∂x)."""
    all_grads = [] if keep_grads else None
    grad = cotangent
    for index in range(stack.depth, 0, -1):
        block, trace = stack.blocks[index - 1], traces[index - 1]
        grads = {} if (keep_grads or observe is not None) else None
        if observe is not None:
            observe(index, "stream", grad, None)
        seen = {}
        grad = block_backward(block, stack.shape, trace, grad, grads,
                              None if observe is None else seen.__setitem__, bias_grads=keep_grads)
        if observe is not None:
            for name in ("mlp", "attn"):
                if name in seen:
                    observe(index, name, seen[name], grads)
        if keep_grads:
            all_grads.append(grads)
    if all_grads is not None:
        all_grads.reverse()
    return all_grads, grad


