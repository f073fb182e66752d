"""The engine contract (`initcli.engines.base.Engine`), checked on every registered engine:
a new architecture passes these or fails them by name.

- gradients: ∂L/∂θ for L = Σ g ⊙ output against central differences in float64;
- seeds: the same seed gives the same bytes, another seed other numbers;
- memory: the peak a run allocates (tracemalloc, which numpy reports to) stays under the
  estimate the memory guard checks before the run;
- schemes: every scheme kind either runs or is refused with the reason the engine declares.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from initcli.activations import get_activation
from initcli.engines import get, names
from initcli.engines.base import UNITS
from initcli.errors import InitcliError
from initcli.propagation import ARCHS
from initcli.schemes import SCHEMES

# tiny runs, each engine in its plain form and in a variant with its skips and norms
TINY = {
    "mlp": [dict(depth=3, width=6, batch=4), dict(depth=4, width=6, batch=4, residual=True, norm="layer")],
    "conv": [dict(depth=2, channels=3, spatial=(5,), kernel=3, batch=2),
             dict(depth=2, channels=3, spatial=(4, 4), kernel=3, batch=2, padding="zero", residual=True)],
    "transformer": [dict(depth=2, width=8, heads=2, seq_len=3, batch=2),
                    dict(depth=2, width=8, heads=2, seq_len=3, batch=2, causal=True, norm_position="post")],
}
# runs large enough that the arrays, not Python's own objects, make the peak
SIZED = {"mlp": dict(depth=8, width=256, batch=256), "conv": dict(depth=4, channels=16, spatial=(16, 16), batch=64),
         "transformer": dict(depth=3, width=64, heads=4, seq_len=16, batch=64)}
SMOOTH = {"mlp": "tanh", "conv": "tanh", "transformer": "gelu"}  # no kink for a difference to step over
EPS = 1e-5  # the central difference's step in float64


def test_the_registry_holds_every_arch():
    assert names() == ARCHS
    for name in names():
        engine = get(name)
        assert engine.name == name and engine.unit in UNITS
        assert engine.memory_options and all(option.startswith("--") for option in engine.memory_options)
        assert set(engine.refused) <= {s.kind for s in SCHEMES}


def _loss(engine, net, act, x, cotangent) -> tuple[float, float]:
    """L = Σ g ⊙ output, and Σ |g ⊙ output|: the size of the terms its rounding comes from."""
    terms = cotangent.astype(np.float64) * engine.output(net, act, x).astype(np.float64)
    return float(terms.sum()), float(np.abs(terms).sum())


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize("variant", [0, 1])
def test_gradients_match_central_differences(name, variant):
    engine = get(name)
    run = engine.prepare("xavier-normal", SMOOTH[name], dtype="float64", bias_std=0.1, theory=False,
                         **TINY[name][variant])
    net, x, cotangent = engine.build(run)
    act = get_activation(SMOOTH[name])
    grads = engine.gradients(net, act, x, cotangent)
    parameters = engine.parameters(net)
    assert set(grads) == set(parameters)
    rng = np.random.default_rng(7)
    checked = 0
    for key, array in parameters.items():
        assert grads[key].shape == array.shape, key
        flat = array.reshape(-1)  # a view: writing to it changes the network
        for index in rng.choice(flat.size, size=min(3, flat.size), replace=False):
            saved = flat[index]
            flat[index] = saved + EPS
            up, scale = _loss(engine, net, act, x, cotangent)
            flat[index] = saved - EPS
            down, _ = _loss(engine, net, act, x, cotangent)
            flat[index] = saved
            numeric = (up - down) / (2 * EPS)
            # rounding: each loss is a sum of terms of total size `scale`, each off by a few ulps
            # after the network's depth of operations; truncation: EPS² times a third derivative
            # of the smooth activations, bounded by the loss's own scale
            tolerance = 64 * np.finfo(np.float64).eps * scale / EPS + EPS ** 2 * scale
            analytic = float(grads[key].reshape(-1)[index])
            assert abs(numeric - analytic) <= tolerance, (key, int(index), numeric, analytic, tolerance)
            checked += 1
    assert checked >= 6


def _rows(result) -> str:
    return repr(result.rows())


@pytest.mark.parametrize("name", ARCHS)
def test_forward_observes_each_unit_once_in_order(name):
    """`forward`'s observer sees every layer (or block) once, first to last, and observing
    changes nothing of the output."""
    engine = get(name)
    run = engine.prepare("he-normal", "relu", theory=False, **TINY[name][0])
    net, x, _ = engine.build(run)
    seen = []
    _, observed = engine.forward(net, run.act, x, lambda index, *rest: seen.append(index))
    assert seen == list(range(1, run.depth + 1))
    assert observed.tobytes() == engine.output(net, run.act, x).tobytes()


@pytest.mark.parametrize("name", ARCHS)
def test_the_same_seed_gives_the_same_bytes(name):
    engine = get(name)
    first = engine.run_prepared(engine.prepare("he-normal", "relu", seed=3, theory=False, **TINY[name][0]))
    again = engine.run_prepared(engine.prepare("he-normal", "relu", seed=3, theory=False, **TINY[name][0]))
    other = engine.run_prepared(engine.prepare("he-normal", "relu", seed=4, theory=False, **TINY[name][0]))
    assert _rows(first) == _rows(again)
    assert _rows(first) != _rows(other)
    # build draws the same network and inputs as the run
    net, x, _ = engine.build(engine.prepare("he-normal", "relu", seed=3, theory=False, **TINY[name][0]))
    net_again, x_again, _ = engine.build(engine.prepare("he-normal", "relu", seed=3, theory=False, **TINY[name][0]))
    assert np.array_equal(x, x_again)
    for key, array in engine.parameters(net).items():
        assert np.array_equal(array, engine.parameters(net_again)[key]), key


@pytest.mark.parametrize("name", ARCHS)
def test_the_memory_estimate_holds_the_measured_peak(name):
    engine = get(name)
    run = engine.prepare("he-normal", "relu", theory=False, **SIZED[name])
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        engine.run_prepared(run)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= run.estimate, (peak, run.estimate)
    # and it is an estimate, not a blanket: within a factor of 4 of what was used
    assert run.estimate <= 4 * peak, (peak, run.estimate)


def _one_of_each_kind():
    seen = {}
    for scheme in SCHEMES:
        seen.setdefault(scheme.kind, scheme.name)
    return sorted(seen.items())


@pytest.mark.parametrize("name", ARCHS)
@pytest.mark.parametrize(("kind", "scheme"), _one_of_each_kind())
def test_every_scheme_kind_runs_or_is_refused_with_its_reason(name, kind, scheme):
    engine = get(name)
    options = dict(TINY[name][0], theory=False)
    if kind in engine.refused:
        with pytest.raises(InitcliError) as caught:
            engine.prepare(scheme, "relu", **options)
        assert caught.value.param == "scheme" and engine.refused[kind] in str(caught.value)
    else:
        result = engine.run_prepared(engine.prepare(scheme, "relu", **options))
        assert len(result.rows()) >= TINY[name][0]["depth"]  # a row per layer or block (transformers: sublayers too)


def test_a_registered_engine_is_an_arch(monkeypatch):
    """A new architecture is one registered Engine: --arch accepts it and propagate runs it."""
    import dataclasses

    from initcli import engines
    from initcli.propagation import check_arch, propagate

    with pytest.raises(InitcliError, match="unknown architecture 'wide-mlp'"):
        check_arch("wide-mlp")
    calls = []
    mlp = get("mlp")

    def run(*args, **options):
        calls.append(options)
        return mlp.propagate(*args, **options)

    monkeypatch.setitem(engines._REGISTRY, "wide-mlp", dataclasses.replace(mlp, name="wide-mlp", propagate=run))
    assert check_arch("Wide-MLP") == "wide-mlp"
    result = propagate("he-normal", "relu", arch="wide-mlp", depth=2, width=8, batch=4, theory=False)
    assert len(result.rows()) == 2 and calls == [dict(depth=2, width=8, batch=4, theory=False, progress=None)]
    with pytest.raises(ValueError, match="already registered"):
        engines.register(dataclasses.replace(mlp, name="conv"))


def test_a_new_engine_runs_through_every_command_by_its_own_declarations(monkeypatch):
    """No command names an architecture: a new engine's title, widths, summary columns and
    units come from its own Engine, through propagate, compare and the verdicts."""
    import csv
    import dataclasses
    import io

    from typer.testing import CliRunner

    from initcli import engines
    from initcli.cli import app

    conv = get("conv")

    def relabel(result):
        return dataclasses.replace(result, params={**result.params, "arch": "ring"})

    def summary(result):
        return {"ring_last_act_var": result.per_layer()[-1].act_var}

    ring = dataclasses.replace(
        conv, name="ring", options=(),
        run_prepared=lambda run, progress=None: relabel(conv.run_prepared(run, progress)),
        propagate=lambda *args, progress=None, **options: relabel(conv.propagate(*args, progress=progress, **options)),
        describe=lambda params: f"a ring of {params['depth']}", summary_columns=("ring_last_act_var",),
        summary=summary, widths=lambda params: [7] * (params["depth"] + 1), sample="site")
    monkeypatch.setitem(engines._REGISTRY, "ring", ring)
    env = {"COLUMNS": "200", "NO_COLOR": "1"}
    done = CliRunner().invoke(app, ["propagate", "--arch", "ring", "--depth", "3", "--batch", "4", "-f", "json"], env=env)
    assert done.exit_code == 0, done.output
    assert '"arch": "ring"' in done.stdout
    done = CliRunner().invoke(app, ["compare", "--arch", "ring", "--depth", "3", "--batch", "4", "--schemes",
                                    "zeros,he-normal", "--jobs", "1", "-f", "csv"], env=env)
    assert done.exit_code == 0, done.output
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [row["scheme"] for row in rows] == ["zeros", "he-normal"]
    assert all(float(row["ring_last_act_var"]) >= 0 for row in rows)
    assert "last_token_cosine" not in rows[0]
    done = CliRunner().invoke(app, ["compare", "--arch", "ring", "--depth", "3", "--batch", "4", "--schemes", "he-normal",
                                    "-f", "table"], env=env)
    assert done.exit_code == 0, done.output
    assert "a ring of 3" in done.stdout


def test_an_engine_module_dropped_in_the_folder_is_found(tmp_path):
    """The registry imports every module of the engines folder: a new module there registers
    its engine, and every command takes its own options, with no other file changed (run in
    a fresh process, as a worker would be; the CLI reads the engines without importing numpy)."""
    import subprocess
    import sys

    (tmp_path / "ring.py").write_text(
        "import dataclasses\n"
        "from initcli.engines import get, register\n"
        "from initcli.engines.base import OptionSpec\n"
        "ENGINE = register(dataclasses.replace(get('conv'), name='ring', options=(\n"
        "    OptionSpec('ring_sites', int, 'ring: sites around the ring.'),)))\n")
    code = (f"import sys; import initcli.engines as e; e.__path__.append({str(tmp_path)!r}); "
            "from initcli.cli import app; print('numpy' in sys.modules); "
            "from initcli.propagation import check_arch; print(e.names(), check_arch('ring')); "
            "from typer.testing import CliRunner; run = CliRunner().invoke; "
            "print('--ring-sites' in run(app, ['propagate', '--help'], env={'COLUMNS': '200'}).stdout); "
            "print(run(app, ['compare', '--arch', 'conv', '--ring-sites', '3']).output.strip())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["False", "('mlp', 'conv', 'transformer', 'ring') ring", "True",
                                        "initcli: error: --ring-sites: only applies with --arch ring"]
