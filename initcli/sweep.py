"""`sweep`: run `propagate` over a grid of points and give each point one row.

A grid is the product of axes (σ_w or scheme, σ_b, depth, width, batch, activation) times
seeds. σ_w and σ_b are mean-field's (Poole et al. 2016): weights N(0, σ_w²/fan_in), drawn
with the LeCun normal preset times a gain σ_w, biases N(0, σ_b²).

Reproducibility: every point's random seed is derived from its coordinates alone (a SHA-256
of them, through numpy's SeedSequence), and every point runs on one BLAS thread, so a row
is the same bytes whichever executor, worker count, batch or order produced it.

Depth scales measured per point (Schoenholz et al. 2017's definitions):
- xi_grad: 1/|slope| of a least-squares line through ln grad_var over the deeper half of the
  layers (where q has settled near q*, as `compare` measures its rates); inf where the
  slope is exactly 0.
- xi_q, xi_c: 1/|slope| of ln|x_l − x*| for x = preact_var, input_cosine, fitted over the
  layers from the first within half the initial distance of x* (the linear regime of the
  map) to the last above the noise floor. x* is exact where theory knows it (q* = 0; c* = 1
  in the ordered phase), else the mean over the deeper half of the stack, and then the floor
  is 3 standard deviations of the deepest quarter. nan where fewer than 2 layers are in the
  window; inf where the distance does not shrink.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np

from .errors import InitcliError

COORDINATES = ("sigma_w", "sigma_b", "depth", "width", "batch", "scheme", "activation", "seed")
FLOAT_AXES = ("sigma_w", "sigma_b")
INT_AXES = ("depth", "width", "batch")
NAME_AXES = ("scheme", "activation")
SUMMARY = ("first_act_var", "last_act_var", "first_grad_var", "last_grad_var", "grad_ratio", "max_saturated_frac",
           "max_dead_frac", "min_effective_rank", "last_input_cosine", "verdict", "reason")
MEASURED = ("xi_q", "xi_c", "xi_grad")
THEORY = ("theory_q_star", "theory_chi", "theory_xi_c", "theory_xi_q", "theory_xi_grad", "theory_phase")
MAX_POINTS = 10_000_000
MAX_AXIS = 100_000
DEFAULTS = {"sigma_b": [0.0], "depth": [10], "width": [256], "batch": [512], "activation": ["relu"]}


def columns() -> tuple[str, ...]:
    return COORDINATES + ("run_seed",) + SUMMARY + MEASURED + THEORY + ("error",)


# -- grid ---------------------------------------------------------------------------------------


def _number(text: str, param: str, integer: bool) -> float | int:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "positive integers" if integer else "numbers"
        raise InitcliError(param, f"must be a comma list of {kind} or start:stop:count; '{text}' is not one") from None
    if not integer and not math.isfinite(value):
        raise InitcliError(param, f"must be finite, got '{text}'")
    return value


def parse_axis(text: str, param: str) -> list:
    """'1,2,3' or 'start:stop:count' (count values evenly spaced, both ends included) for a
    number axis; a comma list of names for scheme and activation. Repeats are dropped."""
    text = str(text).strip()
    if param in NAME_AXES:
        values = [item.strip().lower() for item in text.split(",")]
        if not all(values):
            raise InitcliError(param, f"must be a comma list of names such as relu,tanh; got '{text}'")
        return list(dict.fromkeys(values))
    integer = param in INT_AXES
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            raise InitcliError(param, f"a range is start:stop:count, got '{text}'")
        start, stop = (_number(p.strip(), param, integer) for p in parts[:2])
        count = parts[2].strip()
        if not count.isdecimal() or not 1 <= int(count) <= MAX_AXIS:
            raise InitcliError(param, f"the count of start:stop:count must be an integer from 1 to {MAX_AXIS:,}, "
                                      f"got '{count}'")
        count = int(count)
        if count == 1:
            values = [start]
        elif integer:
            step, extra = divmod(stop - start, count - 1)
            if extra:
                raise InitcliError(param, f"{text} does not give integers: stop − start must be a multiple of count − 1")
            values = [start + i * step for i in range(count)]
        else:
            # 12 significant digits: 0.1·3 is 0.3 in the file, not 0.30000000000000004
            values = [float(f"{v:.12g}") for v in np.linspace(start, stop, count)]
    else:
        values = [_number(item.strip(), param, integer) for item in text.split(",")]
    for value in values:
        if integer and value <= 0:
            raise InitcliError(param, f"must be positive integers, got {value}")
        if not integer and value < 0:
            raise InitcliError(param, f"must be numbers ≥ 0, got {value:g}")
    return list(dict.fromkeys(values))


@dataclass(frozen=True)
class Point:
    """One run of a sweep. Either sigma_w (mean-field weights) or scheme is set."""

    sigma_w: float | None
    sigma_b: float
    depth: int
    width: int
    batch: int
    scheme: str | None
    activation: str
    seed: int  # the replica: base seed + 0, 1, … (not the random seed, see run_seed)

    @property
    def key(self) -> tuple[str, ...]:
        """The coordinates as the CSV file spells them: what resumption compares."""
        return tuple(_cell(getattr(self, name)) for name in COORDINATES)

    @property
    def run_seed(self) -> int:
        return point_seed(self)


def _cell(value) -> str:
    from .render import csv_cell

    return str(csv_cell(value))


def point_seed(point: Point) -> int:
    """The random seed of a point, from its coordinates only (never the worker or the order):
    SHA-256 of the coordinates as the file spells them, through numpy's SeedSequence, as a
    63-bit integer that `propagate --seed` accepts to reproduce the point."""
    digest = hashlib.sha256("\x1f".join(point.key).encode()).digest()
    words = np.frombuffer(digest, dtype="<u4").tolist()
    low, high = np.random.SeedSequence(words).generate_state(2, np.uint32).tolist()
    return ((high << 32) | low) >> 1


def grid(axes: dict[str, Sequence], seeds: int = 1, base_seed: int = 0) -> list[Point]:
    """Every point of the product of `axes` (values per axis name) times `seeds` replicas,
    in a fixed order: the order rows come out in."""
    from .propagation import check_seed

    unknown = set(axes) - set(COORDINATES[:-1])
    if unknown:
        raise InitcliError(sorted(unknown)[0], f"is not a sweep axis; axes are {', '.join(COORDINATES[:-1])}")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_AXIS:
        raise InitcliError("seeds", f"must be an integer from 1 to {MAX_AXIS:,}, got {seeds!r}")
    base_seed = check_seed(base_seed)
    values = {name: list(axes[name]) for name in axes if axes[name] is not None}
    if values.get("sigma_w") and values.get("scheme"):
        raise InitcliError("scheme", "give either --sigma-w (mean-field weights) or --scheme, not both")
    if not values.get("sigma_w") and not values.get("scheme"):
        raise InitcliError("sigma_w", "give --sigma-w (weights N(0, σ_w²/fan_in)) or --scheme")
    for name, default in DEFAULTS.items():
        values.setdefault(name, default)
        if not values[name]:
            raise InitcliError(name, "needs at least one value")
    weights = [(s, None) for s in values.get("sigma_w") or []] + [(None, s) for s in values.get("scheme") or []]
    total = len(weights) * seeds * math.prod(len(values[n]) for n in ("sigma_b", "depth", "width", "batch", "activation"))
    if total > MAX_POINTS:
        raise InitcliError(None, f"the grid has {total:,} points; at most {MAX_POINTS:,} are accepted")
    return [Point(sigma_w, sigma_b, depth, width, batch, scheme, activation, base_seed + replica)
            for sigma_w, scheme in weights for sigma_b in values["sigma_b"] for depth in values["depth"]
            for width in values["width"] for batch in values["batch"] for activation in values["activation"]
            for replica in range(seeds)]


# -- one point ----------------------------------------------------------------------------------


def _call(point: Point, options: dict) -> dict:
    """propagate's keywords for a point."""
    scheme, extra = (point.scheme, {}) if point.scheme is not None else ("lecun-normal", {"gain": point.sigma_w})
    return {"scheme": scheme, "activation": point.activation, "depth": point.depth, "width": point.width,
            "batch": point.batch, "bias_std": point.sigma_b, "seed": point.run_seed, "theory": False,
            **options.get("propagate", {}), **extra}


def check_points(points: Sequence[Point], options: dict) -> None:
    """Every distinct setting checked (names, sizes, memory) before any work starts."""
    from .propagation import prepare

    seen = set()
    for point in points:
        call = _call(point, options)
        call.pop("seed")
        signature = tuple(sorted((k, repr(v)) for k, v in call.items()))
        if signature not in seen:
            seen.add(signature)
            prepare(**call, seed=0)


@lru_cache(maxsize=4096)
def _theory(activation: str, sigma_w: float, sigma_b: float) -> dict:
    from .activations import get_activation
    from .theory import phase

    with np.errstate(all="ignore"):
        p = phase(get_activation(activation), sigma_w, sigma_b)
    return {"theory_q_star": p.q_star, "theory_chi": p.chi, "theory_xi_c": p.xi_c, "theory_xi_q": p.xi_q,
            "theory_xi_grad": p.xi_grad, "theory_phase": p.phase, "c_star": p.c_star}


def effective_sigma_w(point: Point, negative_slope: float | None = None) -> float:
    """σ_w = √fan_in·std of the point's weights; nan where the weights are not i.i.d. zero-mean
    (constant, identity) or scaled by data (lsuv)."""
    if point.scheme is None:
        return point.sigma_w
    from .schemes import make_init

    init = make_init(point.scheme, activation=point.activation)
    if init.kind in ("zeros", "constant", "identity", "dirac", "lsuv", "fixed"):
        return math.nan
    return init.expected_std((point.width, point.width)) * math.sqrt(point.width)


def _slope(layers: Sequence[int], values: Sequence[float]) -> float:
    x = np.asarray(layers, dtype=np.float64)
    y = np.log(np.asarray(values, dtype=np.float64))
    x = x - x.mean()
    return float(np.dot(x, y - y.mean()) / np.dot(x, x))


def _scale(slope: float) -> float:
    if math.isnan(slope):
        return math.nan
    return math.inf if slope == 0 else 1 / abs(slope)


def gradient_scale(grad_var: Sequence[float]) -> float:
    """ξ_grad: 1/|slope of ln grad_var per layer| over the deeper half of the stack."""
    depth = len(grad_var)
    start = depth // 2 if depth >= 4 else 0
    pairs = [(i + 1, v) for i, v in enumerate(grad_var) if i >= start and math.isfinite(v) and v > 0]
    if len(pairs) < 2:
        return math.nan
    return _scale(_slope(*zip(*pairs)))


def approach_scale(values: Sequence[float], target: float | None, eps: float) -> float:
    """ξ of the approach of a per-layer quantity to its fixed point (see the module docstring).
    `target` None: the fixed point is measured, the mean over the deeper half."""
    values = np.asarray(values, dtype=np.float64)
    depth = len(values)
    if depth < 3 or not np.all(np.isfinite(values)):
        return math.nan
    if target is None:
        target = float(np.mean(values[depth // 2:]))
        tail = values[depth - max(2, depth // 4):]
        floor = 3 * float(np.std(tail, ddof=1))
    else:
        floor = 0.0
    floor = max(floor, 8 * eps * max(1.0, abs(target)))
    distance = np.abs(values - target)
    first = int(np.argmax(distance <= distance[0] / 2)) if np.any(distance <= distance[0] / 2) else depth
    layers = []
    for i in range(first, depth):
        if distance[i] <= floor:
            break
        layers.append(i)
    if len(layers) < 2:
        return math.nan
    slope = _slope([i + 1 for i in layers], distance[layers])
    return math.inf if slope >= 0 else 1 / -slope


def measure_point(point: Point, options: dict) -> dict:
    """The row of one point (without error handling: see `run_point`)."""
    from .compare import _row
    from .propagation import propagate

    result = propagate(**_call(point, options))
    summary = asdict(_row(result))
    sigma_w = effective_sigma_w(point)
    theory = (_theory(point.activation, float(sigma_w), float(point.sigma_b)) if math.isfinite(sigma_w)
              else {**{name: math.nan for name in THEORY}, "theory_phase": "", "c_star": math.nan})
    eps = float(np.finfo(result.params["dtype"]).eps)
    layers = result.layers
    q_target = 0.0 if theory["theory_q_star"] == 0 else None
    c_target = 1.0 if theory["c_star"] == 1.0 else None
    row = {**{name: summary[name] for name in SUMMARY},
           "xi_q": approach_scale([layer.preact_var for layer in layers], q_target, eps),
           "xi_c": approach_scale([layer.input_cosine for layer in layers], c_target, eps),
           "xi_grad": gradient_scale([layer.grad_var for layer in layers]),
           **{name: theory[name] for name in THEORY}}
    return row


def run_point(point: Point, index: int, options: dict) -> dict:
    """A whole row: coordinates, run_seed, and the measurements or the error that stopped them."""
    row = {name: getattr(point, name) for name in COORDINATES}
    row["run_seed"] = point.run_seed
    try:
        with np.errstate(all="ignore"):
            row |= measure_point(point, options)
        row["error"] = None
    except Exception as exc:  # one point's failure is its row's; the sweep goes on
        row["error"] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, InitcliError) else str(exc)
    row["_index"] = index
    return row


def run_batch(points: Sequence[tuple[int, Point]], options: dict,
              progress: Callable[[int], None] | None = None) -> list[dict]:
    """One task: its points in order, each on one BLAS thread (see the module docstring)."""
    from .threads import blas_threads_limited

    rows = []
    with blas_threads_limited(1):
        for index, point in points:
            rows.append(run_point(point, index, options))
            if progress is not None:
                progress(1)
    return rows


# -- executors ----------------------------------------------------------------------------------


def batches(indexed: Sequence[tuple[int, Point]], workers: int, size: int | None = None) -> list[list]:
    """Points cut into tasks: about 4 per worker, so a slow task does not hold the end back,
    and at most 64 points each, so a finished task reaches the file soon."""
    if size is None:
        size = max(1, min(64, math.ceil(len(indexed) / (4 * workers))))
    return [list(indexed[i:i + size]) for i in range(0, len(indexed), size)]


@dataclass
class LocalExecutor:
    """Processes on this machine (`initcli.parallel.run_all`: spawn, one BLAS thread each)."""

    jobs: int = 1

    @property
    def workers(self) -> int:
        return self.jobs

    def run(self, tasks: list[list], options: dict, on_rows: Callable[[list[dict]], None],
            on_progress: Callable[[int], None] | None = None) -> None:
        from .parallel import run_all

        run_all(run_batch, [{"points": task, "options": options} for task in tasks], self.jobs,
                on_result=on_rows, on_progress=on_progress)


@dataclass
class DaskExecutor:
    """dask.distributed: a running scheduler (`scheduler` = tcp://host:port) or, without one,
    a local cluster of `jobs` worker processes with one thread each. A task whose worker is
    lost is rerun by the scheduler; one that raises is retried `retries` times."""

    scheduler: str | None = None
    jobs: int = 1
    retries: int = 2

    @property
    def workers(self) -> int:
        return self.jobs

    def run(self, tasks: list[list], options: dict, on_rows: Callable[[list[dict]], None],
            on_progress: Callable[[int], None] | None = None) -> None:
        from .optional import require

        distributed = require("distributed", "executor", "sweep --executor dask")
        cluster = None
        try:
            if self.scheduler is None:
                cluster = distributed.LocalCluster(n_workers=self.jobs, threads_per_worker=1, processes=True,
                                                   dashboard_address=None, silence_logs=40)
                client = distributed.Client(cluster)
            else:
                try:
                    client = distributed.Client(self.scheduler, timeout="10s")
                except (OSError, TimeoutError) as exc:
                    raise InitcliError("scheduler", f"cannot reach the Dask scheduler at {self.scheduler}: {exc}") from None
            try:
                futures = client.map(run_batch, tasks, options=options, retries=self.retries, pure=False)
                for future in distributed.as_completed(futures):
                    rows = future.result()
                    on_rows(rows)
                    if on_progress is not None:
                        on_progress(len(rows))
            finally:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()


def make_executor(name: str = "local", *, jobs: int | None = None, scheduler: str | None = None):
    from .parallel import check_jobs

    key = str(name).strip().lower()
    if key == "local":
        if scheduler is not None:
            raise InitcliError("scheduler", "only applies with --executor dask")
        return LocalExecutor(check_jobs(jobs))
    if key == "dask":
        if scheduler is not None and "://" not in scheduler and ":" not in scheduler:
            raise InitcliError("scheduler", f"must be an address such as tcp://host:8786, got '{scheduler}'")
        return DaskExecutor(scheduler, check_jobs(jobs))
    raise InitcliError("executor", f"unknown executor '{name}'; choose from local, dask")


# -- the results file ---------------------------------------------------------------------------


class ResultsFile:
    """A CSV file that rows are appended to as tasks finish, whole lines only: each batch is
    one write of complete lines, then fsync, so a killed sweep leaves at worst a partial last
    line, which the next run cuts off before it appends."""

    def __init__(self, path: str | os.PathLike, header: Sequence[str]) -> None:
        self.path = os.fspath(path)
        self.header = list(header)
        self.done: set[tuple[str, ...]] = set()
        self.kept = 0
        self._read()

    def _read(self) -> None:
        try:
            with open(self.path, "rb") as stream:
                data = stream.read()
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            raise InitcliError("out", f"cannot read '{self.path}': {exc.strerror or exc}") from None
        end = data.rfind(b"\n") + 1  # whole lines only: a killed run may have left half of one
        if end != len(data):
            try:
                os.truncate(self.path, end)
            except OSError as exc:
                raise InitcliError("out", f"cannot repair '{self.path}': {exc.strerror or exc}") from None
        lines = data[:end].decode("utf-8", errors="replace")
        if not lines:
            self._append(self._lines([self.header]))
            return
        reader = csv.reader(io.StringIO(lines))
        header = next(reader)
        if header != self.header:
            raise InitcliError("out", f"'{self.path}' holds other columns than this sweep writes; "
                                      "give another --out file")
        for fields_ in reader:
            if len(fields_) == len(header):
                self.done.add(tuple(fields_[: len(COORDINATES)]))
                self.kept += 1

    @staticmethod
    def _lines(rows: Iterable[Sequence]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        return buffer.getvalue().encode()

    def _append(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:  # one write for any sane size; a short write continues, still whole lines at the end
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)

    def append(self, rows: Sequence[dict]) -> None:
        from .render import csv_cell

        if rows:
            self._append(self._lines([[csv_cell(row.get(c)) for c in self.header] for row in rows]))


# -- the sweep ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    params: dict
    rows: tuple[dict, ...]  # in grid order; with a results file, only this run's
    columns: tuple[str, ...]
    skipped: int = 0  # points already in the results file
    errors: int = 0


def sweep(points: Sequence[Point], *, executor=None, options: dict | None = None, out: str | None = None,
          progress: Callable[[int], None] | None = None, batch_size: int | None = None,
          params: dict | None = None) -> SweepResult:
    """Run every point (those not already in `out`) and return the rows in grid order.

    `options`: {"propagate": extra propagate keywords (dtype, input_std, residual, …)}. Rows reach `out` as tasks finish."""
    options = dict(options or {})
    executor = executor or LocalExecutor(1)
    header = columns()
    check_points(points, options)
    results = ResultsFile(out, header) if out is not None else None
    indexed = [(i, p) for i, p in enumerate(points) if results is None or p.key not in results.done]
    skipped = len(points) - len(indexed)
    collected: list[dict] = []

    def on_rows(rows: list[dict]) -> None:
        rows = sorted(rows, key=lambda row: row["_index"])
        if results is not None:
            results.append(rows)
        collected.extend(rows)

    if indexed:
        executor.run(batches(indexed, executor.workers, batch_size), options, on_rows, progress)
    collected.sort(key=lambda row: row["_index"])
    rows = tuple({c: row.get(c) for c in header} for row in collected)
    return SweepResult(params or {}, rows, header, skipped, sum(1 for row in rows if row["error"]))


def read_results(path: str) -> list[dict]:
    """A results file's rows as strings, in file order."""
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))

