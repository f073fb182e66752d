"""`train`: does this init learn, and how fast? The same MLP, data and seed under each scheme.

The network is the propagate engine's hidden stack (Linear → activation, `depth` layers)
followed by a linear read-out layer, which is a one-layer engine stack with the identity
activation: forward and backward are the engine's, in both. Every weight, read-out included,
is drawn with the scheme, so zeros means all zeros. Classification minimises softmax
cross-entropy, regression the mean squared error; both are means over the batch.

The score is named for what it is: `accuracy` (share of samples whose largest logit is their
class) for the classification tasks, `r2` (the coefficient of determination R² = 1 − SSE/SST,
which is negative when the fit is worse than the mean) for regression. Rows, curve rows and the
result's params (`metric`) carry that name, so a column is never called accuracy when it holds R².

Every run is pinned to one BLAS thread, so a result is the same bytes whatever `--jobs` and the
machine's thread count are.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from .activations import get_activation
from .checks import check_dtype, check_memory, check_seed, positive_int, stack_sizes
from .engine import (
    PLAIN,
    Architecture,
    Stack,
    apply_parametrization,
    build_stack,
    forward,
    make_architecture,
    scale_branches,
    seed_streams,
    vjp,
)
from .errors import InitcliError
from .lsuv import DEFAULT_MAX_ITER, DEFAULT_TOL, check_lsuv_options, lsuv
from .parallel import check_jobs, run_all
from .parametrization import Parametrization, check_param, parametrize
from .schemes import make_init
from .stats import effective_rank
from .tasks import (  # noqa: F401  (FEATURES, MAX_NOISE, check_task, metric_for: public here before tasks.py)
    DEFAULT_TASK,
    FEATURES,
    MAX_NOISE,
    Task,
    check_noise,
    check_samples,
    check_task,
    make_task,
    metric_for,
)
from .tasks import TASKS as _ALL_TASKS
from .threads import blas_threads_limited

OPTIMIZERS = ("sgd", "adam")
ADAM_BETAS = (0.9, 0.999)  # Kingma & Ba 2015, the paper's defaults
ADAM_EPS = 1e-8
MAX_EPOCHS = 10**7
# Memory per epoch per scheme held as a Python curve point: a (loss, score) tuple ≈ 104 bytes
# and its curve row dict ≈ 260 (sys.getsizeof on CPython 3.11), rounded up.
CURVE_POINT_BYTES = 400
TASKS = _ALL_TASKS["mlp"]  # the plane tasks an MLP trains on

# -- the network ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Network:
    """Engine stacks run one after the other, each with its activation: the hidden layers
    (with --residual, a first plain layer that changes the width, then the residual body),
    then the read-out with the identity activation."""

    stages: tuple[tuple[Stack, object], ...]
    parametrization: Parametrization | None = None  # None: sp, one learning rate for all

    @property
    def parameters(self) -> list[np.ndarray]:
        return [p for stack, _ in self.stages for p in (*stack.weights, *stack.biases)]

    def lr_factors(self, optimizer: str) -> list[float] | None:
        """Each parameter's factor on the learning rate, in the order of `parameters`: the
        parametrization's per-layer learning rates for `optimizer`; None under sp."""
        if self.parametrization is None:
            return None
        layers, factors, first = self.parametrization.layers, [], 0
        for stack, _ in self.stages:
            stage = layers[first:first + stack.depth]
            factors += [layer.lr(optimizer) for layer in stage] + [layer.bias_lr(optimizer) for layer in stage]
            first += stack.depth
        return factors

    @property
    def dtype(self) -> np.dtype:
        return self.stages[0][0].weights[0].dtype


_IDENTITY = get_activation("linear")


def loss_and_grad(task: Task, logits: np.ndarray, rows: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(loss, accuracy or R², ∂loss/∂logits) for the samples `rows`. The score is nan when the
    loss is not finite: argmax over nan logits would otherwise count as predicting class 0."""
    n = len(rows)
    if task.regression:
        target = task.y[rows]
        error = logits - target
        loss = float(np.mean(error**2))
        total = float(np.sum((target - target.mean()) ** 2))
        score = 1 - float(np.sum(error**2)) / total if total > 0 and math.isfinite(loss) else math.nan
        return loss, score, (2 / n) * error
    labels = task.y[rows]
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-np.mean(log_probs[np.arange(n), labels]))
    accuracy = float(np.mean(np.argmax(logits, axis=1) == labels)) if math.isfinite(loss) else math.nan
    grad = np.exp(log_probs)
    grad[np.arange(n), labels] -= 1
    return loss, accuracy, grad / n


def _forward(network: Network, x: np.ndarray):
    traces, a = [], x.astype(network.dtype)
    for stack, act in network.stages:
        trace = forward(stack, act, a)
        traces.append(trace)
        a = trace.states[-1].act
    return traces, a


def gradients(network: Network, task: Task, rows: np.ndarray):
    """(loss, score, gradients in the order of `network.parameters`) on the samples `rows`."""
    traces, logits = _forward(network, task.x[rows])
    loss, score, grad = loss_and_grad(task, logits.astype(np.float64), rows)
    grad = grad.astype(logits.dtype)
    per_stage = []
    for (stack, _), trace in zip(reversed(network.stages), reversed(traces)):
        grads, grad = vjp(stack, trace, grad)
        per_stage.append([g for g, _ in grads] + [b for _, b in grads])
    return loss, score, [g for stage in reversed(per_stage) for g in stage]


def _evaluate(network: Network, task: Task) -> tuple[float, float, np.ndarray]:
    traces, logits = _forward(network, task.x)
    loss, score, _ = loss_and_grad(task, logits.astype(np.float64), np.arange(len(task.x)))
    return loss, score, traces[-2].states[-1].act


class Optimizer:
    """SGD or Adam; `factors`, one per parameter, scale the learning rate (a parametrization's
    per-layer rates). Without them every parameter takes `lr` itself, as before."""

    def __init__(self, name: str, lr: float, params: list[np.ndarray], factors: Sequence[float] | None = None) -> None:
        self.name, self.lr, self.step_count = name, lr, 0
        self.lrs = [lr] * len(params) if factors is None else [lr * f for f in factors]
        if name == "adam":
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]

    def step(self, params: list[np.ndarray], grads: list[np.ndarray]) -> None:
        self.step_count += 1
        if self.name == "sgd":
            for p, g, lr in zip(params, grads, self.lrs):
                p -= p.dtype.type(lr) * g
            return
        beta1, beta2 = ADAM_BETAS
        correction1 = 1 - beta1**self.step_count
        correction2 = 1 - beta2**self.step_count
        for p, g, m, v, lr in zip(params, grads, self.m, self.v, self.lrs):
            m *= beta1
            m += (1 - beta1) * g
            v *= beta2
            v += (1 - beta2) * g * g
            p -= (lr * (m / correction1) / (np.sqrt(v / correction2) + ADAM_EPS)).astype(p.dtype)


def build_network(init, act, data: Task, hidden_widths: Sequence[int], *, seed: int, dtype: str,
                  arch: Architecture = PLAIN, lsuv_tol: float = DEFAULT_TOL,
                  lsuv_max_iter: int = DEFAULT_MAX_ITER, param: str = "sp", base_width: float = 1.0,
                  readout_zero: bool = False, outputs: int | None = None) -> Network:
    """Every layer drawn with the scheme from one weight stream, read-out last; LSUV
    calibrates the hidden stages on the task's inputs. `param` (sp, ntk, mup) scales each
    layer's stored weights and sets its output multiplier and learning-rate factors (see
    `initcli.parametrization`); `readout_zero` starts the read-out's weights at 0 (mup's
    examples do so under µP); `outputs` overrides the task's (regression: several targets
    fitted to the same y)."""
    if outputs is None:
        outputs = 1 if data.regression else data.classes
    sizes = [data.x.shape[1], *hidden_widths]
    full = build_stack(init, [*sizes, outputs], seed=seed, dtype=dtype)
    depth = len(hidden_widths)
    cuts = [0, 1, depth] if arch.residual else [0, depth]
    stages = []
    for first, last in zip(cuts[:-1], cuts[1:]):
        stage_arch = arch if arch.residual and first == 1 else replace(PLAIN, norm=arch.norm)
        # a residual-init preset's factors apply to the residual body only
        stages.append((Stack(*scale_branches(full.weights[first:last], full.biases[first:last], stage_arch),
                             stage_arch), act))
    if init.scheme.kind == "lsuv":
        a = data.x.astype(np.dtype(dtype))
        for i, (stack, _) in enumerate(stages):
            with np.errstate(all="ignore"):
                stack, _ = lsuv(stack, act, a, tol=lsuv_tol, max_iter=lsuv_max_iter)
            stages[i] = (stack, act)
            a = forward(stack, act, a).states[-1].act
    readout = full.weights[-1:]
    if readout_zero or (arch.residual_init is not None and arch.residual_init.zero_readout):
        readout = (np.zeros_like(readout[0]),)  # Fixup: the classification layer starts at 0
    stages.append((Stack(readout, full.biases[-1:]), _IDENTITY))
    scaling = parametrize(param, [*sizes, outputs], base_width)
    if scaling.plain:
        return Network(tuple(stages))
    first, scaled = 0, []
    for stack, stage_act in stages:
        layers = scaling.layers[first:first + stack.depth]
        scaled.append((apply_parametrization(stack, [layer.std_factor for layer in layers],
                                             [layer.multiplier for layer in layers]), stage_act))
        first += stack.depth
    return Network(tuple(scaled), scaling)


# -- training -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainRow:
    scheme: str
    activation: str
    final_loss: float
    final_score: float  # accuracy, or R² for regression: named by the result's metric in rows()
    best_score: float
    epochs_to_target: int | None  # first epoch whose score reached the target; None if none did
    diverged: bool  # the loss became inf or nan
    final_effective_rank: float  # of the last hidden layer on the data: 1 = units still identical
    seconds: float


def train_columns(metric: str) -> tuple[str, ...]:
    """The summary columns for a score named `metric` ('accuracy' or 'r2')."""
    return ("scheme", "activation", "final_loss", f"final_{metric}", f"best_{metric}", "epochs_to_target",
            "diverged", "final_effective_rank")


def curve_columns(metric: str) -> tuple[str, ...]:
    return ("scheme", "epoch", "loss", metric)


@dataclass(frozen=True)
class TrainRun:
    row: TrainRow
    curve: tuple[tuple[float, float], ...]  # (loss, score) after each epoch


@dataclass(frozen=True)
class TrainResult:
    """`params["metric"]` names the score: 'accuracy' or 'r2' (regression). Rows and curve rows
    use it in their column names (final_accuracy or final_r2, …); `columns` and
    `curve_columns` list them in order. epochs_to_target is None where the target was never
    reached."""

    params: dict
    runs: tuple[TrainRun, ...]

    @property
    def metric(self) -> str:
        return self.params["metric"]

    @property
    def columns(self) -> tuple[str, ...]:
        return train_columns(self.metric)

    @property
    def curve_columns(self) -> tuple[str, ...]:
        return curve_columns(self.metric)

    def rows(self) -> list[dict]:
        return [dict(zip(self.columns, (r.scheme, r.activation, r.final_loss, r.final_score, r.best_score,
                                        r.epochs_to_target, r.diverged, r.final_effective_rank)))
                for r in (run.row for run in self.runs)]

    def curve_rows(self) -> list[dict]:
        return [dict(zip(self.curve_columns, (run.row.scheme, epoch, loss, score)))
                for run in self.runs for epoch, (loss, score) in enumerate(run.curve, start=1)]


def train_one(*, scheme: str, activation: str, task: str, samples: int, classes: int | None, noise: float | None,
              hidden_widths: Sequence[int], optimizer: str, lr: float, epochs: int, batch: int | None, target: float,
              seed: int, dtype: str, init_options: dict, arch: Architecture = PLAIN, lsuv_tol: float = DEFAULT_TOL,
              lsuv_max_iter: int = DEFAULT_MAX_ITER, progress: Callable[[int], None] | None = None,
              param: str = "sp") -> TrainRun:
    """Train one scheme; deterministic for a seed (data, weights and batch order).

    Runs on one BLAS thread: a product's rounding may depend on how BLAS splits it across
    threads, and a run must give the same bytes in a worker, in series, or on another machine's
    core count. `progress(n)` is called after every epoch with the number of epochs done since
    the last call (the remaining ones at once when the run diverges)."""
    with blas_threads_limited(1):
        return _train_one(scheme=scheme, activation=activation, task=task, samples=samples, classes=classes,
                          noise=noise, hidden_widths=hidden_widths, optimizer=optimizer, lr=lr, epochs=epochs,
                          batch=batch, target=target, seed=seed, dtype=dtype, init_options=init_options, arch=arch,
                          lsuv_tol=lsuv_tol, lsuv_max_iter=lsuv_max_iter, progress=progress, param=param)


def _train_one(*, scheme, activation, task, samples, classes, noise, hidden_widths, optimizer, lr, epochs, batch,
               target, seed, dtype, init_options, arch, lsuv_tol, lsuv_max_iter, progress, param) -> TrainRun:
    import time

    started = time.perf_counter()
    streams = seed_streams(seed)
    data = make_task(task, samples, classes=classes, noise=noise, rng=streams["inputs"])
    act = get_activation(activation, init_options.get("negative_slope", 0.01))
    init = make_init(scheme, activation=activation, **init_options)
    network = build_network(init, act, data, hidden_widths, seed=seed, dtype=dtype, arch=arch, lsuv_tol=lsuv_tol,
                            lsuv_max_iter=lsuv_max_iter, param=param)
    params = network.parameters
    opt = Optimizer(optimizer, lr, params, network.lr_factors(optimizer))
    batch = len(data.x) if batch is None else min(batch, len(data.x))
    return fit(lambda rows: gradients(network, data, rows), lambda: _evaluate(network, data), params, opt,
               samples=len(data.x), batch=batch, epochs=epochs, order=streams["order"], target=target,
               names=(init.name, act.name), started=started, progress=progress)


def fit(gradients_of: Callable[[np.ndarray], tuple[float, float, list[np.ndarray]]],
        evaluate: Callable[[], tuple[float, float, np.ndarray]], params: list[np.ndarray], opt: Optimizer, *,
        samples: int, batch: int, epochs: int, order: np.random.Generator, target: float, names: tuple[str, str],
        started: float, progress: Callable[[int], None] | None = None) -> TrainRun:
    """The training loop every network shares: mini-batches in the order stream's permutation
    (none when the batch is the data), one optimizer step each, an evaluation on all the data
    after every epoch. A non-finite loss ends the run as diverged, its remaining epochs nan.
    `evaluate()` returns (loss, score, features): the features' effective rank is reported."""
    import time

    curve: list[tuple[float, float]] = []
    diverged = False
    # overflow is a result here (the loss becomes inf/nan: diverged), never a warning
    with np.errstate(all="ignore"):
        for epoch in range(epochs):
            shuffled = order.permutation(samples) if batch < samples else np.arange(samples)
            for start in range(0, samples, batch):
                loss, _, grads = gradients_of(shuffled[start:start + batch])
                if not math.isfinite(loss):
                    diverged = True
                    break
                opt.step(params, grads)
            loss, score, features = evaluate()
            diverged = diverged or not math.isfinite(loss)
            curve.append((loss, score))
            if progress is not None:
                progress(1)
            if diverged:  # nothing more to learn: the rest of the curve is nan
                curve.extend([(math.nan, math.nan)] * (epochs - epoch - 1))
                if progress is not None and epoch + 1 < epochs:
                    progress(epochs - epoch - 1)
                break
        rank = effective_rank(features, max_inputs=None)
    scores = [score for _, score in curve if math.isfinite(score)]
    reached = next((i + 1 for i, (_, score) in enumerate(curve) if math.isfinite(score) and score >= target), None)
    row = TrainRow(*names, curve[-1][0], curve[-1][1], max(scores) if scores else math.nan, reached, diverged, rank,
                   time.perf_counter() - started)
    return TrainRun(row, tuple(curve))


def number_in(param: str, value, accepted: str, inside: Callable[[float], bool]) -> float:
    """`value` as a finite float for which `inside` holds, or one InitcliError saying `accepted`
    (bools, strings that are no number and ints beyond float's range included)."""
    try:
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not (math.isfinite(number) and inside(number)):
        raise InitcliError(param, f"must be {accepted}, got {str(value)[:40]}")
    return number


def check_residual_init_trains(arch: Architecture, schemes: Sequence[str]) -> None:
    """ReZero and SkipInit train their branch gain α from 0; here α is a constant, so their
    branches would never get a gradient. LSUV would rescale every layer over the preset."""
    name = arch.residual_init.name
    if arch.residual_init.residual_scale == 0:
        raise InitcliError("residual_init", f"{name} trains its branch gain α from 0, but train keeps α fixed, so "
                                            "the branches would never learn; use it with propagate, compare or "
                                            "jacobian, or train with depth-mup")
    from .schemes import get_scheme

    if any(get_scheme(scheme).kind == "lsuv" for scheme in schemes):
        raise InitcliError("residual_init", f"does not apply to the lsuv scheme, which rescales every layer from the "
                                            f"data over {name}'s factors")


def train(schemes: Sequence[str] = ("zeros", "constant", "normal", "xavier-normal", "he-normal"),
          activation: str = "relu", *, task: str = DEFAULT_TASK["mlp"], samples: int = 512, classes: int | None = None,
          noise: float | None = None, sizes: Sequence[int] | None = None, depth: int | None = None,
          width: int | None = None, optimizer: str = "sgd", lr: float = 0.1, epochs: int = 300,
          batch: int | None = 128, target: float = 0.9, seed: int = 0, dtype: str = "float32", jobs: int | None = 1,
          residual: bool = False, residual_scale: float = 1.0, block: int = 1, norm: str | None = None,
          residual_init: str | None = None, param: str = "sp", lsuv_tol: float = DEFAULT_TOL, lsuv_max_iter: int = DEFAULT_MAX_ITER,
          progress: Callable[[int], None] | None = None, **init_options) -> TrainResult:
    """Train the same MLP from each scheme on the same generated task and seed.

    The hidden layers are `sizes` (hidden widths; the input size comes from the task) or
    depth × width (default 4 × 64); the read-out maps to the classes (1 for regression).
    `batch` None, or any batch ≥ samples, is full-batch gradient descent; params record the
    batch size used. `target` is the score (accuracy, or R² for regression) that counts as
    learned, in (0, 1]. A learning rate so large that the weights overflow is a result
    (diverged, loss nan), not an error. `progress(n)` hears of every epoch of every scheme.
    """
    if not schemes:
        raise InitcliError("schemes", "needs at least one scheme")
    key = optimizer.strip().lower()
    if key not in OPTIMIZERS:
        raise InitcliError("optimizer", f"unknown optimizer '{optimizer}'; choose from {', '.join(OPTIMIZERS)}")
    lr = number_in("lr", lr, "a finite number > 0", lambda v: v > 0)
    epochs = positive_int("epochs", epochs, MAX_EPOCHS)
    if batch is not None:
        batch = positive_int("batch", batch)
    target = number_in("target", target, "a number in (0, 1]", lambda v: 0 < v <= 1)
    seed = check_seed(seed)
    dtype = check_dtype(dtype).name
    if sizes is not None:  # --sizes lists the hidden widths: the task fixes input and output
        if depth is not None or width is not None:
            raise InitcliError("sizes", "give either --sizes or --depth/--width, not both")
        hidden = tuple(positive_int("sizes", s) for s in sizes)
        if not hidden:
            raise InitcliError("sizes", "needs at least one hidden width")
    else:
        hidden = stack_sizes(None, depth, width, default_depth=4, default_width=64)[1:]
    if residual and len(hidden) < 2:
        raise InitcliError("residual", "needs at least two hidden layers: the first changes the width")
    arch = make_architecture(residual, residual_scale, block, norm, residual_init, len(hidden) - 1)
    if arch.residual_init is not None:
        check_residual_init_trains(arch, schemes)
    if arch.residual:
        arch.check_sizes(hidden)  # the residual body: every hidden layer after the first
        if (len(hidden) - 1) % arch.block:
            raise InitcliError("block", f"{len(hidden) - 1} residual layers do not split into blocks of {arch.block}")
    lsuv_tol, lsuv_max_iter = check_lsuv_options(lsuv_tol, lsuv_max_iter)
    param = check_param(param)
    if param != "sp":
        from .schemes import get_scheme

        if any(get_scheme(scheme).kind == "lsuv" for scheme in schemes):
            raise InitcliError("param", "does not apply to the lsuv scheme, which rescales every layer from the data")
    task, n_classes, noise = check_task(task, classes, noise)
    samples = check_samples(samples, n_classes)
    batch = samples if batch is None else min(batch, samples)
    for scheme in schemes:
        make_init(scheme, activation=activation, **init_options)
    get_activation(activation, init_options.get("negative_slope", 0.01))
    jobs = check_jobs(jobs)
    # parameters with their gradients and Adam's two moments; activations, φ' and a gradient per
    # sample; in every worker at once; plus every scheme's curve, held in this process
    itemsize = np.dtype(dtype).itemsize
    widths = [FEATURES, *hidden, max(1, n_classes)]
    check_memory((sum(a * b for a, b in zip(widths[:-1], widths[1:])) * itemsize * 4
                  + samples * sum(widths) * (itemsize * 3 + 8)) * min(jobs, len(schemes))
                 + epochs * len(schemes) * CURVE_POINT_BYTES,
                 dtype=dtype, options=("--samples", "--width", "--depth", "--sizes", "--epochs", "--jobs"))
    common = dict(activation=activation, task=task, samples=samples, classes=classes, noise=noise,
                  hidden_widths=hidden, optimizer=key, lr=lr, epochs=epochs, batch=batch, target=target,
                  seed=seed, dtype=dtype, init_options=init_options, arch=arch, lsuv_tol=lsuv_tol,
                  lsuv_max_iter=lsuv_max_iter, param=param)
    calls = [dict(common, scheme=scheme) for scheme in schemes]
    runs = run_all(train_one, calls, jobs, on_progress=progress)  # each epoch reported, in series or from workers
    params = {"schemes": [run.row.scheme for run in runs], "activation": runs[0].row.activation, "task": task,
              "metric": metric_for(task), "samples": samples, "classes": n_classes,
              "noise": None if noise is None else float(noise), "hidden_sizes": list(hidden), "optimizer": key,
              "lr": lr, "epochs": epochs, "batch": batch, "target": target, "seed": seed, "dtype": dtype,
              **arch.params(), **parametrize(param, [FEATURES, *hidden, max(1, n_classes)]).params(),
              **{k: v for k, v in init_options.items() if v is not None}}
    return TrainResult(params, tuple(runs))
