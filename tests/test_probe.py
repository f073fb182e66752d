"""`initcli probe`: propagate's numbers on a torch model, through hooks."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")

import probe_models  # noqa: E402  (tests/ is on sys.path under pytest's rootdir conftest)

from initcli.cli import app  # noqa: E402
from initcli.probing import PROBE_COLUMNS, draw_inputs, probe, reinit_copy  # noqa: E402

ENV = {"COLUMNS": "250", "NO_COLOR": "1"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: these models are tiny, and two threads on a busy 2-core machine spend
    their time waiting for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
MODELS = str(Path(__file__).with_name("probe_models.py"))
EPS32 = float(np.finfo(np.float32).eps)


def run(*args):
    return CliRunner().invoke(app, list(args), env=ENV)


def run_json(*args) -> dict:
    result = run(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _close(a, b, rtol):
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= rtol * max(abs(a), abs(b)) + 1e-30


def test_sequential_matches_propagate_with_the_same_weights(tmp_path):
    sizes, batch, seed = [48, 64, 64, 16], 40, 7
    saved = str(tmp_path / "w.npz")
    assert run("sample", "--sizes", ",".join(map(str, sizes)), "--seed", "3", "--save", saved,
               "--bias-std", "0.1", "--format", "csv").exit_code == 0
    layers = run_json("propagate", "--weights", saved, "--batch", str(batch), "--seed", str(seed),
                      "--no-theory")["rows"]
    rows = run_json("probe", f"{MODELS}:from_weights", "--kwargs", json.dumps({"path": saved}),
                    "--input-shape", str(sizes[0]), "--batch", str(batch), "--seed", str(seed))["rows"]
    assert [r["type"] for r in rows] == ["Linear", "ReLU"] * 3
    # torch and numpy sum the products of each of a layer's dot products in different orders:
    # each pre-activation differs by at most fan_in·eps relative to Σ|w·x| (Higham, Accuracy and
    # Stability, §3.1), compounded over the layers; the statistics average such values
    rtol = 4 * (len(sizes) - 1) * max(sizes) * EPS32
    for layer, linear, relu in zip(layers, rows[0::2], rows[1::2]):
        pairs = [(linear["act_mean"], layer["preact_mean"]), (linear["act_var"], layer["preact_var"]),
                 (linear["grad_var"], layer["grad_var"]), (linear["weight_grad_var"], layer["weight_grad_var"]),
                 (linear["weight_std"], layer["weight_std"]), (relu["act_mean"], layer["act_mean"]),
                 (relu["act_var"], layer["act_var"]), (relu["effective_rank"], layer["effective_rank"]),
                 (relu["input_cosine"], layer["input_cosine"])]
        for ours, theirs in pairs:
            assert _close(ours, theirs, rtol), (ours, theirs, rtol)
        # a unit is dead on both sides unless a pre-activation sits within rounding of 0
        assert abs(relu["dead_frac"] - layer["dead_frac"]) <= 1 / linear["output_shape"].count("x") / 64 + 1e-12
        assert relu["saturated_frac"] == layer["saturated_frac"] == 0


def test_reinit_of_a_sequential_draws_propagates_weights():
    # one scheme, one seed: the copy holds the weights build_stack samples, so the numbers match
    from initcli.propagation import propagate

    sizes, seed = [32, 32, 32, 32], 5
    ref = propagate("xavier-normal", "relu", sizes=sizes, batch=30, seed=seed, theory=False, bias_std=0.2)
    rows = run_json("probe", f"{MODELS}:mlp", "--input-shape", "32", "--batch", "30", "--seed", str(seed),
                    "--reinit", "xavier-normal", "--bias-std", "0.2")["rows"]
    rtol = 4 * 3 * 32 * EPS32
    for layer, relu in zip(ref.layers, rows[1::2]):
        assert _close(relu["act_var"], layer.act_var, rtol)
    for layer, linear in zip(ref.layers, rows[0::2]):
        assert _close(linear["grad_var"], layer.grad_var, rtol)


def test_small_conv_net_statistics_over_batch_channels_and_positions():
    model = probe_models.small_cnn()
    x = draw_inputs(seed=0, dtype="float32", batch=6, input_shape=(3, 8, 8))
    result = probe(model, x)
    rows = {r.module: r for r in result.modules}
    assert list(rows) == ["0", "1", "2", "3", "4", "5", "6", "7"]
    assert rows["0"].output_shape == "6x8x8x8"
    # recompute conv 0's statistics from its output directly
    y = model[0](torch.from_numpy(x)).detach().numpy().astype(np.float64)
    assert _close(rows["0"].act_var, y.var(), 1e-5)
    per_channel = y.transpose(1, 0, 2, 3).reshape(8, -1)
    assert _close(rows["0"].channel_mean_sq, float(np.mean(per_channel.mean(axis=1) ** 2)), 1e-5)
    assert _close(rows["0"].channel_var, float(np.mean(per_channel.var(axis=1))), 1e-5)
    # the default, train-mode statistics: BatchNorm normalises each channel by its batch
    # statistics, v_c / (v_c + ε) of variance per channel
    var_c = per_channel.var(axis=1)
    assert _close(rows["1"].channel_var, float(np.mean(var_c / (var_c + 1e-5))), 1e-5)
    assert result.params["train_mode"] is True
    # eval mode: BatchNorm with its initial running statistics (mean 0, var 1) is x/√(1+ε)
    evaluated = {r.module: r for r in probe(model, x, train_mode=False).modules}
    assert _close(evaluated["1"].act_var, rows["0"].act_var / (1 + 1e-5), 1e-5)
    assert all(math.isfinite(r.grad_var) for r in result.modules)
    assert result.columns == PROBE_COLUMNS


def _stream_vars(scaled: bool, depth: int, width: int, batch: int) -> list[float]:
    model = probe_models.residual(width, depth, scaled)
    x = draw_inputs(seed=1, dtype="float32", batch=batch, input_shape=(width,))
    result = probe(model, x, seed=1)
    assert "branch_var" in result.columns
    branches = [r for r in result.modules if r.branch_var is not None]
    assert len(branches) == depth
    return [r.act_var for r in result.modules if r.type == "Identity"]


def test_residual_stream_grows_linearly_unscaled_and_stays_bounded_scaled():
    depth, width, batch = 16, 128, 128
    plain = _stream_vars(False, depth, width, batch)
    scaled = _stream_vars(True, depth, width, batch)
    # each block adds variance α² (see probe_models.Block): 1 + l unscaled, 1 + l/L scaled. The
    # branch's variance, over a layer of `width` random weights, is off by about √(2/width)
    # relative; 5 such deviations bound the cumulative sum
    tol = 5 * math.sqrt(2 / width)
    for block, (u, s) in enumerate(zip(plain, scaled), start=1):
        assert abs(u - (1 + block)) <= tol * (1 + block)
        assert abs(s - (1 + block / depth)) <= tol * (1 + block / depth)
    assert max(scaled) <= 2 * (1 + tol)


def test_branch_marked_by_attribute():
    result = probe(probe_models.Marked(), np.ones((4, 16), dtype=np.float32) * np.arange(4)[:, None])
    assert [r.module for r in result.modules if r.branch_var is not None] == ["fc"]


def test_token_model():
    document = run_json("probe", f"{MODELS}:tokens", "--tokens", "50", "--seq-len", "7", "--batch", "5")
    rows = document["rows"]
    # no repeated blocks: the weighted modules are judged (the Linear is no narrower: no head), and named
    assert document["judged"] == ["0", "2"] and "judged 2 modules: 0, 2" in document["reason"]
    assert document["params"]["train_mode"] is True and document["params"]["output"] == "output"
    assert [r["type"] for r in rows] == ["Embedding", "LayerNorm", "Linear"]
    assert rows[0]["output_shape"] == "5x7x32"
    # LayerNorm over the last (feature) axis: each position's features have mean 0, variance 1
    assert abs(rows[1]["act_mean"]) < 1e-6 and abs(rows[1]["act_var"] - 1) < 1e-4
    assert rows[1]["weight_std"] == 1.0  # a LayerNorm's row shows its scale (torch starts it at 1), not std 0
    assert rows[1]["channel_mean_sq"] < 1  # channels last for tokens: per-feature means, not per-position
    assert all(math.isfinite(r["grad_var"]) and r["grad_var"] > 0 for r in rows)


def test_reinit_several_schemes_gives_one_verdict_each():
    document = run_json("probe", f"{MODELS}:mlp", "--kwargs", '{"width": 64, "depth": 8}', "--input-shape", "64",
                        "--batch", "64", "--reinit", "he-normal,zeros,normal")
    verdicts = {r["scheme"]: r["verdict"] for r in document["rows"]}
    assert verdicts["he-normal"] == "stable"
    assert verdicts["zeros"] == "no-signal"
    assert verdicts["normal"] == "exploding"  # N(0,1) weights: ×n/2 per layer
    assert document["params"]["schemes"] == ["he-normal", "zeros", "normal"]


def test_user_model_unchanged_and_hooks_removed():
    model = probe_models.small_cnn()
    model.train()
    before = copy.deepcopy(model.state_dict())
    x = draw_inputs(seed=0, dtype="float32", batch=4, input_shape=(3, 8, 8))
    probe(model, x, train_mode=True)
    probe(model, x)
    reinit_copy(model, __import__("initcli").make_init("he-normal"), seed=0)
    assert model.training and all(m.training for m in model.modules())
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert all(p.grad is None for p in model.parameters())
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


def test_example_input_from_the_callable():
    rows = run_json("probe", f"{MODELS}:with_example")["rows"]
    assert [r["type"] for r in rows] == ["Linear", "Tanh"] and rows[0]["output_shape"] == "16x8"
    assert 0 <= rows[1]["saturated_frac"] <= 1


def test_modules_and_max_depth_select_rows():
    rows = run_json("probe", f"{MODELS}:residual", "--kwargs", '{"width": 8, "depth": 3}', "--input-shape", "8",
                    "--batch", "4", "--max-depth", "1")["rows"]
    assert [r["module"] for r in rows] == ["0", "1", "2"]
    rows = run_json("probe", f"{MODELS}:residual", "--kwargs", '{"width": 8, "depth": 3}', "--input-shape", "8",
                    "--batch", "4", "--modules", "*.stream")["rows"]
    assert [r["module"] for r in rows] == ["0.stream", "1.stream", "2.stream"]


@pytest.mark.parametrize("args, option", [
    (["tests/no_such_file.py:mlp", "--input-shape", "4"], "no_such_file"),
    (["no_such_module_xyz:mlp", "--input-shape", "4"], "no_such_module_xyz"),
    ([f"{MODELS}:nope", "--input-shape", "4"], "nope"),
    ([f"{MODELS}:NOT_CALLABLE", "--input-shape", "4"], "callable"),
    ([f"{MODELS}:not_a_module", "--input-shape", "4"], "Module"),
    ([f"{MODELS}:mlp", "--input-shape", "5"], "'0'"),
    ([f"{MODELS}:mlp", "--input-shape", "32", "--kwargs", "{bad"], "--kwargs"),
    ([f"{MODELS}:mlp", "--input-shape", "32", "--kwargs", "[1]"], "--kwargs"),
    ([f"{MODELS}:mlp", "--input-shape", "32", "--kwargs", '{"nope": 1}'], "--kwargs"),
    ([f"{MODELS}:mlp"], "--input-shape"),
    ([f"{MODELS}:mlp", "--input-shape", "32", "--gain", "2"], "--reinit"),
    ([f"{MODELS}:mlp", "--input-shape", "32", "--reinit", "he-nromal"], "he-normal"),
    ([f"{MODELS}:mlp", "--tokens", "5"], "--seq-len"),
    ([f"{MODELS}:mlp", "--input-shape", "32", "--device", "tpu"], "--device"),
    # the option (or the example) that gave the input the model refused
    ([f"{MODELS}:mlp", "--tokens", "5", "--seq-len", "3"], "--tokens"),
    ([f"{MODELS}:bad_example"], "example"),
    ([f"{MODELS}:dict_output", "--input-shape", "8", "--output", "logit"], "--output"),
    # issue 22: a model on the meta device; an example of 0 samples is refused before any statistics
    ([f"{MODELS}:on_meta", "--input-shape", "4"], "meta device"),
    ([f"{MODELS}:empty_example"], "0 samples"),
])
def test_bad_input_is_one_line_exit_2(args, option):
    result = run("probe", *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("initcli: error:") and option in lines[0], lines


def test_errors_blame_the_input_that_was_used():
    result = run("probe", f"{MODELS}:bad_example")
    assert "--input-shape" not in result.stderr
    result = run("probe", f"{MODELS}:mlp", "--tokens", "5", "--seq-len", "3")
    assert "--input-shape" not in result.stderr


def test_every_buffer_restored_replaced_or_bumped():
    model = probe_models.counting()
    calls, seen = model.calls, model.seen
    x = draw_inputs(seed=0, dtype="float32", batch=8, input_shape=(4,))
    probe(model, x)
    # the forward rebinds `calls` to a new tensor and adds into `seen`: both are put back
    assert model.calls is calls and model.seen is seen
    assert model.calls.item() == 0 and not model.seen.any()
    assert dict(model.named_buffers()).keys() == {"calls", "seen"}


def test_broken_module_reports_its_import_error(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import definitely_not_a_package_xyz\n")
    result = run("probe", f"{broken}:make", "--input-shape", "4")
    assert result.exit_code == 2 and "definitely_not_a_package_xyz" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_memory_refusal_before_the_run():
    from initcli.errors import InitcliError
    from initcli.probing import run_probe

    with pytest.raises(InitcliError, match="memory"):
        run_probe(f"{MODELS}:mlp", input_shape=[32], batch=8, available=1 << 20)


def test_torch_missing_is_one_line(monkeypatch):
    import initcli.optional as optional

    real = optional.importlib.import_module

    def fake(name, *a, **k):
        if name == "torch":
            raise ImportError("no torch")
        return real(name, *a, **k)

    monkeypatch.setattr(optional.importlib, "import_module", fake)
    result = run("probe", f"{MODELS}:mlp", "--input-shape", "32")
    assert result.exit_code == 2 and "initcli[torch]" in result.stderr
