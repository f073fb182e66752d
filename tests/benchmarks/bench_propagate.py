"""Benchmark of `propagate`: initcli against plain PyTorch and against the matrix-multiply floor.

Run it as a plain script (it is not collected by pytest):

    python tests/benchmarks/bench_propagate.py            # all sections
    python tests/benchmarks/bench_propagate.py --quick    # fewer repeats

In one process it times, interleaved and repeated, at each size:
  initcli  propagate() through the Python API with every statistic (no theory columns,
           no start-up), float32;
  torch    the same forward, backward and statistics written plainly in PyTorch (CPU,
           float32), when torch is installed;
  floor    the 3·depth bare numpy matrix products of the same shapes (forward a·Wᵀ,
           backward δ·W and δᵀ·a), the least any implementation on numpy must do.
It prints medians, the ratios initcli/torch and initcli/floor, peak memory against the
estimate, a depth and batch scaling table, and the start-up time of `initcli --help`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import tracemalloc

import numpy as np
from timing import median_times  # tests/benchmarks/timing.py, beside this script

from initcli.activations import get_activation
from initcli.propagation import build_stack, estimate_bytes, measure, propagate
from initcli.schemes import gaussian, make_init

SIZES = [(30, 1024, 1024), (10, 256, 512)]  # (depth, width, batch): the target size and the defaults


def run_initcli(depth, width, batch, checkpoint=False):
    return propagate("he-normal", "relu", depth=depth, width=width, batch=batch, theory=False, seed=0,
                     **({"checkpoint": True} if checkpoint else {}))


def make_engine(depth, width, batch):
    """initcli's engine alone, on weights and inputs drawn beforehand (like the floor)."""
    stack = build_stack(make_init("he-normal"), (width,) * (depth + 1), seed=0)
    rng = np.random.default_rng(1)
    x, g = gaussian(rng, (batch, width)), gaussian(rng, (batch, width))
    relu = get_activation("relu")
    return lambda: measure(stack, relu, x, g)


def make_floor(depth, width, batch):
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((width, width), dtype=np.float32) / np.float32(width**0.5) for _ in range(depth)]
    x = rng.standard_normal((batch, width), dtype=np.float32)
    g = rng.standard_normal((batch, width), dtype=np.float32)

    def floor():
        a = x
        for w in weights:
            a = a @ w.T
        d = g
        for w in reversed(weights):
            _ = d.T @ x
            d = d @ w
    return floor


def make_torch(depth, width, batch, *, with_init):
    """Plain PyTorch: the same forward, backward and statistics; with_init also draws the
    weights and inputs inside the timed call, as initcli's propagate() does."""
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)

    def draw():
        weights = [torch.randn(width, width) * (2 / width) ** 0.5 for _ in range(depth)]
        return weights, [torch.zeros(width) for _ in range(depth)], torch.randn(batch, width), torch.randn(batch, width)

    drawn = None if with_init else draw()

    def effective_rank(a):
        centered = a - a.mean(0)
        gram = centered @ centered.T if a.shape[0] <= a.shape[1] else centered.T @ centered
        trace = torch.trace(gram)
        return (trace * trace / (gram * gram).sum()).item()

    def input_cosine(a):
        unit = torch.nn.functional.normalize(a, dim=1)
        total = unit.sum(0)
        m = a.shape[0]
        return ((total @ total - m) / (m * (m - 1))).item()

    def run():
        weights, biases, x, g = draw() if with_init else drawn
        for w in weights:
            w.requires_grad_(True)
            w.grad = None
        stats = []
        preacts = []
        a = x
        for w, b in zip(weights, biases):
            h = a @ w.T + b
            h.retain_grad()
            preacts.append(h)
            a = torch.relu(h)
            with torch.no_grad():
                stats.append((h.mean().item(), h.var().item(), a.mean().item(), a.var().item(),
                              (h <= 0).all(0).float().mean().item(), effective_rank(a), input_cosine(a)))
        a.backward(g)
        for h, w in zip(preacts, weights):
            stats.append((h.grad.var().item(), w.grad.var().item(), w.std().item()))
        return stats
    return run


def peak_memory(depth, width, batch):
    tracemalloc.start()
    run_initcli(depth, width, batch)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, estimate_bytes((width,) * (depth + 1), batch, np.dtype("float32"))


def startup(repeats):
    command = [sys.executable, "-m", "initcli"]
    results = {}
    for args in (["--help"], ["--version"]):
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run(command + args, capture_output=True, check=True)
            samples.append(time.perf_counter() - start)
        results[" ".join(args)] = statistics.median(samples)
    python_alone = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        python_alone.append(time.perf_counter() - start)
    results["python -c pass"] = statistics.median(python_alone)
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import initcli.cli"], capture_output=True,
                          text=True)
    heavy = [line for line in done.stderr.splitlines() if "numpy" in line or "rich.table" in line]
    return results, heavy


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7

    print(f"numpy {np.__version__}; cores {os.cpu_count()}")
    print("\n## float32, he-normal + relu, every statistic; median of", repeats, "interleaved runs, seconds")
    print("engine: forward, backward and statistics on weights drawn beforehand (torch likewise);")
    print("propagate: the whole API call, sampling the weights and inputs too (torch: randn inside)")
    header = (f"{'depth×width×batch':>18} {'engine':>8} {'torch':>8} {'floor':>8} {'eng/torch':>10} {'eng/floor':>10}"
              f" {'propagate':>10} {'torch+init':>11} {'prop/torch':>11} {'prop/floor':>11}")
    print(header)

    def ratio(a, b):
        return f"{a / b:.2f}" if a and b else "n/a"

    for depth, width, batch in SIZES:
        functions = {"engine": make_engine(depth, width, batch),
                     "torch": make_torch(depth, width, batch, with_init=False),
                     "floor": make_floor(depth, width, batch),
                     "propagate": lambda d=depth, w=width, b=batch: run_initcli(d, w, b),
                     "torch+init": make_torch(depth, width, batch, with_init=True)}
        t = median_times(functions, repeats)
        nan = float("nan")
        print(f"{depth:>6}×{width}×{batch:<6} {t['engine']:>8.3f} {t['torch'] or nan:>8.3f} {t['floor']:>8.3f} "
              f"{ratio(t['engine'], t['torch']):>10} {ratio(t['engine'], t['floor']):>10} {t['propagate']:>10.3f} "
              f"{t['torch+init'] or nan:>11.3f} {ratio(t['propagate'], t['torch+init']):>11} "
              f"{ratio(t['propagate'], t['floor']):>11}")

    print("\n## peak memory (tracemalloc) against the estimate checked before the run")
    for depth, width, batch in SIZES:
        peak, estimate = peak_memory(depth, width, batch)
        print(f"{depth:>6}×{width}×{batch:<8} peak {peak / 2**20:8.1f} MiB  estimate {estimate / 2**20:8.1f} MiB  "
              f"peak/estimate {peak / estimate:.2f}")

    print("\n## scaling: seconds per layer and per input should stay flat")
    width = 512
    print(f"{'depth':>6} {'batch':>6} {'seconds':>9} {'ms/layer':>9} {'µs/layer/input':>15}")
    for depth, batch in [(10, 512), (20, 512), (40, 512), (20, 256), (20, 1024)]:
        t = median_times({"initcli": lambda d=depth, b=batch: run_initcli(d, width, b)}, max(3, repeats // 2))
        seconds = t["initcli"]
        print(f"{depth:>6} {batch:>6} {seconds:>9.3f} {1e3 * seconds / depth:>9.2f} "
              f"{1e6 * seconds / depth / batch:>15.2f}")

    print("\n## start-up (median of subprocess runs)")
    results, heavy = startup(max(5, repeats))
    for name, seconds in results.items():
        print(f"{name:>20}: {seconds:.3f} s")
    print("numpy or rich.table imported by `import initcli.cli`:", "yes" if heavy else "no")


if __name__ == "__main__":
    main()
