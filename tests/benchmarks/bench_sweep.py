"""Throughput of `sweep` (not collected by pytest).

    python tests/benchmarks/bench_sweep.py              # 192 points of width 128, depth 50
    python tests/benchmarks/bench_sweep.py --points 96

Times the same tanh σ_w × seed grid (width 128, depth 50, batch 128) four ways: a plain loop
calling `run_point` one by one in this process, warmed up (the baseline: no processes, no
tasks, no file), the local executor on 1 and 2 processes, and a local Dask cluster of 2 worker
processes (cluster start-up included, as a user pays it), each the fastest of --repeat runs.
Prints points/s and the ratio to the loop. Every way must give the same rows, byte for byte; the script checks it.
"""

from __future__ import annotations

import argparse
import time

from initcli.render import csv_cell
from initcli.sweep import DaskExecutor, LocalExecutor, _theory, columns, grid, run_point, sweep
from initcli.threads import blas_threads_limited


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=192)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2, help="time each way this many times; report the fastest")
    args = parser.parse_args()
    seeds = 4
    count = max(1, args.points // seeds)
    sigma_ws = [round(0.5 + 2.5 * i / max(1, count - 1), 6) for i in range(count)]
    points = grid({"sigma_w": sigma_ws, "sigma_b": [0.1], "depth": [args.depth], "width": [args.width],
                   "batch": [128], "activation": ["tanh"]}, seeds=seeds)

    header = columns()

    def text(rows):
        return [[csv_cell(row.get(c)) for c in header] for row in rows]

    with blas_threads_limited(1):  # warm-up off the clock: imports and first-call costs of this process
        run_point(grid({"sigma_w": [0.123], "depth": [2], "width": [8], "batch": [8], "activation": ["tanh"]})[0], 0, {})
    def best(run):
        """The fastest of --repeat runs: on a shared machine the others' load only ever slows one down."""
        times = []
        for _ in range(args.repeat):
            _theory.cache_clear()  # every run pays for its theory, as a fresh process does
            started = time.perf_counter()
            rows = run()
            times.append(time.perf_counter() - started)
        return min(times), rows

    def in_loop():
        with blas_threads_limited(1):
            return [run_point(p, i, {}) for i, p in enumerate(points)]

    loop, baseline = best(in_loop)
    print(f"{len(points)} points, width {args.width}, depth {args.depth}, batch 128, tanh; best of {args.repeat}")
    print(f"{'loop in one process':28} {len(points) / loop:8.2f} points/s   1.00×")
    expected = text(baseline)
    for name, executor in (("local, 1 process", LocalExecutor(1)), ("local, 2 processes", LocalExecutor(2)),
                           ("dask, 2 local workers", DaskExecutor(None, jobs=2))):
        seconds, rows = best(lambda: sweep(points, executor=executor).rows)  # noqa: B023 - called at once
        assert text(rows) == expected, f"{name}: rows differ"
        print(f"{name:28} {len(points) / seconds:8.2f} points/s   {loop / seconds:.2f}×")


if __name__ == "__main__":
    main()
