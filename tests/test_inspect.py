"""`initcli inspect`: a corpus drawn by torch.nn.init itself (and by Keras's variance-scaling
formulas in its (in, out) layout), saved in every format, must be named by the scheme that drew
it; torch modules' default init must read as torch-default, N(0, 1), ones and zeros; bad files
are one line each."""

import csv
import io
import json
import math
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from initcli.cli import app
from initcli.errors import InitcliError
from initcli.inspection import COLUMNS, inspect, matching

torch = pytest.importorskip("torch")
nn = torch.nn
init = torch.nn.init

ENV = {"COLUMNS": "250", "NO_COLOR": "1"}
SQRT5 = math.sqrt(5)

# (shape in torch layout, how torch draws it, the reading inspect must give)
LINEAR = [(96, 192), (192, 96), (128, 128)]
CONV = [(32, 16, 3, 3), (64, 32, 3, 3), (16, 8, 5, 5)]
TORCH_CASES = [
    ("xavier_uniform", lambda w: init.xavier_uniform_(w), "xavier-uniform"),
    ("xavier_normal_tanh", lambda w: init.xavier_normal_(w, gain=5 / 3), "xavier-normal(gain=5/3)"),
    ("kaiming_uniform", lambda w: init.kaiming_uniform_(w, nonlinearity="relu"), "he-uniform"),
    ("kaiming_normal_out", lambda w: init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"),
     "he-normal(mode=fan_out)"),
    ("kaiming_normal_leaky", lambda w: init.kaiming_normal_(w, a=0.3, nonlinearity="leaky_relu"), "he-normal(a=0.3)"),
    ("kaiming_uniform_tanh", lambda w: init.kaiming_uniform_(w, nonlinearity="tanh"), "lecun-uniform(gain=5/3)"),
    ("kaiming_normal_linear", lambda w: init.kaiming_normal_(w, nonlinearity="linear"), "lecun-normal"),
    ("kaiming_normal_selu", lambda w: init.kaiming_normal_(w, nonlinearity="selu"), "lecun-normal(gain=3/4)"),
    ("torch_default", lambda w: init.kaiming_uniform_(w, a=SQRT5), "torch-default"),
    ("orthogonal", lambda w: init.orthogonal_(w), "orthogonal"),
    ("orthogonal_relu", lambda w: init.orthogonal_(w, gain=math.sqrt(2)), "orthogonal(gain=sqrt2)"),
    ("normal_002", lambda w: init.normal_(w, std=0.02), "normal(std=0.02)"),
    ("trunc_normal_002", lambda w: init.trunc_normal_(w, std=0.02), "normal(std=0.02)"),
    ("zeros", lambda w: init.zeros_(w), "zeros"),
    ("ones", lambda w: init.ones_(w), "ones"),
]


def _torch_corpus() -> dict[str, tuple[np.ndarray, str]]:
    torch.manual_seed(0)
    corpus = {}
    for label, draw, expected in TORCH_CASES:
        for shape in LINEAR + CONV:
            w = torch.empty(shape)
            draw(w)
            corpus[f"{label}.{'x'.join(map(str, shape))}.weight"] = (w.numpy().copy(), expected)
    for shape in LINEAR:
        corpus[f"eye.{'x'.join(map(str, shape))}.weight"] = (init.eye_(torch.empty(shape)).numpy().copy(), "identity")
    for shape in CONV:
        corpus[f"dirac.{'x'.join(map(str, shape))}.weight"] = (init.dirac_(torch.empty(shape)).numpy().copy(), "dirac")
    return corpus


def _keras_truncated(rng, shape, std):
    """Keras's truncated_normal: N(0, (std/0.8796)²) redrawn outside ±2 of its own σ."""
    sigma = std / 0.87962566103423978
    out = rng.normal(0, sigma, shape)
    bad = np.abs(out) > 2 * sigma
    while bad.any():
        out[bad] = rng.normal(0, sigma, int(bad.sum()))
        bad = np.abs(out) > 2 * sigma
    return out.astype(np.float32)


def _keras_corpus() -> dict[str, tuple[np.ndarray, str]]:
    """Keras's variance scaling in its layout: Dense (in, out), Conv (*k, in, out)."""
    rng = np.random.default_rng(1)
    corpus = {}
    shapes = [(192, 96), (96, 192), (3, 3, 16, 32), (3, 3, 32, 64)]
    for shape in shapes:
        fan_in = math.prod(shape[:-1])
        fan_out = math.prod(shape[:-2]) * shape[-1]
        tag = "x".join(map(str, shape))
        corpus[f"glorot_uniform.{tag}.kernel"] = (
            rng.uniform(-1, 1, shape).astype(np.float32) * math.sqrt(6 / (fan_in + fan_out)), "xavier-uniform")
        corpus[f"glorot_normal.{tag}.kernel"] = (
            _keras_truncated(rng, shape, math.sqrt(2 / (fan_in + fan_out))), "xavier-normal(distribution=truncated-normal)")
        corpus[f"he_normal.{tag}.kernel"] = (
            _keras_truncated(rng, shape, math.sqrt(2 / fan_in)), "he-normal(distribution=truncated-normal)")
        corpus[f"lecun_uniform.{tag}.kernel"] = (
            rng.uniform(-1, 1, shape).astype(np.float32) * math.sqrt(3 / fan_in), "lecun-uniform")
    return corpus


def _save(corpus: dict, path, fmt: str) -> None:
    arrays = {name: a for name, (a, _) in corpus.items()}
    if fmt == "safetensors":
        from safetensors.numpy import save_file

        save_file(arrays, str(path))
    elif fmt == "npz":
        np.savez(path, **arrays)
    elif fmt == "pt":
        torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, path)
    else:
        onnx = pytest.importorskip("onnx")
        from onnx import helper, numpy_helper

        graph = helper.make_graph([], "weights", [], [], initializer=[numpy_helper.from_array(v, k)
                                                                      for k, v in arrays.items()])
        onnx.save(helper.make_model(graph), str(path))


FORMATS = ("safetensors", "npz", "pt", "onnx")


@pytest.fixture(scope="module")
def torch_corpus():
    return _torch_corpus()


@pytest.mark.parametrize("fmt", FORMATS)
def test_torch_corpus_is_named_in_every_format(tmp_path, torch_corpus, fmt):
    path = tmp_path / f"corpus.{fmt}"
    _save(torch_corpus, path, fmt)
    result = inspect(path)
    assert sorted(t.name for t in result.tensors) == sorted(torch_corpus)
    missed = [(t.name, t.match) for t in result.tensors if torch_corpus[t.name][1] not in t.match.split("|")]
    assert not missed
    for t in result.tensors:
        assert t.layout == "torch"
        if t.expected_std:
            # the std agrees with the formula within 4 standard errors of a sample std
            n = math.prod(int(d) for d in t.shape.split("x"))
            assert abs(t.std_ratio - 1) < 4 * math.sqrt(2 / (4 * n)) + 1e-6 or t.match.startswith("orthogonal")


def test_keras_corpus_in_its_layout(tmp_path):
    corpus = _keras_corpus()
    path = tmp_path / "keras.safetensors"
    _save(corpus, path, "safetensors")
    result = inspect(path)
    assert result.params["preferred_layout"] == "keras"
    for t in result.tensors:
        assert corpus[t.name][1] in t.match.split("|"), (t.name, t.match)
        assert t.layout == "keras"
    # the conv kernels (3, 3, in, out): fan_in counts the kernel, in·9
    conv = next(t for t in result.tensors if t.shape == "3x3x16x32")
    assert (conv.fan_in, conv.fan_out) == (144, 288)
    # told it is torch's layout, a (in, out) Dense reads as He with fan_out: the fans swap
    swapped = inspect(path, layout="torch")
    he = next(t for t in swapped.tensors if t.name == "he_normal.192x96.kernel")
    assert "he-normal(mode=fan_out,distribution=truncated-normal)" in he.match.split("|")


def test_family_kurtosis_and_its_standard_error():
    assert matching.FAMILY_MOMENTS["uniform"][0] == pytest.approx(-1.2, abs=1e-12)
    assert matching.FAMILY_MOMENTS["normal"] == (0.0, 24.0)
    # N(0, 1) cut at ±a: ∫z²φ = Z − 2aφ(a), ∫z⁴φ = 3(Z − 2aφ(a)) − 2a³φ(a), Z = erf(a/√2)
    a = 2.0
    phi, z = math.exp(-a * a / 2) / math.sqrt(2 * math.pi), math.erf(a / math.sqrt(2))
    m2, m4 = (z - 2 * a * phi) / z, (3 * (z - 2 * a * phi) - 2 * a**3 * phi) / z
    assert matching.FAMILY_MOMENTS["truncated-normal"][0] == pytest.approx(m4 / m2**2 - 3, rel=1e-9)
    assert math.sqrt(m2) == pytest.approx(0.87962566103423978, rel=1e-12)
    # the sample kurtosis of uniform draws scatters as √(v/n): check v against 400 draws of n = 500
    rng = np.random.default_rng(0)
    draws = rng.uniform(-1, 1, (400, 500))
    centred = draws - draws.mean(axis=1, keepdims=True)
    m2s, m4s = (centred**2).mean(axis=1), (centred**4).mean(axis=1)
    spread = float(np.std(m4s / m2s**2 - 3))
    expected = math.sqrt(matching.FAMILY_MOMENTS["uniform"][1] / 500)
    # the std of 400 samples is within ±4·(1/√(2·400)) ≈ 14% of the truth (plus O(1/n) terms)
    assert spread == pytest.approx(expected, rel=0.2)


def test_ks_p_value():
    # Kolmogorov's distribution: P(√n·D > 1.3581) = 0.05 for large n
    n = 4000
    grid = (np.arange(1, n + 1) - 0.5) / n  # D = 0.5/n against U(0, 1)
    assert matching.ks_p_value(grid, lambda x: x) == 1.0
    d = 1.3581 / (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n))  # Stephens' λ = 1.3581
    assert matching.ks_p_value(np.clip(grid + d - 0.5 / n, 0, 1), lambda x: x) == pytest.approx(0.05, rel=1e-3)
    # under the null, p < 0.05 in 5% of 300 tests: within 4 binomial standard errors
    rng = np.random.default_rng(4)
    rejected = sum(matching.ks_p_value(np.sort(rng.normal(0, 0.3, 200)), matching.family_cdf("normal", 0.3)) < 0.05
                   for _ in range(300))
    assert abs(rejected / 300 - 0.05) < 4 * math.sqrt(0.05 * 0.95 / 300)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(500, 32)
        self.fc1 = nn.Linear(32, 128)
        self.ln = nn.LayerNorm(128)
        self.fc2 = nn.Linear(128, 128)
        self.fc3 = nn.Linear(128, 64)
        self.conv = nn.Conv2d(3, 16, 3)
        self.bn = nn.BatchNorm2d(16)


def test_torch_modules_default_init(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "block.pt"
    torch.save(Block().state_dict(), path)
    result = inspect(path)
    by_name = {t.name: t for t in result.tensors}
    for name in ("fc1.weight", "fc2.weight", "fc3.weight", "conv.weight"):
        assert "torch-default" in by_name[name].match.split("|"), (name, by_name[name].match)
        assert by_name[name].verdict == "ok"
    # torch's default bias U(±1/√fan_in), spelled as the scheme that samples it on a 1-D shape
    for name, fan_in in (("fc1.bias", 32), ("fc2.bias", 128), ("fc3.bias", 128)):
        assert f"uniform(limit={1 / math.sqrt(fan_in):.6g})" in by_name[name].match.split("|"), by_name[name].match
        assert by_name[name].verdict == "ok"
    assert by_name["embed.weight"].role == "embedding"
    assert by_name["embed.weight"].match.split("|")[0] == "normal(std=1)"
    for name in ("ln.weight", "bn.weight"):
        assert (by_name[name].role, by_name[name].match, by_name[name].verdict) == ("norm_scale", "ones", "ok")
    for name in ("ln.bias", "bn.bias"):
        assert (by_name[name].role, by_name[name].match, by_name[name].verdict) == ("norm_shift", "zeros", "ok")
    assert by_name["bn.num_batches_tracked"].role == "other"
    # fc1 → fc2 → fc3 connect: torch-default under relu shrinks each layer's variance by σ_w²/2 = 1/6
    (chain,) = result.summary.chains
    assert [layer.name for layer in chain.layers] == ["fc1.weight", "fc2.weight", "fc3.weight"]
    n = [32 * 128, 128 * 128, 128 * 64]
    for layer, count in zip(chain.layers, n):
        # σ_w² = fan_in·mean square: relative error of a mean square of uniforms √(0.8/n) per layer
        assert layer.forward_factor == pytest.approx(1 / 6, rel=5 * math.sqrt(0.8 / count) + 1e-3)
    assert "×1/6" in chain.text or "×1/5.9" in chain.text or "×1/6.0" in chain.text


def test_suspicious_tensors_and_odd_ones(tmp_path):
    torch.manual_seed(1)
    w = torch.empty(64, 64)
    init.kaiming_normal_(w)
    nan = w.clone()
    nan[3, 4] = float("nan")
    outlier = w.clone()
    outlier[0, 0] = 50.0
    state = {"a.weight": w, "b.weight": torch.zeros(64, 64), "c.weight": nan, "d.weight": outlier,
             "e.weight": w * 40, "ids": torch.arange(10), "mask": torch.ones(5, dtype=torch.bool),
             "g.weight": torch.full((64, 64), 0.5), "ln.weight": torch.full((64,), 0.5)}
    path = tmp_path / "odd.pt"
    torch.save(state, path)
    by_name = {t.name: t for t in inspect(path).tensors}
    assert by_name["a.weight"].verdict == "ok"
    assert by_name["b.weight"].verdict == "suspicious" and "zeros" in by_name["b.weight"].note
    assert by_name["c.weight"].verdict == "suspicious" and "NaN" in by_name["c.weight"].note
    assert by_name["d.weight"].verdict == "suspicious" and "outlier" in by_name["d.weight"].note
    assert by_name["e.weight"].match == "" and "nearest" in by_name["e.weight"].note
    assert by_name["e.weight"].verdict == "suspicious"  # 40× He: far from every scheme (N(0, 1) the nearest)
    assert by_name["g.weight"].verdict == "suspicious" and by_name["g.weight"].match == "constant(value=0.5)"
    assert by_name["ln.weight"].verdict == "unusual"
    for name in ("ids", "mask"):
        assert by_name[name].role == "other" and by_name[name].verdict == "ok" and "not a weight" in by_name[name].note


def test_half_precision_and_subsample(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    torch.manual_seed(2)
    w = init.kaiming_normal_(torch.empty(256, 128))
    path = tmp_path / "half.safetensors"
    save_file({"bf.weight": w.bfloat16(), "fp.weight": w.half(), "f8.weight": w.to(torch.float8_e4m3fn)}, str(path))
    monkeypatch.setattr("initcli.inspection.tensor_stats.SUBSAMPLE", 8192)
    by_name = {t.name: t for t in inspect(path).tensors}
    for name in ("bf.weight", "fp.weight"):
        assert "he-normal" in by_name[name].match.split("|")
        assert "subsample of 8,192 of 32,768" in by_name[name].note
    assert by_name["f8.weight"].std == pytest.approx(float(w.std()), rel=0.05)  # e4m3: 3 mantissa bits
    first = inspect(path)
    assert first.rows() == inspect(path).rows()  # the subsample is deterministic


def test_extreme_values_are_results_not_warnings(tmp_path):
    rng = np.random.default_rng(7)
    path = tmp_path / "edge.npz"
    signs = np.sign(rng.normal(size=(8, 8)))
    np.savez(path, big=rng.normal(0, 1e300, (64, 64)), huge=np.full((8, 8), 1e308) * signs,
             tiny=rng.normal(0, 1e-300, (64, 64)), allnan=np.full((40,), np.nan, np.float32),
             empty=np.zeros((0, 5), np.float32), cplx=np.ones(3, complex), objects=np.array([{"a": 1}], dtype=object),
             ok=rng.normal(0, 1 / 8, (64, 64)).astype(np.float32))
    by_name = {t.name: t for t in inspect(path).tensors}  # RuntimeWarnings are errors under pytest
    assert by_name["big"].std == pytest.approx(1e300, rel=0.1) and by_name["big"].verdict == "suspicious"
    assert by_name["tiny"].std == pytest.approx(1e-300, rel=0.1) and by_name["tiny"].verdict == "suspicious"
    assert by_name["huge"].std == pytest.approx(1e308 * float(np.std(signs)), rel=1e-12)
    assert by_name["allnan"].verdict == "suspicious" and "NaN" in by_name["allnan"].note
    assert "pickle" in by_name["objects"].note and by_name["objects"].role == "other"
    assert "lecun-normal" in by_name["ok"].match.split("|")


def test_gpt2_residual_and_embedding_at_one(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(4)
    n_layer = 6
    arrays = {"wte.weight": rng.normal(0, 1.0, (300, 64)).astype(np.float32)}
    for i in range(n_layer):
        arrays[f"h.{i}.mlp.c_fc.weight"] = rng.normal(0, 0.02, (64, 256)).astype(np.float32)
        arrays[f"h.{i}.mlp.c_proj.weight"] = rng.normal(0, 0.02 / math.sqrt(2 * n_layer), (256, 64)).astype(np.float32)
    path = tmp_path / "gpt.safetensors"
    save_file(arrays, str(path))
    result = inspect(path)
    assert result.params["n_layer"] == n_layer
    by_name = {t.name: t for t in result.tensors}
    assert by_name["h.3.mlp.c_fc.weight"].match.split("|")[0] == "normal(std=0.02)"
    assert "gpt2-residual(n_layer=6)" in by_name["h.3.mlp.c_proj.weight"].match.split("|")
    assert by_name["wte.weight"].verdict == "suspicious" and "feeds matrices" in by_name["wte.weight"].note


def test_sharded_folder(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(5)
    save_file({"a.weight": rng.uniform(-1, 1, (64, 64)).astype(np.float32) / 8}, str(tmp_path / "m-1.safetensors"))
    save_file({"b.weight": rng.normal(0, 1 / 8, (64, 64)).astype(np.float32)}, str(tmp_path / "m-2.safetensors"))
    index = {"metadata": {}, "weight_map": {"a.weight": "m-1.safetensors", "b.weight": "m-2.safetensors"}}
    (tmp_path / "m.safetensors.index.json").write_text(json.dumps(index))
    result = inspect(tmp_path)
    assert [t.name for t in result.tensors] == ["a.weight", "b.weight"]
    # std 1/8 = 1/√64: LeCun, and Xavier too on a square matrix
    assert {"lecun-normal", "xavier-normal"} <= set(result.tensors[1].match.split("|"))
    (tmp_path / "m-2.safetensors").unlink()
    with pytest.raises(InitcliError, match="m-2.safetensors"):
        inspect(tmp_path)


class Thing:  # a pickled object: weights_only loading must refuse it
    def __init__(self):
        self.w = 1


def _bad_files(tmp_path):
    from safetensors.numpy import save_file

    good = tmp_path / "good.safetensors"
    save_file({"w": np.ones((32, 32), np.float32)}, str(good))
    data = good.read_bytes()
    files = {
        "missing": tmp_path / "absent.safetensors",
        "empty": tmp_path / "empty.pt",
        "truncated": tmp_path / "cut.safetensors",
        "corrupt safetensors": tmp_path / "junk.safetensors",
        "corrupt npz": tmp_path / "junk.npz",
        "corrupt pt": tmp_path / "junk.pt",
        "corrupt onnx": tmp_path / "junk.onnx",
        "unknown extension": tmp_path / "model.h5",
        "objects": tmp_path / "objects.pt",
    }
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(data[: len(data) - 100])
    for key in ("corrupt safetensors", "corrupt npz", "corrupt pt", "corrupt onnx"):
        files[key].write_bytes(b"\x07not a weight file at all" * 10)
    files["unknown extension"].write_bytes(b"HDF")
    torch.save({"model": Thing()}, files["objects"], pickle_protocol=pickle.DEFAULT_PROTOCOL)
    return files


def test_bad_files_are_one_line_each(tmp_path):
    for case, path in _bad_files(tmp_path).items():
        with pytest.raises(InitcliError) as caught:
            inspect(path)
        message = str(caught.value)
        assert str(path.name) in message and "\n" not in message, case
        if case == "objects":
            assert "objects" in message


def run(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


def test_cli_formats(tmp_path, torch_corpus):
    path = tmp_path / "c.safetensors"
    _save({k: v for k, v in list(torch_corpus.items())[:12]}, path, "safetensors")
    csv_run = run("inspect", path, "--format", "csv")
    assert csv_run.exit_code == 0
    rows = list(csv.DictReader(io.StringIO(csv_run.stdout)))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 12
    assert "tensors:" in csv_run.stderr  # the summary goes to stderr with CSV
    json_run = run("inspect", path, "--format", "json", "--activation", "tanh")
    document = json.loads(json_run.stdout)
    assert document["command"] == "inspect" and document["params"]["activation"] == "tanh"
    assert "summary" in document and len(document["rows"]) == 12
    table = run("inspect", path, "--format", "table")
    assert table.exit_code == 0 and "xavier" in table.stdout


def test_cli_bad_input_exit_2_nothing_written(tmp_path):
    for case, path in _bad_files(tmp_path).items():
        result = run("inspect", path, "--format", "csv")
        assert result.exit_code == 2, case
        assert result.stdout == "", case
        assert len(result.stderr.strip().splitlines()) == 1, case
    good = tmp_path / "good.safetensors"
    for args in (("--layout", "jax"), ("--tensor", "*"), ("--activation", "nope"), ("--n-layer", "0")):
        result = run("inspect", good, *args)
        assert result.exit_code == 2 and result.stdout == "", args


def test_cli_propagate(tmp_path):
    torch.manual_seed(6)
    state = {f"l{i}.weight": init.kaiming_normal_(torch.empty(256, 256)) for i in range(4)}
    path = tmp_path / "he.pt"
    torch.save(state, path)
    document = json.loads(run("inspect", path, "--format", "json", "--propagate", "--batch", "256").stdout)
    engine = document["propagate"]
    assert engine["tensors"] == list(state) and len(engine["rows"]) == 4
    (chain,) = document["summary"]["chains"]
    for before, after, layer in zip(engine["rows"], engine["rows"][1:], chain["layers"][1:]):
        # He + relu: mean-field factor σ_w²/2 ≈ 1; a width-256 layer's variance wanders by ~√(5/256)
        assert after["preact_var"] / before["preact_var"] == pytest.approx(layer["forward_factor"], rel=0.5)
        assert layer["forward_factor"] == pytest.approx(1.0, rel=0.05)


def test_cli_plot(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "p.safetensors"
    save_file({"a.weight": np.random.default_rng(0).normal(0, 0.1, (100, 100)).astype(np.float32)}, str(path))
    result = run("inspect", path, "--format", "csv", "--plot", "--tensor", "a.*")
    assert result.exit_code == 0 and "a.weight" in result.stderr
    result = run("inspect", path, "--plot", "--tensor", "zzz*")
    assert result.exit_code == 2


def test_every_reading_of_the_corpora_is_a_scheme(tmp_path, torch_corpus):
    """The readings printed for the torch and Keras corpora are --scheme values (parsed as `sample
    --scheme` parses them) whose expected_std, in the tensor's torch-layout shape, is the row's."""
    from initcli.sampling import sample

    torch_path, keras_path = tmp_path / "t.safetensors", tmp_path / "k.safetensors"
    _save(torch_corpus, torch_path, "safetensors")
    _save(_keras_corpus(), keras_path, "safetensors")
    seen = 0
    for path in (torch_path, keras_path):
        for t in inspect(path).tensors:
            shape = matching.torch_shape(tuple(int(d) for d in t.shape.split("x")), t.layout or "torch")
            for i, reading in enumerate(t.match.split("|") if t.match else ()):
                seen += 1
                if i == 0 and t.expected_std:  # drawn, as `sample --scheme READING --shape …` draws it
                    rows = sample(reading, shape=list(shape)).rows()
                    assert rows[0]["expected_std"] == pytest.approx(t.expected_std, rel=1e-4), (t.name, reading)
                else:  # the same parser and formula, without drawing
                    from initcli.schemes import make_init

                    make_init(reading).expected_std(shape)
    assert seen > 200
