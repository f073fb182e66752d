"""`initcli probe --fix lsuv|rescale --save fixed.safetensors`: a broken init repaired, re-probed
and written as a state_dict the model loads."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from initcli.cli import app  # noqa: E402
from initcli.lsuv import DEFAULT_TOL  # noqa: E402

ENV = {"COLUMNS": "250", "NO_COLOR": "1"}
WIDTH, DEPTH, BATCH = 32, 10, 64
EPS32 = float(np.finfo(np.float32).eps)

# Built fresh by every call, from their own generator: a fresh instance holds the same weights.
MODELS = '''
import torch
from torch import nn


def relu_mlp(width=32, depth=10, scale=1.0, init="he", mark=None):
    """A deep ReLU MLP without normalisation, He (or Xavier) weights times `scale`, zero biases."""
    if mark is not None:
        open(mark, "w").close()  # the builder ran: the command did work
    generator = torch.Generator().manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                if init == "xavier":
                    nn.init.xavier_normal_(module.weight, generator=generator)
                else:
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=generator)
                module.weight.mul_(scale)
                module.bias.zero_()
    return model


def conv_stack(channels=16, depth=6, scale=1.0):
    """3x3 convolutions and ReLUs without normalisation, He weights times `scale`."""
    generator = torch.Generator().manual_seed(0)
    layers = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU()]
    model = nn.Sequential(*layers)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=generator)
                module.weight.mul_(scale)
                module.bias.zero_()
    return model
'''


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # these models are small: torch's worker threads only cost time on a busy machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fix_models") / "fix_models.py"
    path.write_text(textwrap.dedent(MODELS))
    return path


def _load_models(path: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("fix_models_for_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


def mlp_args(models: Path, batch: int = BATCH, **kwargs) -> list:
    return ["probe", f"{models}:relu_mlp", "--kwargs", json.dumps(kwargs), "--input-shape", WIDTH,
            "--batch", batch]


def fixed_json(args: list, fix: str, *extra) -> dict:
    result = run(*args, "--fix", fix, *extra, "--format", "json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


# -- a broken init becomes stable ---------------------------------------------------------------


BROKEN = [({"scale": 10.0}, "exploding"), ({"init": "xavier"}, "vanishing")]  # ×0.1: the lsuv test below


@pytest.mark.parametrize("fix", ["lsuv", "rescale"])
@pytest.mark.parametrize(("kwargs", "diagnosis"), BROKEN, ids=["x10", "xavier"])
def test_fix_turns_a_broken_relu_mlp_stable(models, fix, kwargs, diagnosis):
    # He + ReLU keeps q: ×10 multiplies it by 100 per layer, ×0.1 by 0.01, Xavier (σ_w² = 1) by 1/2
    document = fixed_json(mlp_args(models, **kwargs), fix)
    before, after = document["rows"]
    assert (before["stage"], after["stage"]) == ("before", "after")
    assert before["verdict"] == diagnosis, before
    assert after["verdict"] == "stable", after
    assert document["params"]["fix"] == fix
    assert [layer["status"] for layer in document["layers"]] == ["rescaled"] * (DEPTH + 1) or fix == "lsuv"


@pytest.mark.parametrize(("fix", "scale", "diagnosis"), [("lsuv", 10.0, "exploding"), ("rescale", 0.1, "vanishing")])
def test_fix_turns_a_broken_conv_stack_stable(models, fix, scale, diagnosis):
    result = run("probe", f"{models}:conv_stack", "--kwargs", json.dumps({"scale": scale}), "--input-shape", "3,8,8",
                 "--batch", "32", "--fix", fix, "--format", "csv")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("stage,") and len(lines) == 3
    header = lines[0].split(",")
    verdict = header.index("verdict")
    assert lines[1].split(",")[:1] == ["before"] and lines[1].split(",")[verdict] == diagnosis
    assert lines[2].split(",")[:1] == ["after"] and lines[2].split(",")[verdict] == "stable"


# -- what rescale sets, against torch's own fans and gains --------------------------------------


def test_rescale_sets_gain_over_fan_in_and_keeps_the_weights_shape(models, tmp_path):
    saved = tmp_path / "fixed.safetensors"
    document = fixed_json(mlp_args(models, scale=10.0), "rescale", "--save", saved)
    assert document["params"]["save"] == str(saved)
    original = _load_models(models).relu_mlp(scale=10.0)
    fresh = _load_models(models).relu_mlp()
    fresh.load_state_dict(safetensors_torch.load_file(str(saved)))  # strict
    linears = [(name, m) for name, m in original.named_modules() if isinstance(m, torch.nn.Linear)]
    for index, (name, module) in enumerate(linears):
        fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(module.weight)
        followed_by_relu = index < len(linears) - 1
        gain = torch.nn.init.calculate_gain("relu" if followed_by_relu else "linear")
        loaded = fresh.get_submodule(name).weight.detach().double()
        before = module.weight.detach().double()
        # the std (over every entry) is gain/√fan_in; float32 storage rounds each entry by eps/2
        assert math.isclose(loaded.std(unbiased=False).item(), gain / math.sqrt(fan_in), rel_tol=4 * EPS32)
        # one factor for the whole matrix: the weights keep the shape of their distribution
        ratio = loaded / before
        assert (ratio.max() - ratio.min()).item() <= 4 * EPS32 * ratio.abs().max().item()
        assert torch.equal(fresh.get_submodule(name).bias, module.bias)


@pytest.mark.parametrize("fix", ["lsuv", "rescale"])
def test_saved_file_loads_strict_and_holds_the_fixed_weights(models, tmp_path, fix):
    from initcli import fixing
    from initcli.probing import draw_inputs

    saved = tmp_path / "fixed.safetensors"
    fixed_json(mlp_args(models, init="xavier"), fix, "--save", saved)
    state = safetensors_torch.load_file(str(saved))
    fresh = _load_models(models).relu_mlp(init="xavier")
    assert set(state) == set(fresh.state_dict())
    fresh.load_state_dict(state)  # strict: every key, no extra
    # the same fix in Python on the same inputs (the seed's `inputs` stream) gives these weights, bit for bit
    reference = _load_models(models).relu_mlp(init="xavier")
    x = torch.from_numpy(draw_inputs(seed=0, dtype=np.float32, batch=BATCH, input_shape=[WIDTH]))
    fixing.FIXERS[fix](reference, (x,), train_mode=False)
    for name, tensor in reference.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
        assert torch.equal(state[name], tensor), name


# -- lsuv: unit output variance ------------------------------------------------------------------


def test_lsuv_gives_every_layer_unit_output_variance(models, tmp_path):
    saved = tmp_path / "fixed.safetensors"
    probe_batch = 256
    document = fixed_json(mlp_args(models, batch=probe_batch, scale=0.1), "lsuv", "--save", saved)
    assert [row["verdict"] for row in document["rows"]] == ["vanishing", "stable"]
    # on the probe's batch: within LSUV's tolerance, as the after-probe measures it
    layers = document["layers"]
    assert len(layers) == DEPTH + 1 and all(abs(layer["act_var_after"] - 1) <= DEFAULT_TOL for layer in layers)
    assert all(layer["iterations"] >= 1 for layer in layers)  # ×0.1 is far from 1: every layer was rescaled
    assert all(abs(layer["act_var_before"] - 1) > 0.5 for layer in layers)
    # on a fresh batch of other inputs: 1 within the tolerance plus the sampling error of a
    # variance over a batch. Inputs are independent, so the batch variance is a mean of
    # per-input second moments m_i: standard error std(m_i)/√B; the probe's batch set the
    # scale from one such sample, the fresh batch is another
    model = _load_models(models).relu_mlp(scale=0.1)
    model.load_state_dict(safetensors_torch.load_file(str(saved)))
    fresh_batch = 1024
    x = torch.randn(fresh_batch, WIDTH, generator=torch.Generator().manual_seed(12345))
    outputs = []
    handles = [m.register_forward_hook(lambda _m, _i, y: outputs.append(y.detach().double()))
               for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    assert len(outputs) == DEPTH + 1
    for y in outputs:
        centred = y - y.mean()
        per_input = (centred * centred).mean(dim=1)
        variance = per_input.mean().item()
        spread = per_input.std().item()
        sampling = 5 * spread * math.sqrt(1 / fresh_batch + 1 / probe_batch)
        assert abs(variance - 1) <= DEFAULT_TOL + sampling, (variance, sampling)
        assert sampling < 0.5  # the tolerance still tells 1 from the factors of 2 a wrong gain would give


# -- refusals, before any work --------------------------------------------------------------------


def test_save_to_an_unwritable_path_fails_before_any_work(models, tmp_path):
    mark = tmp_path / "built"
    good = tmp_path / "ok.safetensors"
    result = run(*mlp_args(models, scale=10.0, mark=str(mark)), "--fix", "rescale", "--save", good, "--format", "csv")
    assert result.exit_code == 0, result.output
    assert mark.exists() and good.stat().st_size > 0
    mark.unlink()
    (tmp_path / "a_file").write_text("")
    unwritable = [tmp_path / "no_such_folder" / "fixed.safetensors",  # its folder does not exist
                  tmp_path / "a_file" / "fixed.safetensors",  # its folder is a file
                  tmp_path / "fixed.pt",  # not a .safetensors file
                  good]  # exists, and no --force
    if Path("/proc").is_dir():
        unwritable.append(Path("/proc/fixed.safetensors"))  # no file can be created there, even by root
    for path in unwritable:
        result = run(*mlp_args(models, scale=10.0, mark=str(mark)), "--fix", "lsuv", "--save", path, "--format", "csv")
        assert result.exit_code == 2, (path, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "--save" in lines[0], (path, result.stderr)
        assert not mark.exists(), path  # the model was never built
        assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "ok.safetensors"]  # no partial file
    written = good.read_bytes()
    result = run(*mlp_args(models, scale=10.0), "--fix", "lsuv", "--save", good, "--force", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert good.read_bytes() != written  # --force: lsuv's weights replace rescale's


REFUSED = [(["--save", "x.safetensors"], "--save"),  # --save without --fix
           (["--fix", "lsvu"], "--fix"),
           (["--fix", "lsuv", "--reinit", "he-normal"], "--reinit"),
           (["--fix", "rescale", "--plot"], "--plot"),
           (["--fix", "rescale", "--save-plot", "x.png"], "--save-plot"),
           (["--fix", "rescale", "--activation", "tanh"], "--activation")]  # rescale reads the model's own


def test_fix_refuses_options_it_cannot_use(models, tmp_path):
    mark = tmp_path / "built"
    ok = run(*mlp_args(models, mark=str(mark)), "--fix", "lsuv", "--format", "csv")
    assert ok.exit_code == 0, ok.output
    for options, named in REFUSED:
        mark.unlink(missing_ok=True)
        options = [str(tmp_path / o) if o.startswith("x.") else o for o in options]
        result = run(*mlp_args(models, mark=str(mark)), *options, "--format", "csv")
        assert result.exit_code == 2, (options, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and named in lines[0], (options, result.stderr)
        assert not mark.exists(), options  # refused before the model was built
        assert not list(tmp_path.glob("x.*"))


# -- reproducible -------------------------------------------------------------------------------


def test_fix_is_deterministic(models, tmp_path):
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    args = [*mlp_args(models, init="xavier"), "--fix", "lsuv", "--format", "csv"]
    here = run(*args, "--save", first)
    assert here.exit_code == 0, here.output
    # the same command in a fresh process: same bytes on stdout and in the file
    there = subprocess.run([sys.executable, "-m", "initcli", *map(str, args), "--save", str(second)],
                           capture_output=True, env={**os.environ, **ENV, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert there.returncode == 0, there.stderr.decode()
    assert there.stdout.decode() == here.stdout
    assert first.read_bytes() == second.read_bytes()


# -- what counts as a weighted module ------------------------------------------------------------


def test_rescale_reads_hugging_face_conv1d_as_in_out():
    pytorch_utils = pytest.importorskip("transformers.pytorch_utils")
    from initcli.fixing import rescale

    torch.manual_seed(0)
    # GPT-2's MLP: Conv1D(nf=out, nx=in) holds its weight as (in, out)
    model = torch.nn.Sequential(pytorch_utils.Conv1D(256, 64), torch.nn.GELU(), pytorch_utils.Conv1D(64, 256))
    x = torch.randn(8, 5, 64)
    layers, _ = rescale(model, (x,), train_mode=False)
    from initcli.theory import gain as theory_gain

    gelu_gain = theory_gain("gelu").forward_gain  # torch's calculate_gain has no GELU entry
    for layer, module, gain in zip(layers, model[0::2], (gelu_gain, 1.0)):
        # torch's fans of the (out, in) matrix a Linear would hold
        fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(module.weight.T)
        assert layer.fan_in == fan_in == module.weight.shape[0]
        std = module.weight.detach().double().std(unbiased=False).item()
        assert math.isclose(std, gain / math.sqrt(fan_in), rel_tol=4 * EPS32)


def test_rescale_keeps_tied_and_zero_weights():
    from initcli.fixing import rescale

    torch.manual_seed(0)
    embedding = torch.nn.Embedding(50, 32)
    head = torch.nn.Linear(32, 50, bias=False)
    head.weight = embedding.weight  # tied: rescaling the head would rescale the embedding
    zero = torch.nn.Linear(32, 32)
    torch.nn.init.zeros_(zero.weight)  # a zero-initialised layer is a choice
    model = torch.nn.Sequential(embedding, torch.nn.Linear(32, 32), torch.nn.ReLU(), zero, head)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers, _ = rescale(model, (torch.randint(0, 50, (4, 7)),), train_mode=False)
    statuses = {layer.module: layer.status for layer in layers}
    assert statuses["1"] == "rescaled" and statuses["3"] != "rescaled" and statuses["4"] != "rescaled"
    assert torch.equal(model.state_dict()["0.weight"], before["0.weight"])
    assert torch.equal(model.state_dict()["3.weight"], before["3.weight"])
    assert not torch.equal(model.state_dict()["1.weight"], before["1.weight"])


@pytest.mark.parametrize("make", [
    lambda: torch.nn.Conv2d(8, 12, 3, groups=4),  # in/groups·kernel = 2·9
    lambda: torch.nn.ConvTranspose2d(8, 6, 4, stride=2),  # in·kernel/stride² = 8·16/4
    lambda: torch.nn.ConvTranspose2d(8, 6, 3, stride=2, groups=2),  # (in/groups)·kernel/stride² = 4·9/4
], ids=["grouped-conv", "conv-transpose", "grouped-conv-transpose"])
def test_fan_in_is_the_number_of_inputs_one_output_sums(make):
    from initcli.fixing import fan_in

    module = make().double()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # unit inputs, weights ±1: an output is a signed sum of its taps' inputs, of variance
        # exactly the number of taps; over the positions away from the edges (whole stride
        # periods) their mean number is the fan-in
        signs = torch.randint(0, 2, module.weight.shape, generator=generator, dtype=torch.float64) * 2 - 1
        module.weight.copy_(signs)
        module.bias.zero_()
        y = module(torch.randn(64, 8, 20, 20, generator=generator, dtype=torch.float64))
    inner = y[:, :, 4:4 + 12, 4:4 + 12]  # 12 positions: whole periods of stride 2
    # random signs leave different channels uncorrelated; within a channel an output shares
    # inputs with the outputs within 2k−1 positions: that many fewer independent samples
    overlap = math.prod(2 * k - 1 for k in module.kernel_size)
    tolerance = 5 * math.sqrt(2 * overlap / inner.numel())
    assert abs(inner.var().item() / fan_in(module) - 1) <= tolerance, (inner.var().item(), fan_in(module), tolerance)
    assert tolerance < 0.3


def test_lsuv_in_train_mode_leaves_running_statistics_and_flags_as_they_were():
    from initcli.fixing import lsuv

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Dropout(0.5), torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU())
    model.eval()
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "batches" in k}
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    layers, _ = lsuv(model, (x,), train_mode=True)
    assert [layer.status for layer in layers] == ["rescaled", "rescaled"]
    for name, value in buffers.items():
        assert torch.equal(model.state_dict()[name], value), name
    assert not any(m.training for m in model.modules())
    # dropout off while measuring: the second conv's output variance is 1 on the batch, pass after pass
    model.train()
    model[3].eval()
    with torch.no_grad():
        y = model[:5](x).double()
    assert abs(y.var(unbiased=False).item() - 1) <= DEFAULT_TOL
