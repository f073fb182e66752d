"""Benchmark of `propagate --arch conv`: initcli against plain PyTorch and the product floor.

Run it as a plain script (it is not collected by pytest):

    python tests/benchmarks/bench_conv.py            # every size, 3 repeats, profile
    python tests/benchmarks/bench_conv.py --quick    # the 20-layer default only, 1 repeat, no profile

In one process it times, interleaved and repeated, at each size (he-normal + relu, float32):
  initcli  conv.propagate() through the Python API with every statistic (no theory columns),
           sampling included;
  torch    the same stack in plain PyTorch (CPU, float32) on a copy of initcli's weights and
           inputs: per layer torch.nn.functional.pad (circular, as nn.Conv2d's padding_mode does)
           or conv2d's own zero padding, conv2d, relu, autograd backward of Σ g ⊙ a_L, and the
           same statistics (moments of h, a and δ, dead units, effective rank over channels,
           input cosine, weight-gradient variance);
  conv2d   torch's bare conv2d forward and backward alone (pad included), no relu, no statistics:
           what the convolutions themselves cost in torch;
  floor    the bare numpy products of the same shapes, float32, on im2col matrices built
           beforehand: per layer the forward (B·positions × C·k²)(C·k² × C), ∂L/∂W and ∂L/∂a:
           what any im2col implementation on numpy must do, without the copies.
It prints medians, the ratios, how far torch's statistics are from initcli's (the comparison
is only fair if they compute the same thing), peak memory against `estimate_bytes`, the BLAS
threads, and a cProfile of `conv.measure`. In float32 the gradient columns of a 20-layer ReLU
stack differ by up to ~1e-2 relative between any two implementations (a pre-activation within
rounding of 0 takes the other side of the kink); in float64 the two agree to 1e-11.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import time
import tracemalloc
from contextlib import nullcontext

import numpy as np
from timing import median_times, one_thread  # tests/benchmarks/timing.py, beside this script

from initcli import conv
from initcli.stats import RANK_INPUTS
from initcli.threads import blas_threads, blas_threads_limited

SCHEME, ACTIVATION = "he-normal", "relu"
# "default": the defaults (16 channels, 16×16, k = 3, circular, batch 512) at 20 layers, the run
# issue 23 timed at 8 s; "zero": the same with zero padding (torch's conv2d pads by itself);
# "wide": 64 channels over 32×32 (products large enough for BLAS threads)
SIZES = {"default": {"depth": 20},
         "zero": {"depth": 20, "padding": "zero"},
         "wide": {"depth": 10, "channels": 64, "spatial": (32, 32), "batch": 32}}


def prepared(options):
    return conv.prepare(SCHEME, ACTIVATION, theory=False, dtype="float32", seed=0, **options)


def blas_context(run):
    """The BLAS setting initcli's run_prepared uses at this size, for the floor too."""
    return blas_threads_limited(1) if conv.work(run) <= conv.SINGLE_THREAD_WORK else nullcontext()


def make_initcli(options):
    return lambda: conv.propagate(SCHEME, ACTIVATION, theory=False, dtype="float32", seed=0, **options)


def make_floor(run):
    shape, depth = run.shape, run.depth
    rows, fan, c = run.batch * shape.positions, shape.fan, shape.channels
    rng = np.random.default_rng(0)
    cols = rng.standard_normal((rows, fan), dtype=np.float32)  # im2col of a layer's input, or of δ
    delta = rng.standard_normal((rows, c), dtype=np.float32)
    kernel = rng.standard_normal((fan, c), dtype=np.float32)

    def floor():
        with blas_context(run):
            for _ in range(depth):
                _ = cols @ kernel  # forward
            for _ in range(depth):
                _ = delta.T @ cols  # ∂L/∂W
                _ = cols @ kernel  # ∂L/∂a: im2col(δ) times the flipped kernel
    return floor


def _torch_layer(torch, shape):
    """(pad, conv) in torch for the run's geometry (2-D only here)."""
    import torch.nn.functional as F

    if shape.dims != 2:
        raise ValueError("the torch model here is 2-D")
    before, after = shape.pads
    if shape.padding == "circular":
        def layer(a, w, b):
            return F.conv2d(F.pad(a, (before, after, before, after), mode="circular"), w, b)
    else:
        if before != after:
            raise ValueError("zero padding with an even kernel needs asymmetric padding")

        def layer(a, w, b):
            return F.conv2d(a, w, b, padding=before)
    return layer


def make_torch(run):
    """The same stack in plain PyTorch on a copy of initcli's weights and inputs; None
    without torch. Returns (timed function with statistics, bare conv2d function)."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None, None
    shape = run.shape
    if run.arch.residual:
        raise ValueError("the torch model here has no skips")
    stack, x_np, g_np = conv.inputs(run)
    weights = [torch.from_numpy(np.array(w)).requires_grad_(True) for w in stack.weights]
    biases = [torch.from_numpy(np.array(b)) for b in stack.biases]
    x = torch.from_numpy(conv.to_channels_first(x_np))
    g = torch.from_numpy(conv.to_channels_first(g_np))
    layer = _torch_layer(torch, shape)

    def moments(a):
        return a.mean().item(), a.var(unbiased=False).item()

    def effective_rank(a):
        units = a.permute(0, 2, 3, 1).reshape(-1, a.shape[1])  # channels-last, as initcli reads them
        units = units[::max(1, len(units) // RANK_INPUTS)][:RANK_INPUTS]
        centered = units - units.mean(0)
        gram = centered @ centered.T if centered.shape[0] <= centered.shape[1] else centered.T @ centered
        trace = torch.trace(gram)
        return (trace * trace / (gram * gram).sum()).item()

    def input_cosine(a):
        unit = F.normalize(a.reshape(a.shape[0], -1), dim=1)
        total, m = unit.sum(0), a.shape[0]
        return ((total @ total - m) / (m * (m - 1))).item()

    def step():
        for w in weights:
            w.grad = None
        stats, preacts = [], []
        a = x
        for w, b in zip(weights, biases):
            h = layer(a, w, b)
            h.retain_grad()
            preacts.append(h)
            a = torch.relu(h)
            with torch.no_grad():
                preact_mean, preact_var = moments(h)
                act_mean, act_var = moments(a)
                stats.append({"preact_mean": preact_mean, "preact_var": preact_var, "act_mean": act_mean,
                              "act_var": act_var, "dead_frac": (h <= 0).all(0).float().mean().item(),
                              "effective_rank": effective_rank(a), "input_cosine": input_cosine(a)})
        (a * g).sum().backward()
        with torch.no_grad():
            for row, h, w in zip(stats, preacts, weights):
                row["grad_var"] = h.grad.var(unbiased=False).item()
                row["weight_grad_var"] = w.grad.var(unbiased=False).item()
                row["weight_std"] = w.std(unbiased=False).item()
        return stats

    def bare():
        for w in weights:
            w.grad = None
        a = x
        for w, b in zip(weights, biases):
            a = layer(a, w, b)
        (a * g).sum().backward()

    return step, bare


def check_torch(run, torch_step):
    """Largest relative gap between torch's statistics and initcli's, per column."""
    rows = conv.run_prepared(run).layers
    stats = torch_step()
    gaps = {}
    for row, theirs in zip(rows, stats):
        for column, value in theirs.items():
            ours = getattr(row, column)
            gap = abs(ours - value) / max(abs(ours), 1e-3)
            gaps[column] = max(gaps.get(column, 0.0), gap)
    return gaps


def peak_memory(options):
    run = prepared(options)
    tracemalloc.start()
    conv.run_prepared(run)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, run.estimate


def profile_measure(options, top=15):
    run = prepared(options)
    with blas_context(run):
        stack, x, g = conv.inputs(run)
        conv.measure(stack, run.act, x, g)  # warm up
        profiler = cProfile.Profile()
        profiler.enable()
        conv.measure(stack, run.act, x, g)
        profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def describe(run):
    s = run.shape
    return f"{run.depth}×C{s.channels}×{'×'.join(map(str, s.spatial))}×k{s.kernel} {s.padding}×b{run.batch}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the 20-layer default only, one repeat, no profile")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time the one-thread rows by this process's CPU time (time.process_time), which "
                             "other processes' load does not inflate; the default-thread rows stay wall time")
    parser.add_argument("--repeats", type=int, help="interleaved runs per median (default 3; 1 with --quick)")
    parser.add_argument("--sizes", help="comma list of sizes to run (default: all): " + ", ".join(SIZES))
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    names = args.sizes.split(",") if args.sizes else (["default"] if args.quick else list(SIZES))
    sizes = {name: SIZES[name] for name in names}
    try:
        import torch
        torch_note = f"torch {torch.__version__} on {torch.get_num_threads()} threads"
    except ImportError:
        torch_note = "torch not installed"
    print(f"numpy {np.__version__}; cores {os.cpu_count()}; numpy BLAS threads {blas_threads()}; {torch_note}")
    print(f"initcli runs on one BLAS thread when one im2col chunk's product is at most "
          f"{conv.SINGLE_THREAD_WORK:,} multiply-adds (conv.work, conv.SINGLE_THREAD_WORK); the floor follows it")

    print(f"\n## float32, {SCHEME} + {ACTIVATION}, every statistic; median of {repeats} interleaved runs, seconds")
    print(f"{'depth×channels×spatial×k padding×batch':>36} {'threads':>7} {'initcli':>8} {'torch':>8} {'conv2d':>8} "
          f"{'floor':>8} {'ini/torch':>9} {'ini/conv2d':>10} {'ini/floor':>9}")

    def ratio(a, b):
        return f"{a / b:.2f}" if a and b else "n/a"

    checks = {}
    for name, options in sizes.items():
        run = prepared(options)
        torch_step, torch_bare = make_torch(run)
        if torch_step is not None:
            with one_thread():
                checks[name] = check_torch(run, torch_step)
        functions = {"initcli": make_initcli(options), "torch": torch_step, "conv2d": torch_bare,
                     "floor": make_floor(run)}
        for threads in ("1", "default"):
            clock = time.process_time if args.cpu_time and threads == "1" else time.perf_counter
            with one_thread() if threads == "1" else nullcontext():
                t = median_times(functions, repeats, clock)
            if threads == "1" and args.cpu_time:
                threads = "1 cpu"
            if threads == "default":
                threads = "1 (own)" if conv.work(run) <= conv.SINGLE_THREAD_WORK else "2"
            nan = float("nan")
            print(f"{describe(run):>36} {threads:>7} {t['initcli']:>8.3f} {t['torch'] or nan:>8.3f} "
                  f"{t['conv2d'] or nan:>8.3f} {t['floor']:>8.3f} {ratio(t['initcli'], t['torch']):>9} "
                  f"{ratio(t['initcli'], t['conv2d']):>10} {ratio(t['initcli'], t['floor']):>9}")
    print("threads 1: numpy's BLAS and torch pinned to one thread; otherwise their defaults (initcli's own")
    print("choice at that size, torch's get_num_threads()). Under load from other processes multithreaded")
    print("BLAS can slow down many-fold. 1 cpu (--cpu-time): the one-thread row timed by CPU time, which")
    print("that load does not inflate.")

    if checks:
        print("\n## torch's statistics against initcli's: largest relative gap per column (float32 both)")
        for name, gaps in checks.items():
            print(f"{name:>8}: " + ", ".join(f"{column} {gap:.1e}" for column, gap in sorted(gaps.items())))

    print("\n## peak memory (tracemalloc) against the estimate checked before the run")
    for options in sizes.values():
        with one_thread():
            peak, estimate = peak_memory(options)
        print(f"{describe(prepared(options)):>36} peak {peak / 2**20:8.1f} MiB  estimate {estimate / 2**20:8.1f} MiB  "
              f"peak/estimate {peak / estimate:.2f}")

    if not args.quick:
        print("\n## cProfile of conv.measure at the 20-layer default, top 15 by cumulative time")
        print(profile_measure(SIZES["default"]))


if __name__ == "__main__":
    main()
