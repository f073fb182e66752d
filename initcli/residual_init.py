"""Residual-init presets: how a residual stack x_{l+1} = s·x_l + r·f(x_l) is set up at init
on top of the scheme that draws its weights (Fixup, T-Fixup, ReZero, SkipInit, DeepNorm,
GPT-2's scaled projections, depth-µP). `--residual-init NAME` with propagate, compare, train,
jacobian and the transformer engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import InitcliError, suggest

# -- residual-init presets ------------------------------------------------------------------
#
# Not schemes: each says how a residual stack x_{l+1} = s·x_l + r·f(x_l) (`--residual`) is
# set up at init on top of the scheme that draws the weights: the branch multiplier r, the
# skip multiplier s, a LayerNorm on the stream after the sum, and a factor on the weights of
# each layer of a branch (`--block` layers, m below). N (= L) is the number of residual
# blocks of the stack.

FIXUP = "Zhang, Dauphin & Ma 2019, Fixup Initialization: Residual Learning Without Normalization"
T_FIXUP = "Huang, Perez, Ba & Volkovs 2020, Improving Transformer Optimization Through Better Initialization"
REZERO = "Bachlechner et al. 2020, ReZero is All You Need: Fast Convergence at Large Depth"
SKIPINIT = "De & Smith 2020, Batch Normalization Biases Residual Blocks Towards the Identity Function in Deep Networks"
DEEPNORM = "Wang et al. 2022, DeepNet: Scaling Transformers to 1,000 Layers"
GPT2 = "Radford et al. 2019, Language Models are Unsupervised Multitask Learners (as nanoGPT: 0.02/√(2·n_layer))"
DEPTH_MUP = ("Yang, Yu, Zhu & Hayou 2023, Tensor Programs VI: Feature Learning in Infinite-Depth Neural Networks; "
             "Bordelon, Noci, Li, Hanin & Pehlevan 2023, Depthwise Hyperparameter Transfer in Residual Networks")

# T-Fixup's factor for the encoder's value/output projections and FFN weights (Huang et al.
# 2020, section 3.2: 0.67·N^(−1/4), with Xavier init underneath)
T_FIXUP_FACTOR = 0.67


@dataclass(frozen=True)
class ResidualPreset:
    name: str
    formula: str
    reference: str
    designed_for: str
    aliases: tuple[str, ...] = ()
    refuses_layer_norm: bool = False  # its weight factors would be undone by --norm layer's LN after each Linear


RESIDUAL_PRESETS: tuple[ResidualPreset, ...] = (
    ResidualPreset("fixup", "last layer of each branch W = 0, the other branch layers × L^(−1/(2m−2)); "
                   "biases 0 (the paper's scalar biases at 0, multiplier 1); train: read-out W = 0",
                   FIXUP, "residual stacks without normalisation (--scheme he-normal)", refuses_layer_norm=True),
    ResidualPreset("t-fixup", "every branch layer × 0.67·N^(−1/4) (the encoder's FFN factor; no attention here)",
                   T_FIXUP, "transformer encoders without LayerNorm (--scheme xavier-normal)", refuses_layer_norm=True),
    ResidualPreset("rezero", "x + α·f(x) with α = 0", REZERO, "any residual stack (α trained from 0)"),
    ResidualPreset("skipinit", "x + α·f(x) with α = 0", SKIPINIT, "residual stacks without batch norm"),
    ResidualPreset("deepnorm", "x_{l+1} = LN(α·x_l + f(x_l)), α = (2N)^(1/4); branch weights × β = (8N)^(−1/4) "
                   "(encoder form)", DEEPNORM, "post-LN transformers (--scheme xavier-normal)",
                   refuses_layer_norm=True),
    ResidualPreset("gpt2", "last layer of each branch (the output projection) × 1/√(2·n_layer): with --scheme gpt2, "
                   "N(0, 0.02²/(2·n_layer)), the others N(0, 0.02²)", GPT2, "pre-LN transformers (--scheme gpt2)",
                   refuses_layer_norm=True),
    ResidualPreset("depth-mup", "x + f(x)/√L", DEPTH_MUP, "residual stacks scaled in depth", aliases=("depth-µp",)),
)

_RESIDUAL_BY_NAME = {p.name: p for p in RESIDUAL_PRESETS}
_RESIDUAL_ALIASES = {alias: p.name for p in RESIDUAL_PRESETS for alias in p.aliases} | {
    "depthmup": "depth-mup", "tfixup": "t-fixup", "deep-norm": "deepnorm", "gpt-2": "gpt2"}
RESIDUAL_INIT_NAMES: tuple[str, ...] = tuple(_RESIDUAL_BY_NAME)


def get_residual_preset(name: str) -> ResidualPreset:
    key = str(name).strip().lower().replace("_", "-")
    key = _RESIDUAL_ALIASES.get(key, key)
    if key not in _RESIDUAL_BY_NAME:
        raise InitcliError("residual_init", f"unknown residual init '{name}'{suggest(key, list(_RESIDUAL_BY_NAME))}; "
                                            f"choose from {', '.join(RESIDUAL_INIT_NAMES)}")
    return _RESIDUAL_BY_NAME[key]


@dataclass(frozen=True)
class ResidualInit:
    """A residual-init preset resolved for a stack of `blocks` blocks of `block` layers.

    `residual_scale` r multiplies each branch, `skip_scale` s each skip, `post_norm` puts a
    LayerNorm on the stream after the sum: x_{l+1} = [LN](s·x_l + r·f(x_l)). `weight_scales`
    (one per layer of a branch) multiply the weights the scheme drew. `residual_alpha` is the
    α of the preset's paper (on the skip for DeepNorm; on the branch for ReZero, SkipInit and
    depth-µP; 1 otherwise) and `branch_scale` its factor on branch weights (None where there
    is none: Fixup with one layer per branch has only its zeroed last layer).
    """

    name: str
    blocks: int
    block: int
    residual_scale: float = 1.0
    skip_scale: float = 1.0
    post_norm: bool = False
    weight_scales: tuple[float, ...] = ()
    residual_alpha: float = 1.0
    branch_scale: float | None = 1.0
    zero_readout: bool = False  # Fixup: the classification layer at 0 too (train)
    zero_biases: bool = False  # Fixup: its scalar biases start at 0

    def params(self) -> dict:
        return {"residual_init": self.name, "residual_alpha": self.residual_alpha, "branch_scale": self.branch_scale,
                "skip_scale": self.skip_scale, "post_norm": self.post_norm}


def resolve_residual_init(name: str, blocks: int, block: int) -> ResidualInit:
    """The constants of preset `name` for `blocks` residual blocks (N, or L) of `block`
    layers (m) each."""
    preset = get_residual_preset(name)
    n, m = int(blocks), int(block)
    ones = (1.0,) * m
    if preset.name == "fixup":
        # Zhang et al. 2019, section 3: the last layer of each branch at 0, the other m−1
        # layers of each branch × L^(−1/(2m−2)) (no other layers, and no factor, when m = 1)
        inner = n ** (-1 / (2 * m - 2)) if m > 1 else None
        return ResidualInit("fixup", n, m, weight_scales=(inner,) * (m - 1) + (0.0,), branch_scale=inner,
                            zero_readout=True, zero_biases=True)
    if preset.name == "t-fixup":
        factor = T_FIXUP_FACTOR * n ** -0.25
        return ResidualInit("t-fixup", n, m, weight_scales=(factor,) * m, branch_scale=factor)
    if preset.name in ("rezero", "skipinit"):
        return ResidualInit(preset.name, n, m, residual_scale=0.0, weight_scales=ones, residual_alpha=0.0)
    if preset.name == "deepnorm":
        # DeepNet, encoder-only row of its table: α = (2N)^¼ on the skip, β = (8N)^−¼ on the
        # branch weights; N counts the blocks
        alpha, beta = (2 * n) ** 0.25, (8 * n) ** -0.25
        return ResidualInit("deepnorm", n, m, skip_scale=alpha, post_norm=True, weight_scales=(beta,) * m,
                            residual_alpha=alpha, branch_scale=beta)
    if preset.name == "gpt2":
        factor = 1 / math.sqrt(2 * n)
        return ResidualInit("gpt2", n, m, weight_scales=(1.0,) * (m - 1) + (factor,), branch_scale=factor)
    # depth-µP: the branch multiplier 1/√L
    alpha = 1 / math.sqrt(n)
    return ResidualInit("depth-mup", n, m, residual_scale=alpha, weight_scales=ones, residual_alpha=alpha)


def residual_init_table() -> list[dict]:
    """One record per residual-init preset, in `scheme_table`'s columns."""
    return [{"name": p.name, "aliases": ", ".join(p.aliases), "distribution": "the scheme's", "formula": p.formula,
             "mode": "", "scale": None, "designed_for": p.designed_for, "reference": p.reference}
            for p in RESIDUAL_PRESETS]
