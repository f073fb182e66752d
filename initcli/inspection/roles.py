"""What a tensor's name and shape say: its role (linear, conv, embedding, recurrent, norm
scale or shift, bias, layer scale, token, table, other), whether it is a head or the last
layer of a residual branch, how a layout reads its fans, and what the names tell of the model
(HF Conv1D's (in, out) matrices, a recurrent layer's hidden size, the number of blocks).
Nothing here reads values."""

from __future__ import annotations

import math
import re

ROLES = ("linear", "conv", "embedding", "recurrent", "norm_scale", "norm_shift", "bias", "layer_scale", "token",
         "table", "other")
WEIGHT_ROLES = ("linear", "conv", "embedding", "recurrent")  # matrices whose units feed later layers
# name patterns real checkpoints use (HF transformers, timm, torchvision, Keras)
_EMBED = re.compile(r"(embed|(^|[._])(wte|wpe|emb|shared|tok_embeddings|word_embeddings|position_embeddings)([._]|$))",
                    re.IGNORECASE)
_TOKEN = re.compile(r"(^|[._])(cls_token|dist_token|mask_token|reg_token|register_tokens|pos_embed|pos_embedding|"
                    r"position_embedding|position_embeddings|absolute_pos_embed|query_tokens|latents|codevectors|"
                    r"[a-z_]*_token|[a-z_]*_tokens)$", re.IGNORECASE)
_TABLE = re.compile(r"(relative_position_bias_table|relative_attention_bias|rel_pos|rel_pos_[hw]|position_bias|"
                    r"final_logits_bias|attention_biases)", re.IGNORECASE)
_LAYER_SCALE = re.compile(r"(^|[._])(layer_scale[a-z0-9_]*|ls[0-9]?|gamma_[0-9]|lambda[0-9_]*|ls_gamma)([._]|$)",
                          re.IGNORECASE)
_RECURRENT = re.compile(r"(^|\.)(weight|bias)_(ih|hh|hr)_l[0-9]+(_reverse)?$")
_KERAS_RECURRENT = re.compile(r"recurrent_kernel$")
# HF's Conv1D (GPT-2 family) stores (in, out); these model types use it
CONV1D_MODEL_TYPES = ("gpt2", "openai-gpt", "imagegpt", "decision_transformer", "gpt2-medium")
_CONV1D_NAMES = re.compile(r"(^|\.)(c_attn|c_fc|c_proj|q_attn)\.weight$")
_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def _stem(name: str) -> tuple[str, str]:
    head, _, last = name.rpartition(".")
    return head, last


def module_parts(name: str) -> list[str]:
    """The module path of a parameter: 'h.0.mlp.weight' -> ['h', '0', 'mlp'] (a bare name is its own)."""
    parts = name.split(".")
    return parts[:-1] if len(parts) > 1 else parts


_WEIGHT_NAMES = ("weight", "kernel", "w", "filter", "filters", "in_proj_weight", "q_proj_weight", "k_proj_weight",
                 "v_proj_weight")  # the last four: nn.MultiheadAttention's packed projections
# state-space parameters set by formula, not drawn: Mamba's S4D-real A (log 1…N per channel),
# its Δ bias (softplus⁻¹ of a log-uniform Δ) and its skip D (ones)
_SSM = re.compile(r"(^|\.)(A_log|A|D|dt_bias)$|(^|\.)dt_proj\.bias$")
_NORM_MODULE = re.compile(r"(norm|(^|[._])(ln|bn|gn)[0-9_]*$|layernorm|batchnorm|groupnorm)", re.IGNORECASE)


_WEIGHT_NORM_G = re.compile(r"\.parametrizations\.weight\.original0$|\.weight_g$")
_WEIGHT_NORM_V = re.compile(r"\.parametrizations\.weight\.original1$|\.weight_v$")


def set_by_formula(name: str) -> str | None:
    """Why a parameter is computed rather than drawn, or None."""
    if _SSM.search(name):
        return "a state-space parameter set by formula (Mamba's A = −(1…N), Δ bias, skip D), not drawn"
    if _WEIGHT_NORM_G.search(name):
        return "weight norm's magnitude g = ‖v‖, computed from the direction v at init"
    return None


# the last layer of a residual branch (attention's output projection, the MLP's second layer,
# a bottleneck's last conv): at zero, the block starts as the identity; GPT-2 scales these
BRANCH_ENDS = {"out_proj", "o_proj", "c_proj", "down_proj", "fc2", "proj", "wo", "o", "w2", "w3", "pwconv2",
               "linear_2", "linear2", "post_proj", "conv3", "dense_4h_to_h", "out", "output", "mlp_out"}


def is_branch_end(name: str) -> bool:
    module = module_parts(name)
    leaf = module[-1] if module else ""
    if leaf in BRANCH_ENDS:
        return True
    # HF BERT-style: ...layer.N.output.dense / attention.output.dense
    return leaf == "dense" and len(module) >= 2 and module[-2] == "output"


def _leaf(name: str) -> str:
    return _stem(name)[1].split(":")[0].rpartition("/")[2]  # Keras names: 'lstm/lstm_cell/kernel:0'


def assign_roles(entries, config: dict | None = None) -> dict[str, str]:
    """Each tensor's role, from its name patterns and its shape together (an `Entry.role_hint`
    from the reader, e.g. an ONNX op, wins):
    - recurrent: torch's weight_ih/hh_lN, Keras's recurrent_kernel (their biases: bias);
    - table: relative-position bias tables, T5's relative_attention_bias, final_logits_bias;
    - token: cls/dist/mask/register tokens, position embeddings held as a parameter;
    - layer_scale: layer_scale*, ls1/ls2, lambda_1 (rank 1, or (C,1,1)), and a rank-1 gamma
      without a beta or bias beside it;
    - conv: rank ≥ 3 `*.weight`/`*.kernel`; other rank-≥3 parameters are `other`;
    - rank 2: embedding when the name says so (embed, wte, shared…) and no bias sits beside it
      (a Linear named `*embed*` keeps its fans), bias when the name ends in bias, else linear;
    - rank 1: norm_scale (weight, gamma, scale), norm_shift (a bias beside a rank-1 weight,
      beta) or bias;
    - other: non-float tensors, BatchNorm buffers, state-space parameters set by formula."""
    shapes = {e.name: e.shape for e in entries}
    roles = {}
    for e in entries:
        head, last = _stem(e.name)
        leaf = _leaf(e.name)
        rank = len(e.shape)
        hint = getattr(e, "role_hint", None)
        siblings = {w: shapes.get(f"{head}.{w}") for w in ("weight", "gamma", "kernel", "w", "bias", "beta")} \
            if head else {}
        if not is_float_dtype(e.dtype) or leaf in _BUFFERS or rank == 0:
            roles[e.name] = "other"
        elif hint in ROLES:
            roles[e.name] = hint
        elif set_by_formula(e.name):
            roles[e.name] = "other"
        elif _WEIGHT_NORM_V.search(e.name):  # weight norm's direction v: the weight as initialised
            roles[e.name] = "conv" if rank >= 3 else ("linear" if rank == 2 else "other")
        elif rank >= 2 and len([d for d in e.shape if d != 1]) <= 1 and leaf in ("weight", "gamma", "scale"):
            roles[e.name] = "layer_scale"  # a broadcast per-channel scale (ConvNeXt-V2's GRN γ), not a conv
        elif _RECURRENT.search(e.name):
            roles[e.name] = "recurrent" if leaf.startswith("weight") else "bias"
        elif _KERAS_RECURRENT.search(leaf):
            roles[e.name] = "recurrent"
        elif _TABLE.search(e.name):
            roles[e.name] = "table"
        elif _TOKEN.search(leaf):
            roles[e.name] = "token"
        elif _is_layer_scale(e.name, e.shape, head, leaf, siblings):
            roles[e.name] = "layer_scale"
        elif rank >= 3:
            roles[e.name] = "conv" if leaf in _WEIGHT_NAMES or not head else "other"
        elif rank == 2:
            if leaf.endswith("bias"):
                roles[e.name] = "bias"
            elif head and leaf not in _WEIGHT_NAMES and not _EMBED.search(leaf):
                roles[e.name] = "other"
            elif _EMBED.search(e.name) and siblings.get("bias") is None and not e.name.startswith("lm_head"):
                roles[e.name] = "embedding"
            else:
                roles[e.name] = "linear"
        elif leaf in ("bias", "beta", "b") or leaf.endswith("_bias"):
            sibling = next((siblings[w] for w in ("weight", "gamma", "kernel", "w") if siblings.get(w) is not None),
                           None)
            roles[e.name] = "norm_shift" if sibling is not None and len(sibling) == 1 or leaf == "beta" else "bias"
        elif leaf in ("weight", "gamma", "scale", "g"):
            roles[e.name] = "norm_scale"
        else:
            roles[e.name] = "other"
    return roles


def _is_layer_scale(name: str, shape, head: str, leaf: str, siblings: dict) -> bool:
    squeezed = [d for d in shape if d != 1]
    if len(squeezed) > 1 or not shape:
        return False
    if _LAYER_SCALE.search(name) and not _NORM_MODULE.search(head.rpartition(".")[2] if head else ""):
        return True
    # timm's ConvNeXt/CaiT `gamma` (C,): a scale with no shift beside it is not a norm
    return leaf == "gamma" and len(shape) == 1 and siblings.get("beta") is None and siblings.get("bias") is None \
        and not _NORM_MODULE.search(head.rpartition(".")[2] if head else "")


def conv1d_layout(name: str, config: dict | None) -> str | None:
    """'keras' for the (in, out) matrices of HF's Conv1D (GPT-2's c_attn, c_fc, c_proj), known
    from config.json's model_type or, without one, from those names; else None."""
    if not _CONV1D_NAMES.search(name):
        return None
    model_type = str((config or {}).get("model_type", "")).lower()
    if config and model_type and model_type not in CONV1D_MODEL_TYPES:
        return None
    return "keras"


def is_float_dtype(dtype: str) -> bool:
    d = dtype.lower()
    return d.startswith(("float", "bfloat", "f1", "f3", "f6", "bf16", "f8", "half", "double")) and "complex" not in d


def bias_fan_in(name: str, entries_by_name: dict, layout: str) -> int | None:
    """The fan_in of the weight a bias belongs to (torch's default bias is U(±1/√fan_in))."""
    head, last = _stem(name)
    weights = ("weight", "kernel", "w") + ((last.removesuffix("bias") + "weight",) if last.endswith("_bias") else ())
    for w in weights:
        shape = entries_by_name.get(f"{head}.{w}")
        if shape is not None and len(shape) >= 2:
            return reading_fans(shape, layout)[0]
    return None


def torch_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
    """The shape in torch's (out, in, *kernel) layout, for a tensor stored in `layout`."""
    if layout == "torch" or len(shape) < 2:
        return tuple(shape)
    return (shape[-1], shape[-2], *shape[:-2])  # keras: (*kernel, in, out)


def reading_fans(shape: tuple[int, ...], layout: str) -> tuple[int, int]:
    t = torch_shape(shape, layout)
    receptive = math.prod(t[2:])
    return t[1] * receptive, t[0] * receptive


_HEADS = {"head", "heads", "classifier", "lm_head", "score", "logits", "last_linear", "output_layer", "qa_outputs",
          "fc_out", "cls_head", "proj_head"}


def is_head(name: str) -> bool:
    module = module_parts(name)
    leaf = module[-1] if module else ""
    if leaf in _HEADS or any(part in ("head", "classifier") for part in module[:-1]):
        return True
    return leaf == "fc" and not any(part.isdigit() for part in module)


def recurrent_hidden(name: str, shapes: dict) -> int | None:
    """hidden_size of a torch RNN/LSTM/GRU parameter: weight_hh_lN is (gates·hidden, hidden),
    or (gates·hidden, proj_size) beside a weight_hr_lN of (proj_size, hidden)."""
    onnx = re.search(r"^(.*)\.(weight_ih|weight_hh|bias)$", name)
    if onnx and not _RECURRENT.search(name):  # ONNX's LSTM/GRU/RNN: R is (directions, gates·hidden, hidden)
        recurrent = shapes.get(f"{onnx.group(1)}.weight_hh")
        return int(recurrent[2]) if recurrent is not None and len(recurrent) == 3 else None
    if not _RECURRENT.search(name):
        return None
    projection = shapes.get(re.sub(r"(weight|bias)_(ih|hh|hr)_l", "weight_hr_l", name))
    if projection is not None and len(projection) == 2:
        return int(projection[1])
    recurrent = shapes.get(re.sub(r"(weight|bias)_(ih|hh|hr)_l", "weight_hh_l", name))
    return int(recurrent[1]) if recurrent is not None and len(recurrent) == 2 else None


def infer_n_layer(names) -> int | None:
    """The number of blocks: the most distinct integer components under one prefix
    (transformer.h.0…h.11 -> 12)."""
    blocks: dict[str, set] = {}
    for name in names:
        parts = name.split(".")
        for i, part in enumerate(parts):
            if part.isdigit() and i > 0:
                blocks.setdefault(".".join(parts[:i]), set()).add(int(part))
                break
    if not blocks:
        return None
    best = max(blocks.values(), key=len)
    return len(best) if len(best) >= 2 else None
