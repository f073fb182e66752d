"""`train --arch conv` and `train --arch transformer`: does this init learn, with convolutions
or attention? The same experiment as `initcli.training` (same optimizers, loss, score, rows and
curves), on generated tasks made for each architecture:

- waves (conv): each example is a plane wave sin(2π·k·x_a/S_a + φ) along a random spatial
  axis a, with a random phase φ, on every channel, plus independent N(0, noise²) per channel
  and position (default noise 1). The class is the frequency band: class c has k ∈ {2c+1, 2c+2}
  cycles across the input. With circular padding the wave wraps exactly. Telling bands apart
  needs the convolutions to compare neighbouring positions: a global mean of the input is 0.
- first (transformer): sequences of T tokens drawn uniformly from a vocabulary of `classes`
  (default 4); the class is the first token. Each token is a fixed random vector E[v] plus a
  fixed random position vector P[t] (both N(0, 1), drawn from the seed, (E + P)/√2), plus
  N(0, noise²) (default 0). The read-out sees the mean over tokens, so it must be attention
  that carries position 0's token to the others: a stack whose tokens have collapsed to one
  direction (rank collapse) cannot learn it.

The network is the engine's stack (`initcli.conv` or `initcli.transformer`), a mean over
positions or tokens (after a final LayerNorm for pre-LN transformers, as GPT-2's), and a
linear read-out drawn with the scheme from its own stream. Biases start at 0. Every run is
on one BLAS thread, so results do not depend on --jobs or the machine's thread count.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .checks import check_dtype, check_memory, check_seed, positive_int
from .engine import seed_streams
from .errors import InitcliError
from .parallel import check_jobs, run_all
from .tasks import (  # noqa: F401  (the makers and checks: public here before tasks.py)
    BLOCK_TASKS,
    Task,
    check_block_task,
    check_samples,
    check_waves,
    make_first,
    make_waves,
)
from .threads import blas_threads_limited
from .training import (
    MAX_EPOCHS,
    OPTIMIZERS,
    Optimizer,
    TrainResult,
    TrainRun,
    fit,
    loss_and_grad,
    number_in,
)

_READOUT_STREAM = 0x7EAD  # the read-out's own generator: SeedSequence([seed, this])


# -- the network ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockNetwork:
    """The engine's stack, a mean over positions or tokens, and the read-out."""

    kind: str
    body: object  # the engine's network (conv.ConvStack, transformer.TransformerStack)
    act: object
    readout: np.ndarray  # (classes, features)
    readout_bias: np.ndarray

    @property
    def engine(self):
        from .engines import get

        return get(self.kind)

    @property
    def final_norm(self) -> bool:
        return self.engine.final_norm(self.body)

    @property
    def parameters(self) -> list[np.ndarray]:
        return [*self.engine.parameters(self.body).values(), self.readout, self.readout_bias]


def _forward(network: BlockNetwork, x: np.ndarray):
    """(trace, what the pooling read, the final LayerNorm's cache or None, logits)."""
    trace, out = network.engine.forward(network.body, network.act, x)
    norm = None
    if network.final_norm:
        from .engines.shared import layer_norm

        out, inv_std = layer_norm(out)
        norm = (out, inv_std)
    pooled = out.mean(axis=tuple(range(1, out.ndim - 1)))
    logits = pooled @ network.readout.T + network.readout_bias
    return trace, pooled, norm, logits


def gradients(network: BlockNetwork, task: Task, rows: np.ndarray) -> tuple[float, float, list[np.ndarray]]:
    """(loss, score, gradients in the order of `network.parameters`) on the samples `rows`."""
    x = task.x[rows].astype(network.readout.dtype)
    trace, pooled, norm, logits = _forward(network, x)
    loss, score, grad = loss_and_grad(task, logits.astype(np.float64), rows)
    grad = grad.astype(logits.dtype)
    d_readout, d_bias = grad.T @ pooled, grad.sum(axis=0)
    d_pooled = grad @ network.readout
    positions = math.prod(x.shape[1:-1])
    d_out = np.broadcast_to((d_pooled / d_pooled.dtype.type(positions)).reshape(
        (len(rows),) + (1,) * (x.ndim - 2) + (d_pooled.shape[-1],)), x.shape[:-1] + (d_pooled.shape[-1],)).copy()
    if norm is not None:
        from .engines.shared import layer_norm_backward

        d_out = layer_norm_backward(d_out, *norm)
    grads = network.engine.backward(network.body, trace, d_out)
    return loss, score, [*(grads[name] for name in network.engine.parameters(network.body)), d_readout, d_bias]


def _evaluate(network: BlockNetwork, task: Task) -> tuple[float, float, np.ndarray]:
    _, pooled, _, logits = _forward(network, task.x.astype(network.readout.dtype))
    loss, score, _ = loss_and_grad(task, logits.astype(np.float64), np.arange(len(task.x)))
    return loss, score, pooled


def build_network(kind: str, init, act, run, classes: int, seed: int) -> BlockNetwork:
    """The engine's stack from the seed (as propagate draws it, biases 0) and the read-out."""
    from .engines import get

    engine = get(kind)
    body = engine.network(init, run, seed)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _READOUT_STREAM]))
    readout = init.sample((classes, engine.features(run)), rng, run.dtype)
    return BlockNetwork(kind, body, act, readout, np.zeros(classes, dtype=run.dtype))


# -- training -------------------------------------------------------------------------------


def train_block_one(*, kind: str, scheme: str, activation: str, task: str, samples: int, classes: int,
                    noise: float, engine_options: dict, optimizer: str, lr: float, epochs: int, batch: int,
                    target: float, seed: int, init_options: dict,
                    progress: Callable[[int], None] | None = None) -> TrainRun:
    """Train one scheme; deterministic for a seed (data, weights and batch order), on one
    BLAS thread. `progress(n)` after every epoch."""
    with blas_threads_limited(1):
        return _train_block_one(kind, scheme, activation, task, samples, classes, noise, engine_options, optimizer,
                                lr, epochs, batch, target, seed, init_options, progress)


def _prepare(kind: str, scheme: str, activation: str, engine_options: dict, init_options: dict):
    from .engines import get

    return get(kind).prepare(scheme, activation, theory=False, **engine_options, **init_options)


def _train_block_one(kind, scheme, activation, task, samples, classes, noise, engine_options, optimizer, lr, epochs,
                     batch, target, seed, init_options, progress) -> TrainRun:
    started = time.perf_counter()
    run = _prepare(kind, scheme, activation, engine_options, init_options)
    streams = seed_streams(seed)
    data = BLOCK_TASKS[task].make(samples, classes, noise, run, streams["inputs"])
    network = build_network(kind, run.init, run.act, run, classes, seed)
    params = network.parameters
    return fit(lambda rows: gradients(network, data, rows), lambda: _evaluate(network, data), params,
               Optimizer(optimizer, lr, params), samples=samples, batch=batch, epochs=epochs, order=streams["order"],
               target=target, names=(run.init.name, run.act.name), started=started, progress=progress)


def train(kind: str, schemes: Sequence[str] = ("zeros", "constant", "normal", "xavier-normal", "he-normal"),
          activation: str = "relu", *, task: str | None = None, samples: int = 512, classes: int | None = None,
          noise: float | None = None, optimizer: str | None = None, lr: float | None = None, epochs: int = 100,
          batch: int | None = 128, target: float = 0.9, seed: int = 0, dtype: str = "float32",
          jobs: int | None = 1, progress: Callable[[int], None] | None = None, engine_options: dict | None = None,
          **init_options) -> TrainResult:
    """Train the same conv or transformer network from each scheme on the same generated task
    and seed. `engine_options` are the engine's `prepare` keywords (geometry, depth, skips),
    with the engine's `train_defaults` (a smaller network than propagate's) where not given.
    The optimizer defaults to the engine's `train_optimizer` (SGD at lr 0.1 for conv, Adam at
    1e-3 for transformers: what each is trained with in practice). Results have the columns
    of `training.train`."""
    from .engines import names
    from .propagation import engine

    if kind not in names() or kind == "mlp":
        others = [name for name in names() if name != "mlp"]
        raise InitcliError("arch", f"this trains {', '.join(others)} networks (the MLP's is training.train), "
                                   f"got '{kind}'")
    domain = engine(kind)
    if not schemes:
        raise InitcliError("schemes", "needs at least one scheme")
    engine_options = {k: v for k, v in (engine_options or {}).items() if v is not None}
    for name, value in domain.train_defaults.items():
        engine_options.setdefault(name, value)
    optimizer = domain.train_optimizer if optimizer is None else optimizer
    key = str(optimizer).strip().lower()
    if key not in OPTIMIZERS:
        raise InitcliError("optimizer", f"unknown optimizer '{optimizer}'; choose from {', '.join(OPTIMIZERS)}")
    lr = (1e-3 if key == "adam" else 0.1) if lr is None else lr
    lr = number_in("lr", lr, "a finite number > 0", lambda v: v > 0)
    epochs = positive_int("epochs", epochs, MAX_EPOCHS)
    target = number_in("target", target, "a number in (0, 1]", lambda v: 0 < v <= 1)
    seed = check_seed(seed)
    dtype = check_dtype(dtype).name
    task, classes, noise = check_block_task(kind, task, classes, noise)
    samples = check_samples(samples, classes)
    batch = samples if batch is None else min(positive_int("batch", batch), samples)
    # every scheme checked (on a batch of one: the memory is guarded below, naming train's options)
    runs = [_prepare(kind, scheme, activation, dict(engine_options, batch=1, dtype=dtype), init_options)
            for scheme in schemes]
    shape = runs[0].shape
    preset = getattr(shape, "residual_init", None)
    if preset is not None and preset.residual_scale == 0:
        raise InitcliError("residual_init", f"{preset.name} trains its branch gain α from 0, but train keeps α "
                                            "fixed, so the branches would never learn; use it with propagate, "
                                            "compare or jacobian, or train with gpt2, deepnorm or depth-mup")
    BLOCK_TASKS[task].check(runs[0], classes)
    data_bytes = BLOCK_TASKS[task].input_bytes(runs[0], samples)
    jobs = check_jobs(jobs)
    at_once = min(jobs, len(schemes))
    # per worker: the evaluation's forward pass over every sample, the data in float64, and the
    # parameters with their gradients and Adam's moments (inside the estimate's weights, ×4)
    # the largest forward pass is the evaluation's, over every sample: --samples is its batch
    evaluation = domain.estimate_bytes(shape, runs[0].depth, samples, runs[0].dtype)
    shrink = tuple(option for option in domain.MEMORY_OPTIONS if option != "--batch")
    check_memory(at_once * (evaluation + data_bytes), dtype=runs[0].dtype,
                 options=("--samples",) + shrink + ("--jobs",))
    common = dict(kind=kind, activation=activation, task=task, samples=samples, classes=classes, noise=noise,
                  engine_options=dict(engine_options, batch=samples, dtype=dtype), optimizer=key, lr=lr,
                  epochs=epochs, batch=batch, target=target, seed=seed, init_options=init_options)
    results = run_all(train_block_one, [dict(common, scheme=scheme) for scheme in schemes], jobs,
                      on_progress=progress)
    architecture = {k: v for k, v in runs[0].params.items()
                    if k not in ("scheme", "mode", "distribution", "gain", "activation", "batch", "bias_std",
                                 "input_std", "dtype", "seed", "formula")}
    params = {"schemes": [r.row.scheme for r in results], "activation": results[0].row.activation, "task": task,
              "metric": "accuracy", "samples": samples, "classes": classes, "noise": float(noise), **architecture,
              "optimizer": key, "lr": lr, "epochs": epochs, "batch": batch, "target": target, "seed": seed,
              "dtype": dtype, **{k: v for k, v in init_options.items() if v is not None}}
    return TrainResult(params, tuple(results))
