"""The transformer engine (`initcli.transformer`, `--arch transformer`): every forward and
backward statistic against torch autograd on the same weights and inputs, the theory of the
logits' and hidden pre-activations' variance, and the physics of rank collapse."""

from __future__ import annotations

import math

import numpy as np
import pytest

from initcli import transformer
from initcli.activations import get_activation
from initcli.errors import InitcliError
from initcli.schemes import make_init

torch = pytest.importorskip("torch")
functional = torch.nn.functional

EPS64 = np.finfo(np.float64).eps
_TORCH_ACT = {"relu": torch.relu, "tanh": torch.tanh, "gelu": lambda x: functional.gelu(x), "linear": lambda x: x}


def _torch_block(stream, p, shape, act_name):
    """One block written with torch ops (softmax, layer_norm, matmul, masked_fill): (its
    output, a record of the logits, probabilities, MLP hidden h and sublayer outputs, each
    sublayer output keeping its gradient)."""
    d, heads = shape.width, shape.heads
    dh, t = d // heads, stream.shape[1]
    record = {}

    def ln(z):
        return functional.layer_norm(z, (d,), eps=1e-5)

    def attn(u):
        b = u.shape[0]
        q = (u @ p["wq"].T + p["bq"]).reshape(b, t, heads, dh).transpose(1, 2)
        k = (u @ p["wk"].T + p["bk"]).reshape(b, t, heads, dh).transpose(1, 2)
        v = (u @ p["wv"].T + p["bv"]).reshape(b, t, heads, dh).transpose(1, 2)
        logits = (q @ k.transpose(-1, -2)) * shape.scale
        if shape.causal:
            logits = logits.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        out = (probs @ v).transpose(1, 2).reshape(b, t, d) @ p["wo"].T + p["bo"]
        if out.requires_grad:
            out.retain_grad()
        record["logits"], record["probs"], record["attn"] = logits, probs, out
        return out

    def mlp(v):
        h = v @ p["w1"].T + p["b1"]
        out = _TORCH_ACT[act_name](h) @ p["w2"].T + p["b2"]
        if out.requires_grad:
            out.retain_grad()
        record["h"], record["mlp"] = h, out
        return out

    alpha, skip = shape.residual_scale, shape.skip_scale
    record["mlp"] = None
    if shape.norm_position == "pre":
        a = attn(ln(stream))
        mid = skip * stream + alpha * a if shape.residual else a
        if "w1" in p:
            m = mlp(ln(mid))
            out = skip * mid + alpha * m if shape.residual else m
        else:
            out = mid
    else:
        a = attn(stream)
        mid = ln(skip * stream + alpha * a if shape.residual else a)
        if "w1" in p:
            m = mlp(mid)
            out = ln(skip * mid + alpha * m if shape.residual else m)
        else:
            out = mid
    if out.requires_grad:
        out.retain_grad()
    record["stream"] = out
    return out, record


def _torch_params(stack, requires_grad=False):
    return [{name: torch.tensor(getattr(block, name), requires_grad=requires_grad)
             for name in ("wq", "wk", "wv", "wo", "bq", "bk", "bv", "bo", "w1", "b1", "w2", "b2")
             if getattr(block, name) is not None} for block in stack.blocks]


def _torch_forward(stack, act_name, x, cotangent):
    """The same transformer in torch, differentiated by autograd: every block's record (see
    `_torch_block`) with gradients, the parameters' and the input's gradients."""
    params = _torch_params(stack, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    seen, stream = [], xt
    for p in params:
        stream, record = _torch_block(stream, p, stack.shape, act_name)
        seen.append(record)
    (stream * torch.tensor(cotangent)).sum().backward()
    return params, xt, seen


def _tol(stack) -> float:
    """float64 rounding through the stack: each output is a sum of about D + hidden + T
    products per sublayer, a few sublayers per block (×16 for the LayerNorm, softmax and
    the statistics' own sums)."""
    shape = stack.shape
    return 16 * (shape.width + shape.hidden + shape.seq_len) * stack.depth * 4 * EPS64


CASES = [  # (norm_position, causal, residual, mlp_ratio, activation)
    ("pre", False, True, 2.0, "gelu"),
    ("pre", True, True, 2.0, "relu"),
    ("post", False, True, 2.0, "tanh"),
    ("post", True, True, 1.5, "gelu"),
    ("pre", True, False, 2.0, "tanh"),
    ("post", False, False, 0.0, "linear"),
    ("pre", False, True, 0.0, "relu"),
]


@pytest.mark.parametrize(("position", "causal", "residual", "ratio", "activation", "preset"), [
    case + (None,) for case in CASES] + [("post", True, True, 2.0, "gelu", "deepnorm"),
                                         ("pre", False, True, 2.0, "relu", "gpt2"),
                                         ("pre", True, True, 1.0, "tanh", "depth-mup")])
def test_every_statistic_matches_torch_autograd(position, causal, residual, ratio, activation, preset):
    init = make_init("xavier-normal", activation=activation)
    scale = 0.7 if residual and preset is None else 1.0
    shape = transformer.transformer_shape(16, 4, 6, ratio, causal=causal, norm_position=position,
                                          residual=residual, residual_scale=scale, residual_init=preset, depth=2)
    stack = transformer.build_transformer(init, shape, 2, bias_std=0.1, seed=3, dtype="float64")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 6, 16))
    cotangent = rng.standard_normal((5, 6, 16))
    act = get_activation(activation)
    rows, forward_overflow, backward_overflow = transformer.measure(stack, act, x, cotangent)
    assert forward_overflow is None and backward_overflow is None
    params, xt, seen = _torch_forward(stack, activation, x, cotangent)
    tol = _tol(stack)

    def close(measured, expected, what):
        assert measured == pytest.approx(expected, rel=tol, abs=tol), what

    by_key = {(row.layer, row.sublayer): row for row in rows}
    assert len(rows) == 2 * len(shape.sublayers)
    mask = ~torch.triu(torch.ones(6, 6, dtype=torch.bool), 1) if causal else torch.ones(6, 6, dtype=torch.bool)
    for index, record in enumerate(seen, start=1):
        attn_row = by_key[(index, "attn")]
        logits = record["logits"].detach()[..., mask].numpy()
        close(attn_row.preact_var, np.var(logits), f"block {index} logit variance")
        close(attn_row.preact_mean, np.mean(logits), f"block {index} logit mean")
        probs = record["probs"].detach().numpy()
        entropy = -np.where(probs > 0, probs * np.log(np.where(probs > 0, probs, 1)), 0).sum(-1).mean()
        close(attn_row.attn_entropy, entropy, "attention entropy")
        close(attn_row.attn_max, probs.max(-1).mean(), "attention max")
        for name in ("attn", "mlp", "stream"):
            if record[name] is None:
                assert (index, name) not in by_key
                continue
            row, tensor = by_key[(index, name)], record[name]
            value, grad = tensor.detach().numpy(), tensor.grad.numpy()
            close(row.act_var, np.var(value), f"block {index} {name} act_var")
            close(row.act_mean, np.mean(value), f"block {index} {name} act_mean")
            close(row.grad_var, np.var(grad), f"block {index} {name} grad_var")
            unit = value / np.linalg.norm(value, axis=-1, keepdims=True)
            gram = np.einsum("btd,bsd->bts", unit, unit)
            expected_cos = ((gram.sum((1, 2)) - 6) / 30).mean()
            close(row.token_cosine, expected_cos, f"block {index} {name} token_cosine")
        if record["mlp"] is not None:
            row = by_key[(index, "mlp")]
            close(row.preact_var, np.var(record["h"].detach().numpy()), "hidden preact_var")
            w_grads = np.concatenate([params[index - 1][n].grad.numpy().ravel() for n in ("w1", "w2")])
            close(row.weight_grad_var, np.var(w_grads), "mlp weight_grad_var")
        w_grads = np.concatenate([params[index - 1][n].grad.numpy().ravel() for n in ("wq", "wk", "wv", "wo")])
        close(attn_row.weight_grad_var, np.var(w_grads), "attn weight_grad_var")


@pytest.mark.parametrize(("position", "causal", "residual", "ratio", "activation"), CASES[:4])
def test_weight_and_input_gradients_match_torch(position, causal, residual, ratio, activation):
    init = make_init("he-normal", activation="relu")
    shape = transformer.transformer_shape(8, 2, 5, ratio, causal=causal, norm_position=position, residual=residual)
    stack = transformer.build_transformer(init, shape, 2, bias_std=0.2, seed=1, dtype="float64")
    rng = np.random.default_rng(2)
    x, cotangent = rng.standard_normal((3, 5, 8)), rng.standard_normal((3, 5, 8))
    grads, dx = transformer.backward(stack, transformer.forward(stack, get_activation(activation), x), cotangent)
    params, xt, _ = _torch_forward(stack, activation, x, cotangent)
    tol = _tol(stack)
    scale = max(float(np.abs(xt.grad.numpy()).max()), 1.0)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=tol, atol=tol * scale)
    for mine, theirs in zip(grads, params):
        for name, tensor in theirs.items():
            expected = tensor.grad.numpy()
            np.testing.assert_allclose(mine[name], expected, rtol=tol,
                                       atol=tol * max(float(np.abs(expected).max()), 1.0), err_msg=name)


def test_broadcast_backward_gives_the_jacobian_rows():
    """A batch of cotangents against one input's trace (what the Jacobian uses) gives each
    cotangent's own input gradient."""
    shape = transformer.transformer_shape(8, 2, 4, 2.0, causal=True)
    stack = transformer.build_transformer(make_init("xavier-normal"), shape, 2, seed=4, dtype="float64")
    act = get_activation("gelu")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 8))
    cotangents = rng.standard_normal((3, 4, 8))
    traces = transformer.forward(stack, act, x)
    _, batched = transformer.backward(stack, traces, cotangents, keep_grads=False)
    for i in range(3):
        _, single = transformer.backward(stack, traces, cotangents[i:i + 1], keep_grads=False)
        np.testing.assert_allclose(batched[i], single[0], rtol=_tol(stack), atol=_tol(stack))


# -- residual-init presets --------------------------------------------------------------------


def test_presets_scale_the_matrices_their_papers_name():
    """gpt2: W_o and W_2 × 1/√(2·n_layer) (GPT-2's c_proj); deepnorm: W_v, W_o, W_1, W_2 ×
    (8N)^−¼, the skip × (2N)^¼, post-LN; the other matrices are the scheme's own draws."""
    init = make_init("xavier-normal")
    base_shape = transformer.transformer_shape(16, 2, 4, 2.0)
    base = transformer.build_transformer(init, base_shape, 3, seed=5)
    for preset, scaled, factor in (("gpt2", {"wo", "w2"}, 1 / math.sqrt(6)),
                                   ("deepnorm", {"wv", "wo", "w1", "w2"}, 24 ** -0.25)):
        shape = transformer.transformer_shape(16, 2, 4, 2.0, residual_init=preset, depth=3)
        stack = transformer.build_transformer(init, shape, 3, seed=5)
        for mine, theirs in zip(stack.blocks, base.blocks):
            for name in ("wq", "wk", "wv", "wo", "w1", "w2"):
                expected = getattr(theirs, name) * (np.float32(factor) if name in scaled else np.float32(1))
                np.testing.assert_array_equal(getattr(mine, name), expected, err_msg=f"{preset} {name}")
    deepnorm = transformer.transformer_shape(16, 2, 4, 2.0, residual_init="deepnorm", depth=3)
    assert deepnorm.norm_position == "post" and deepnorm.skip_scale == pytest.approx(6 ** 0.25)
    with pytest.raises(InitcliError) as error:
        transformer.transformer_shape(16, 2, 4, 2.0, norm_position="pre", residual_init="deepnorm", depth=3)
    assert error.value.param == "norm_position"
    for refused in ("fixup", "t-fixup"):
        with pytest.raises(InitcliError) as error:
            transformer.transformer_shape(16, 2, 4, 2.0, residual_init=refused, depth=3)
        assert error.value.param == "residual_init"
    with pytest.raises(InitcliError) as error:
        transformer.transformer_shape(16, 2, 4, 2.0, residual=False, residual_init="gpt2", depth=3)
    assert error.value.param == "residual_init"


@pytest.mark.parametrize("preset", ["rezero", "skipinit"])
def test_zero_branch_presets_make_every_block_the_identity(preset):
    """α = 0: the stream passes every block unchanged and its Jacobian is the identity (every
    singular value 1), whatever the weights."""
    plan = transformer.prepare_jacobian("normal", "gelu", std=1.0, residual_init=preset, depth=3, width=8, heads=2,
                                        seq_len=4, batch=2, spectrum=True)
    result = transformer.run_jacobian(plan)
    for values in result.singular_values:
        np.testing.assert_allclose(values, 1.0, rtol=0, atol=0)
    run = transformer.prepare("normal", "gelu", std=1.0, residual_init=preset, depth=3, width=8, heads=2, seq_len=4,
                              batch=4, dtype="float64")
    _, x, _ = transformer.inputs(run)
    stream = transformer.run_prepared(run).stream()
    assert all(row.act_var == pytest.approx(np.var(x), rel=1e-12) for row in stream)


def test_presets_keep_the_pre_ln_stream_from_growing_with_depth():
    """Without a preset each pre-LN block adds about one unit branch variance to the stream,
    so over 24 blocks it grows some twentyfold. gpt2's 1/√(2·n_layer) on the output
    projections divides each block's addition by 2·n_layer and depth-µP's 1/√N branch
    multiplier by N: both end within twice the input's variance. DeepNorm's post-LN keeps it at
    one exactly, up to LayerNorm's ε."""
    def last_stream(preset):
        result = transformer.propagate("xavier-normal", "gelu", residual_init=preset, depth=24, width=32, heads=4,
                                       seq_len=8, batch=16, mlp_ratio=2, theory=False, seed=2)
        return result.stream()[-1].act_var

    assert last_stream(None) > 10
    assert last_stream("gpt2") < 2
    assert last_stream("depth-mup") < 2
    assert last_stream("deepnorm") == pytest.approx(1, abs=1e-4)


# -- theory ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("position", "param", "input_std", "bias_std", "scheme"), [
    ("pre", "sp", 1.0, 0.0, "xavier-uniform"),
    ("post", "sp", 3.0, 0.0, "xavier-normal"),
    ("pre", "mup", 1.0, 0.3, "he-normal"),
    ("post", "sp", 0.5, 0.2, "orthogonal"),
])
def test_logit_and_hidden_variance_follow_theory(position, param, input_std, bias_std, scheme):
    """E[(s·q·k)²] = s²·d_h·(σ_q²m + σ_b²)(σ_k²m + σ_b²) and E[h²] = σ_1² + σ_b²: the measured
    variances sit within 4 of the weights' finite-size spreads (the spread `theory_columns`
    states, from Wishart moments) plus the batch's own sampling error."""
    run = transformer.prepare(scheme, "relu", width=64, heads=4, seq_len=8, mlp_ratio=2, depth=3, batch=128,
                              norm_position=position, param=param, input_std=input_std, bias_std=bias_std,
                              dtype="float64", seed=11)
    result = transformer.run_prepared(run)
    d, dh, heads, hidden = 64, 16, 4, 128
    logit_spread = math.sqrt((4 / (d * dh) + 2 / d**2) / heads)
    hidden_spread = math.sqrt(2 / hidden)
    sampling = math.sqrt(2 * 3 / (128 * 8))  # Gaussian-ish squares (kurtosis ≤ 3·3) over the batch's tokens
    for row, theory in zip(result.layers, result.theory):
        if row.sublayer == "attn":
            expected = transformer.predicted_logit_var(run, row.layer)
            spread = logit_spread
        elif row.sublayer == "mlp":
            expected = transformer.predicted_hidden_var(run)
            spread = hidden_spread
        else:
            assert theory.theory_preact_var is None
            continue
        assert theory.theory_preact_var == pytest.approx(expected)
        second_moment = row.preact_var + row.preact_mean**2
        assert abs(math.log(second_moment / expected)) < 4 * (spread + sampling), (row, expected)
    first = transformer.predicted_logit_var(run, 1)
    later = transformer.predicted_logit_var(run, 2)
    if position == "post":  # post-LN's first attention reads the raw tokens
        assert first / later == pytest.approx(((input_std**2 * 1 + bias_std**2) / (1 + bias_std**2)) ** 2)
    else:
        assert first == later
    if param == "mup":  # 1/d_head: the logits are d_head times smaller in variance than at 1/√d_head
        sp = transformer.prepare(scheme, "relu", width=64, heads=4, seq_len=8, mlp_ratio=2, depth=3, batch=128,
                                 norm_position=position, input_std=input_std, bias_std=bias_std)
        assert transformer.predicted_logit_var(sp, 2) == pytest.approx(dh * later)


# -- physics --------------------------------------------------------------------------------


def _collapse(**options):
    result = transformer.propagate("xavier-uniform", "gelu", mlp_ratio=0, depth=24, batch=32, width=64, heads=4,
                                   seq_len=16, seed=0, dtype="float64", **options)
    return [1 - row.token_cosine for row in result.stream()]


def test_pure_attention_collapses_rank_within_a_few_blocks():
    """Dong et al. 2021: without skips (and without an MLP) the tokens of a sequence become
    one direction doubly exponentially fast."""
    for position in ("pre", "post"):
        gap = _collapse(residual=False, norm_position=position)
        assert gap[0] > 0.3  # independent tokens start far apart (the first block mixes them only partly)
        assert gap[3] < 1e-6, (position, gap[:6])


def test_pre_ln_skips_slow_the_collapse_and_post_ln_still_collapses():
    """Pre-LN's skip keeps each token's own component (the branch adds O(1) to a growing
    stream): after 24 blocks the tokens are still far from one direction, and the gap shrinks
    slower than geometrically. Post-LN renormalises after every sum, so the shared part
    compounds and the gap falls geometrically to rank one (Noci et al. 2022)."""
    pre = _collapse(norm_position="pre")
    post = _collapse(norm_position="post")
    assert pre[-1] > 0.03
    assert pre[-1] / pre[11] > 0.25  # twice the depth, not even a quarter of the gap gone
    assert post[-1] < 1e-4
    assert post[-1] / post[11] < 1e-2


def test_large_query_key_init_collapses_attention_entropy():
    """Logit variance grows as σ_q²σ_k²: a large init makes each query attend to one key
    (entropy near 0, attn_max near 1), a small one spreads attention uniformly (log T)."""
    big = transformer.propagate("normal", "gelu", std=1.0, depth=1, batch=16, width=64, seq_len=16, theory=False)
    small = transformer.propagate("normal", "gelu", std=1e-3, depth=1, batch=16, width=64, seq_len=16,
                                  theory=False)
    assert big.layers[0].attn_max > 0.9 and big.layers[0].attn_entropy < 0.3
    assert small.layers[0].attn_entropy == pytest.approx(math.log(16), rel=1e-3)
    assert small.layers[0].attn_max == pytest.approx(1 / 16, rel=1e-2)


# -- checks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("options", "param"), [
    ({"heads": 3}, "heads"), ({"mlp_ratio": -1}, "mlp_ratio"), ({"mlp_ratio": math.inf}, "mlp_ratio"),
    ({"norm_position": "middle"}, "norm_position"), ({"param": "ntk"}, "param"), ({"sizes": [4, 4]}, "sizes"),
    ({"residual": False, "residual_scale": 0.5}, "residual_scale"), ({"seq_len": 0}, "seq_len"),
    ({"width": 10**9}, None),  # the memory guard: one line naming the options that shrink the run
])
def test_bad_options_are_refused_by_name(options, param):
    with pytest.raises(InitcliError) as error:
        transformer.prepare("xavier-normal", "gelu", **options)
    assert error.value.param == param


@pytest.mark.parametrize("scheme", ["lsuv", "delta-orthogonal", "dirac"])
def test_conv_and_data_schemes_are_refused(scheme):
    with pytest.raises(InitcliError) as error:
        transformer.prepare(scheme, "gelu")
    assert error.value.param == "scheme"


def test_overflow_is_reported_not_raised():
    result = transformer.propagate("normal", "relu", std=1e30, depth=3, batch=4, width=16, seq_len=4, theory=False)
    assert result.forward_overflow_layer == 1
    assert result.overflowed


def test_same_seed_same_bytes_and_depth_prefix():
    a = transformer.propagate("xavier-normal", "gelu", depth=3, batch=8, width=16, seq_len=4, seed=7)
    b = transformer.propagate("xavier-normal", "gelu", depth=3, batch=8, width=16, seq_len=4, seed=7)
    assert a.rows() == b.rows()
    deeper = transformer.propagate("xavier-normal", "gelu", depth=4, batch=8, width=16, seq_len=4, seed=7)
    # a deeper stack with the same seed starts with the same blocks: its forward rows agree
    for mine, theirs in zip(a.layers, deeper.layers):
        assert (mine.layer, mine.sublayer, mine.act_var) == (theirs.layer, theirs.sublayer, theirs.act_var)


# -- jacobian -------------------------------------------------------------------------------


def _torch_blocks(stack, act_name):
    """x (T, D) → every block's output, through `_torch_block`."""
    params = _torch_params(stack)

    def run(x):
        outputs, stream = [], x[None]
        for p in params:
            stream, _ = _torch_block(stream, p, stack.shape, act_name)
            outputs.append(stream[0])
        return tuple(outputs)
    return run


@pytest.mark.parametrize(("position", "causal", "residual", "ratio"), [
    ("pre", False, True, 2.0), ("post", True, True, 2.0), ("pre", True, False, 0.0)])
def test_jacobian_spectrum_matches_torch(position, causal, residual, ratio):
    """Every block's input–output Jacobian singular values equal those of torch's
    autograd.functional.jacobian of the same blocks, to float64 rounding."""
    plan = transformer.prepare_jacobian("xavier-normal", "tanh", depth=3, width=8, heads=2, seq_len=4,
                                        mlp_ratio=ratio, causal=causal, norm_position=position, residual=residual,
                                        batch=3, inputs=2, spectrum=True, seed=6)
    result = transformer.run_jacobian(plan)
    stack, x, _ = transformer.inputs(plan.run)
    stack64 = stack.astype(np.float64)
    n = 4 * 8
    tol = 64 * n * 3 * EPS64
    for i in range(2):
        jac = torch.autograd.functional.jacobian(_torch_blocks(stack64, "tanh"), torch.tensor(x[i], dtype=torch.float64))
        for b, block_jac in enumerate(jac):
            expected = np.linalg.svd(block_jac.reshape(n, n).numpy(), compute_uv=False)
            np.testing.assert_allclose(result.singular_values[b][i], expected, rtol=tol, atol=tol * expected[0])
    assert [row.layer for row in result.layers] == [1, 2, 3]


def test_jacobian_refuses_sequences_past_the_width_limit():
    with pytest.raises(InitcliError) as error:
        transformer.prepare_jacobian("xavier-normal", "gelu", width=256, seq_len=32)
    assert error.value.param == "seq_len"


# -- the CLI --------------------------------------------------------------------------------


def _cli(*args):
    from typer.testing import CliRunner

    from initcli.cli import app

    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_cli_propagate_writes_the_issue_columns():
    import csv
    import io

    result = _cli("propagate", "--arch", "transformer", "--depth", "2", "--batch", "4", "--width", "16",
                  "--seq-len", "4", "--causal", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [(row["layer"], row["sublayer"]) for row in rows] == [
        ("1", "attn"), ("1", "mlp"), ("1", "stream"), ("2", "attn"), ("2", "mlp"), ("2", "stream")]
    for column in ("token_cosine", "attn_entropy", "attn_max", "theory_preact_var", "grad_var"):
        assert column in rows[0]
    assert rows[2]["attn_entropy"] == "" and rows[0]["attn_entropy"] != ""
    no_mlp = _cli("propagate", "--arch", "transformer", "--depth", "1", "--batch", "2", "--mlp-ratio", "0",
                  "--no-residual", "--norm-position", "post", "--format", "json")
    assert no_mlp.exit_code == 0, no_mlp.output
    import json

    doc = json.loads(no_mlp.stdout)
    assert [row["sublayer"] for row in doc["rows"]] == ["attn", "stream"]
    assert doc["params"]["residual"] is False and doc["params"]["norm_position"] == "post"


def test_cli_propagate_plots_by_block():
    result = _cli("propagate", "--arch", "transformer", "--depth", "3", "--batch", "4", "--width", "16",
                  "--seq-len", "4", "--format", "csv", "--plot")
    assert result.exit_code == 0, result.output
    assert "stream act_var" in result.stderr


@pytest.mark.parametrize(("args", "param"), [
    (["propagate", "--heads", "2"], "--heads"),
    (["propagate", "--causal"], "--causal"),
    (["propagate", "--arch", "conv", "--seq-len", "4"], "--seq-len"),
    (["propagate", "--arch", "transformer", "--channels", "4"], "--channels"),
    (["propagate", "--arch", "transformer", "--norm", "layer"], "--norm"),
    (["propagate", "--arch", "transformer", "--block", "2"], "--block"),
    (["propagate", "--arch", "transformer", "--residual-init", "fixup"], "--residual-init"),
    (["propagate", "--arch", "transformer", "--residual-init", "gpt2", "--no-residual"], "--residual-init"),
    (["propagate", "--arch", "transformer", "--param", "ntk"], "--param"),
    (["propagate", "--arch", "transformer", "--sizes", "4,4"], "--sizes"),
    (["propagate", "--arch", "transformer", "--checkpoint"], "--checkpoint"),
    (["propagate", "--arch", "transformer", "--no-residual", "--residual-scale", "0.5"], "--residual-scale"),
    (["propagate", "--arch", "transfomer"], "--arch"),
    (["coordcheck", "--arch", "transformer"], "--arch"),
    (["jacobian", "--arch", "transformer", "--width", "512", "--seq-len", "64"], "--seq-len"),
])
def test_cli_refuses_what_does_not_apply(args, param):
    result = _cli(*args, "--format", "csv")
    assert result.exit_code == 2, result.output
    assert param in result.stderr and "Traceback" not in result.output


def test_cli_compare_judges_transformers():
    import csv
    import io

    result = _cli("compare", "--arch", "transformer", "--schemes", "zeros,constant,xavier-normal", "-a", "gelu",
                  "--depth", "3", "--batch", "8", "--width", "16", "--seq-len", "8", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = {row["scheme"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    assert rows["zeros"]["verdict"] == "no-signal"
    assert rows["constant"]["verdict"] == "symmetric"
    assert rows["xavier-normal"]["verdict"] == "stable"
    assert "last_token_cosine" in rows["zeros"] and rows["zeros"]["width"] == "16"
    collapsed = _cli("compare", "--arch", "transformer", "--schemes", "xavier-uniform", "--no-residual",
                     "--mlp-ratio", "0", "--depth", "6", "--batch", "8", "--format", "csv")
    assert next(csv.DictReader(io.StringIO(collapsed.stdout)))["verdict"] == "rank-collapse"
    peaked = _cli("compare", "--arch", "transformer", "--schemes", "normal", "--std", "1", "--depth", "2",
                  "--batch", "8", "--format", "csv")
    assert next(csv.DictReader(io.StringIO(peaked.stdout)))["verdict"] == "entropy-collapse"


def test_default_run_is_the_same_bytes_on_any_thread_count():
    """The defaults' largest product is under SINGLE_THREAD_WORK, so the run is pinned to one
    BLAS thread and its rows do not depend on OPENBLAS_NUM_THREADS."""
    import subprocess
    import sys

    run = transformer.prepare("he-normal", "relu")
    assert transformer.work(run) <= transformer.SINGLE_THREAD_WORK
    code = ("from initcli import transformer; import json; "
            "print(json.dumps(transformer.propagate('he-normal', 'relu', depth=2, batch=64).rows()))")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**__import__("os").environ, "OPENBLAS_NUM_THREADS": threads}).stdout
               for threads in ("1", "2")}
    assert len(outputs) == 1


def test_memory_estimate_bounds_the_peak():
    import tracemalloc

    run = transformer.prepare("xavier-normal", "gelu", depth=2, batch=64, width=64, seq_len=16, mlp_ratio=4,
                              causal=True)
    tracemalloc.start()
    try:
        transformer.run_prepared(run)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= run.estimate


def test_cli_compare_figure_has_a_token_cosine_panel(tmp_path, monkeypatch):
    """compare --save-plot draws act_var, grad_var and, for transformers, token_cosine."""
    import matplotlib.figure

    panels = []
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *args, **kwargs: panels.append([ax.get_title() for ax in fig.axes
                                                                    if ax.get_visible()]))
    target = tmp_path / "c.png"
    result = _cli("compare", "--arch", "transformer", "--schemes", "xavier-normal", "--depth", "2", "--batch", "4",
                  "--width", "16", "--seq-len", "4", "--save-plot", str(target), "--format", "csv")
    assert result.exit_code == 0, result.output
    assert panels == [["act_var", "grad_var", "token_cosine"]]
