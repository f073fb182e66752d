"""The readings a tensor is tested against, each a valid --scheme: Xavier, He, LeCun and
torch-default over their modes, gains, slopes and families (their stds from initcli's scheme
library), the fixed-std conventions (GPT-2/BERT's 0.02, GPT-2's residual projections,
nn.Embedding's N(0, 1), Keras's embedding U(±0.05)) and torch's recurrent U(±1/√hidden)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..schemes import gpt2_residual_std, make_init
from .families import FAMILIES

# torch.nn.init.calculate_gain's table (linear/sigmoid 1, tanh 5/3, relu √2, selu 3/4) and the
# leaky slopes people use (0.01 is indistinguishable from relu: its std differs by 5e-5, so
# it is left out and reads as a = 0; 0.2 is the GAN default, 0.3 Keras's LeakyReLU default)
GAINS = ((1.0, ""), (5 / 3, "gain=5/3"), (math.sqrt(2), "gain=sqrt2"), (0.75, "gain=3/4"))
SLOPES = (0.0, 0.1, 0.2, 0.3)
GPT2_STD = 0.02  # GPT-2 / BERT initializer_range (Radford et al. 2019; Devlin et al. 2019)
KERAS_EMBEDDING_LIMIT = 0.05  # Keras Embedding's default RandomUniform(-0.05, 0.05)


@dataclass(frozen=True)
class Candidate:
    """A reading: its name (a valid --scheme), its family, its std; `mean` for the fixed
    conventions that are not centred (U(0, b)); `complexity` the options a user must have
    chosen to get it (None: counted from the name), for ordering readings by plausibility."""

    name: str
    family: str
    expected_std: float
    note: str = ""
    mean: float = 0.0
    complexity: int | None = None

    @property
    def cost(self) -> int:
        if self.complexity is not None:
            return self.complexity
        # every option is a choice; a leaky slope is a choice about the activation too
        return self.name.count("=") + (1 if "a=" in self.name else 0)


# Readings are ordered by Σz² + PRIOR_PER_OPTION · options (an information criterion: each
# option a user had to choose costs as much as a fitted parameter in AIC), so plain He comes
# before He with a leaky slope of 0.1 unless the data clearly prefer the slope.
PRIOR_PER_OPTION = 2.0


def scheme_spec(scheme: str, options: list[str]) -> str:
    options = [o for o in options if o]
    return f"{scheme}({','.join(options)})" if options else scheme


_STD_CACHE: dict = {}


def _expected(scheme: str, shape: tuple[int, ...], **options) -> float:
    key = (scheme, shape, tuple(sorted(options.items())))
    if key not in _STD_CACHE:
        _STD_CACHE[key] = make_init(scheme, **options).expected_std(shape)
    return _STD_CACHE[key]


def scaling_candidates(shape: tuple[int, ...]) -> list[Candidate]:
    """Xavier, He, LeCun and torch-default over their modes, gains, slopes and families, for a
    tensor of this torch-layout shape (every std from initcli's scheme library)."""
    out = []
    for family in FAMILIES:
        base = {"uniform": "uniform", "normal": "normal", "truncated-normal": "normal"}[family]
        dist = "distribution=truncated-normal" if family == "truncated-normal" else ""
        for gain, label in GAINS:
            out.append(Candidate(scheme_spec(f"xavier-{base}", [dist, label]), family,
                                 _expected(f"xavier-{base}", shape, gain=gain, distribution=family)))
        for mode in ("fan_in", "fan_out"):
            mode_label = "" if mode == "fan_in" else "mode=fan_out"
            for slope in SLOPES:
                options = {"activation": "leaky-relu", "negative_slope": slope} if slope else {}
                out.append(Candidate(scheme_spec(f"he-{base}", [mode_label, dist, f"a={slope:g}" if slope else ""]), family,
                                     _expected(f"he-{base}", shape, mode=mode, distribution=family, **options)))
            for gain, label in GAINS:
                if label == "gain=sqrt2":  # lecun·√2 is He
                    continue
                out.append(Candidate(scheme_spec(f"lecun-{base}", [mode_label, dist, label]), family,
                                     _expected(f"lecun-{base}", shape, mode=mode, gain=gain, distribution=family)))
    out.append(Candidate("torch-default", "uniform", _expected("torch-default", shape)))
    # U(±1/√fan_out): torchvision's EfficientNet head (uniform_(-1/√out_features, 1/√out_features))
    out.append(Candidate("torch-default(mode=fan_out)", "uniform", _expected("torch-default", shape, mode="fan_out")))
    return out


def fixed_candidates(n_layer: int | None, extra: tuple[Candidate, ...] = ()) -> list[Candidate]:
    """The fixed-std conventions: N(0, 0.02) (GPT-2, BERT; timm's trunc_normal_(std=0.02) cuts at
    ±2 absolute, i.e. 100σ, and is the same normal), GPT-2's residual projections
    0.02/√(2·n_layer), N(0, 1) (nn.Embedding) and Keras's embedding U(±0.05); `extra`: the
    file's own conventions (config.json's initializer_range, stds shared by many tensors)."""
    out = [Candidate("normal(std=0.02)", "normal", _expected("gpt2", (1,)),
                     "GPT-2/BERT N(0, 0.02); timm's trunc_normal_(std=0.02) cuts at ±2 = 100σ: the same normal",
                     complexity=0),
           Candidate("normal(std=1)", "normal", 1.0, "N(0, 1): nn.Embedding's default", complexity=0),
           Candidate(f"uniform(limit={KERAS_EMBEDDING_LIMIT:g})", "uniform",
                     _expected("uniform", (1,), limit=KERAS_EMBEDDING_LIMIT), "Keras Embedding's default", complexity=1),
           Candidate("uniform(low=0,high=1)", "uniform", 1 / math.sqrt(12), "torch's uniform_() default U(0, 1)",
                     mean=0.5, complexity=1)]
    if n_layer:
        out.append(Candidate(f"gpt2-residual(n_layer={n_layer})", "normal", gpt2_residual_std(n_layer),
                             "GPT-2 residual projection 0.02/√(2·n_layer)", complexity=0))
    known = {c.name for c in out}
    out.extend(c for c in extra if c.name not in known)
    return out


def centred(candidates: list[Candidate]) -> list[Candidate]:
    """The zero-mean ones: a weight matrix's readings (U(0, 1) is for gates and masks)."""
    return [c for c in candidates if c.mean == 0]


def recurrent_candidates(shape: tuple[int, ...], hidden: int | None) -> list[Candidate]:
    """torch's LSTM/GRU/RNN draw every weight (and bias) from U(±1/√hidden_size), whatever
    the fans; written as the uniform scheme that gives it."""
    if not hidden:
        return []
    limit = 1 / math.sqrt(hidden)
    return [Candidate(f"uniform(limit={limit:.6g})", "uniform", limit / math.sqrt(3),
                      f"torch's LSTM/GRU/RNN default U(±1/√hidden_size), hidden_size {hidden}", complexity=0)]
