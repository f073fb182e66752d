"""The named presets (`--scheme NAME`): each a kind and its data, with the formula, the
activation it was designed for and the paper; and their table for `initcli schemes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..residual_init import residual_init_table
from .core import SPARSE_STD
from .kinds import KINDS


@dataclass(frozen=True)
class Scheme:
    """A named preset. `kind` says which sampler applies; the rest is its data."""

    name: str
    # "scaling", "fixed" (normal/uniform with --std/--mean or --limit/--low/--high), "zeros",
    # "constant", "trunc-normal", "sparse", "dirac", "orthogonal", "delta-orthogonal",
    # "orthogonal-per-tap",
    # "identity", "lsuv"
    kind: str
    distribution: str = "normal"
    scale: float = 1.0
    mode: str = "fan_in"
    slope_corrected: bool = False  # He: scale / (1 + a²) when the activation is leaky-relu
    aliases: tuple[str, ...] = ()
    formula: str = ""
    designed_for: str = ""
    reference: str = ""
    value: float | None = None  # a constant preset's fixed value (ones: 1); None: --value
    default_std: float = 1.0  # --std when not given


GPT2_INIT_STD = 0.02  # GPT-2's initializer_range
GPT2_DEFAULT_N_LAYER = 12  # GPT-2 small


def gpt2_residual_std(n_layer: int) -> float:
    """GPT-2's residual projections: 0.02/√(2·n_layer) (two residual adds per block)."""
    return GPT2_INIT_STD / math.sqrt(2 * n_layer)


GPT2_RESIDUAL_STD = gpt2_residual_std(GPT2_DEFAULT_N_LAYER)


GLOROT = "Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward neural networks"
HE = "He et al. 2015, Delving Deep into Rectifiers"
LECUN = "LeCun et al. 1998, Efficient BackProp"


SCHEMES: tuple[Scheme, ...] = (
    Scheme("zeros", "zeros", formula="W = 0", aliases=("zero",),
           designed_for="none (never breaks symmetry)", reference="torch.nn.init.zeros_"),
    Scheme("ones", "constant", formula="W = 1", value=1.0,
           designed_for="none (never breaks symmetry)", reference="torch.nn.init.ones_; Keras Ones"),
    Scheme("constant", "constant", formula="W = value (--value, default 0.5)",
           designed_for="none (never breaks symmetry)", reference="torch.nn.init.constant_"),
    Scheme("normal", "fixed", "normal", formula="N(mean, std²): --mean (default 0), --std (default 1)",
           aliases=("standard-normal", "randn"), designed_for="none (ignores the fans)",
           reference="torch.nn.init.normal_"),
    Scheme("uniform", "fixed", "uniform",
           formula="U(-limit, limit) (--limit, default 1), or U(low, high) with --low/--high",
           aliases=("rand",), designed_for="none (ignores the fans)", reference="torch.nn.init.uniform_"),
    Scheme("trunc-normal", "trunc-normal", formula="N(mean, std²) restricted to [low, high] "
           "(--mean 0, --std 1, --low -2, --high 2: absolute bounds, as torch)",
           designed_for="none (ignores the fans); transformers (ViT: std 0.02)",
           reference="torch.nn.init.trunc_normal_"),
    Scheme("sparse", "sparse", formula="N(0, std²) (--std, default 0.01), ⌈sparsity·rows⌉ zeros per column "
           "(--sparsity, default 0.1)", default_std=SPARSE_STD, designed_for="deep nets trained by "
           "Hessian-free optimisation", reference="Martens 2010, Deep learning via Hessian-free optimization; "
           "torch.nn.init.sparse_"),
    Scheme("xavier-normal", "scaling", "normal", 1.0, "fan_avg",
           aliases=("xavier", "glorot", "glorot-normal"),
           formula="std = √(2/(fan_in+fan_out))", designed_for="tanh, sigmoid, linear", reference=GLOROT),
    Scheme("xavier-uniform", "scaling", "uniform", 1.0, "fan_avg", aliases=("glorot-uniform",),
           formula="limit = √(6/(fan_in+fan_out))", designed_for="tanh, sigmoid, linear", reference=GLOROT),
    Scheme("he-normal", "scaling", "normal", 2.0, "fan_in", True,
           aliases=("he", "kaiming", "kaiming-normal"),
           formula="std = √(2/((1+a²)·fan_in))", designed_for="relu, leaky-relu (slope a)", reference=HE),
    Scheme("he-uniform", "scaling", "uniform", 2.0, "fan_in", True, aliases=("kaiming-uniform",),
           formula="limit = √(6/((1+a²)·fan_in))", designed_for="relu, leaky-relu (slope a)", reference=HE),
    Scheme("lecun-normal", "scaling", "normal", 1.0, "fan_in", aliases=("lecun",),
           formula="std = √(1/fan_in)", designed_for="selu, linear", reference=LECUN),
    Scheme("lecun-uniform", "scaling", "uniform", 1.0, "fan_in",
           formula="limit = √(3/fan_in)", designed_for="selu, linear", reference=LECUN),
    Scheme("orthogonal", "orthogonal", formula="Q of QR(N(0,1)), sign-fixed; std = 1/√max(rows, cols)",
           designed_for="linear, tanh (dynamical isometry)",
           reference="Saxe et al. 2013, Exact solutions to the nonlinear dynamics of learning"),
    Scheme("delta-orthogonal", "delta-orthogonal", aliases=("delta",),
           formula="centre tap orthogonal (out×in), every other tap 0; std = 1/√(max(out, in)·∏kernel)",
           designed_for="conv stacks (dynamical isometry)",
           reference="Xiao et al. 2018, Dynamical Isometry and a Mean Field Theory of CNNs"),
    Scheme("orthogonal-per-tap", "orthogonal-per-tap", aliases=("per-tap-orthogonal",),
           formula="every tap an independent orthogonal (out×in) times 1/√∏kernel; std = 1/√(max(out, in)·∏kernel) "
                   "(σ_w² = 1 for C→C, but not isometric); a 2-D shape is one tap: orthogonal",
           designed_for="conv stacks (variance-preserving, random over taps)",
           reference="a variant of delta-orthogonal (Xiao et al. 2018) with every tap orthogonal, as "
                     "orthogonal_ applied per kernel position"),
    Scheme("dirac", "dirac", formula="centre tap of W[g·out/groups + i, i] = 1 for i < min(out/groups, in) "
           "(--groups, default 1), every other entry 0; on a 2-D matrix, eye per group",
           designed_for="conv stacks (preserves the input channels)", reference="torch.nn.init.dirac_"),
    Scheme("identity", "identity", aliases=("eye",), formula="W = I (ones on the diagonal, as torch's eye_)",
           designed_for="linear and residual stacks", reference="Le et al. 2015; torch.nn.init.eye_"),
    Scheme("lsuv", "lsuv", formula="orthogonal, then each layer scaled to unit pre-activation variance on the batch",
           designed_for="any activation (data-driven)",
           reference="Mishkin & Matas 2015, All you need is a good init"),
    Scheme("torch-default", "scaling", "uniform", 1 / 3, "fan_in", aliases=("pytorch", "torch"),
           formula="limit = 1/√fan_in", designed_for="PyTorch nn.Linear's default",
           reference="PyTorch nn.Linear.reset_parameters: kaiming_uniform_(a=√5)"),
    # fixed-std conventions: presets over normal / trunc-normal with their std as default
    Scheme("gpt2", "fixed", "normal", aliases=("bert",), default_std=0.02,
           formula="N(0, 0.02²) (--std to change; GPT-2's residual projections: --std 0.02/√(2·n_layer))",
           designed_for="transformers (GPT-2, BERT: initializer_range 0.02)",
           reference="Radford et al. 2019, Language Models are Unsupervised Multitask Learners; Devlin et al. 2019"),
    Scheme("gpt2-residual", "fixed", "normal", default_std=GPT2_RESIDUAL_STD,
           formula="N(0, (0.02/√(2·n_layer))²): gpt2-residual(n_layer=N); n_layer 12 (GPT-2 small) by default",
           designed_for="the output projections of pre-LN transformer blocks (GPT-2's c_proj)",
           reference="Radford et al. 2019, Language Models are Unsupervised Multitask Learners (section 2.3)"),
    Scheme("timm-trunc-normal", "trunc-normal", aliases=("vit",), default_std=0.02,
           formula="trunc_normal_(std=0.02) with torch's absolute cut-offs ±2, i.e. ±100σ: a plain N(0, 0.02²)",
           designed_for="vision transformers (timm, ViT)",
           reference="timm's trunc_normal_(std=.02); Dosovitskiy et al. 2021, An Image is Worth 16x16 Words"),
)

SCHEME_NAMES: tuple[str, ...] = tuple(s.name for s in SCHEMES)


def scheme_table(residual_inits: bool = False) -> list[dict]:
    """One record per scheme, for `initcli schemes`. With `residual_inits`, each row also
    has a `kind` ('scheme' or 'residual-init') and the residual-init presets follow the
    schemes."""
    rows = [
        {
            "name": s.name,
            "aliases": ", ".join(s.aliases),
            "distribution": s.distribution if KINDS[s.kind].takes_distribution else s.kind,
            "formula": s.formula,
            "mode": s.mode if KINDS[s.kind].variance_scaling else "",
            "scale": s.scale if KINDS[s.kind].variance_scaling else None,
            "designed_for": s.designed_for,
            "reference": s.reference,
        }
        for s in SCHEMES
    ]
    if not residual_inits:
        return rows
    return ([{"kind": "scheme", **row} for row in rows]
            + [{"kind": "residual-init", **row} for row in residual_init_table()])
