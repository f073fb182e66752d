"""Benchmark of `propagate --arch transformer`: initcli against plain PyTorch and the product floor.

Run it as a plain script (it is not collected by pytest):

    python tests/benchmarks/bench_transformer.py            # both sizes, 3 repeats, profile
    python tests/benchmarks/bench_transformer.py --quick    # the default size, 1 repeat, no profile

In one process it times, interleaved and repeated, at each size (pre-LN, gelu, xavier-uniform):
  initcli  transformer.propagate() through the Python API with every statistic (no theory
           columns), float32, sampling included;
  torch    the same blocks written plainly in PyTorch (CPU, float32, default threads) on a copy
           of initcli's weights and inputs: forward, autograd backward of Σ g ⊙ y, and the same
           statistics per sublayer (moments, effective rank, input and token cosine, attention
           entropy and max, dead units, gradient and weight-gradient variances);
  floor    the bare numpy products of the same shapes, float32: per block forward the Q, K, V, O
           projections, QKᵀ, PV and the MLP's two products (8), backward dX and dW of each of the
           six linears and dP, dV, dQ, dK of the attention (16): the least any numpy
           implementation must do.
It prints medians, the ratios initcli/torch and initcli/floor, how far torch's statistics are
from initcli's (the comparison is only fair if they compute the same thing), peak memory
against `estimate_bytes`, the BLAS threads, and a cProfile of `transformer.measure`.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import math
import os
import pstats
import time
import tracemalloc
from contextlib import nullcontext

import numpy as np
from timing import median_times, one_thread  # tests/benchmarks/timing.py, beside this script

from initcli import transformer
from initcli.threads import blas_threads, blas_threads_limited

SCHEME, ACTIVATION = "xavier-uniform", "gelu"
# the defaults (depth 6, width 64, 4 heads, 16 tokens, MLP ratio 4, batch 512) and a larger,
# GPT-like shape kept to a batch whose run takes seconds on two cores (estimate ≈ 470 MiB)
SIZES = {"default": {},
         "large": {"depth": 12, "width": 256, "heads": 8, "seq_len": 64, "batch": 16}}


def forward_macs(run) -> int:
    """Multiply-adds of one forward pass: the four projections, QKᵀ and PV, the MLP's two products."""
    shape, tokens = run.shape, run.batch * run.shape.seq_len
    return run.depth * tokens * (4 * shape.width ** 2 + 2 * shape.width * shape.hidden
                                 + 2 * shape.seq_len * shape.width)


def prepared(options):
    return transformer.prepare(SCHEME, ACTIVATION, theory=False, dtype="float32", seed=0, **options)


def blas_context(run):
    """The BLAS setting initcli's run_prepared uses at this size, for the floor too."""
    return blas_threads_limited(1) if transformer.work(run) <= transformer.SINGLE_THREAD_WORK else nullcontext()


def make_initcli(options):
    return lambda: transformer.propagate(SCHEME, ACTIVATION, theory=False, dtype="float32", seed=0, **options)


# -- floor ----------------------------------------------------------------------------------


def make_floor(run):
    shape, depth, b = run.shape, run.depth, run.batch
    t, d, h, dh, hidden = shape.seq_len, shape.width, shape.heads, shape.d_head, shape.hidden
    n = b * t
    rng = np.random.default_rng(0)

    def draw(*dims):
        return rng.standard_normal(dims, dtype=np.float32)

    tokens, tokens_t = draw(n, d), draw(d, n)  # tokens_t: a (D, N) operand, as δᵀ is
    hidden_acts, hidden_t = draw(n, hidden), draw(hidden, n)
    square, w1, w2 = draw(d, d), draw(hidden, d), draw(d, hidden)
    q, k_t = draw(b, h, t, dh), draw(b, h, dh, t)
    probs, probs_t = draw(b, h, t, t), draw(b, h, t, t)

    def floor():
        with blas_context(run):
            for _ in range(depth):
                for _ in range(4):  # Q, K, V, O
                    _ = tokens @ square.T
                _ = q @ k_t  # QKᵀ
                _ = probs @ q  # PV
                if hidden:
                    _ = tokens @ w1.T
                    _ = hidden_acts @ w2.T
            for _ in range(depth):
                for _ in range(4):  # dX = δ·W and dW = δᵀ·X of Q, K, V, O
                    _ = tokens @ square
                    _ = tokens_t @ tokens
                _ = q @ k_t  # dP = dM·Vᵀ
                _ = probs_t @ q  # dV = Pᵀ·dM
                _ = probs @ q  # dQ = dS·K
                _ = probs_t @ q  # dK = dSᵀ·Q
                if hidden:
                    _ = tokens @ w2  # dA = δ·W2
                    _ = tokens_t @ hidden_acts  # dW2
                    _ = hidden_acts @ w1  # dV = δh·W1
                    _ = hidden_t @ tokens  # dW1
    return floor


# -- torch ----------------------------------------------------------------------------------


def make_torch(run):
    """The same stack in plain PyTorch on a copy of initcli's weights and inputs; None
    without torch. Returns (timed function, its statistics for the check)."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    shape = run.shape
    if shape.norm_position != "pre" or not shape.residual or shape.causal or shape.residual_scale != 1 \
            or not shape.hidden:
        raise ValueError("the torch model here is pre-LN, non-causal, with unit skips and an MLP")
    stack, x_np, g_np = transformer.inputs(run)
    blocks = [{name: torch.from_numpy(np.array(getattr(block, name))).requires_grad_(True)
               for name in ("wq", "wk", "wv", "wo", "bq", "bk", "bv", "bo", "w1", "b1", "w2", "b2")}
              for block in stack.blocks]
    x, g = torch.from_numpy(x_np.copy()), torch.from_numpy(g_np.copy())
    heads, dh, scale = shape.heads, shape.d_head, shape.scale
    rank_inputs = transformer.RANK_INPUTS

    def moments(a):
        return a.mean().item(), a.var(unbiased=False).item()

    def effective_rank(out):
        tokens = out.reshape(-1, out.shape[-1])
        tokens = tokens[::max(1, len(tokens) // rank_inputs)][:rank_inputs]
        centered = tokens - tokens.mean(0)
        gram = centered @ centered.T if centered.shape[0] <= centered.shape[1] else centered.T @ centered
        trace = torch.trace(gram)
        return (trace * trace / (gram * gram).sum()).item()

    def input_cosine(out):
        unit = F.normalize(out.reshape(out.shape[0], -1), dim=1)
        total, m = unit.sum(0), out.shape[0]
        return ((total @ total - m) / (m * (m - 1))).item()

    def token_cosine(out):
        total = F.normalize(out, dim=-1).sum(1)
        t = out.shape[1]
        return (((total * total).sum(-1) - t) / (t * (t - 1))).mean().item()

    def common(out):
        mean, var = moments(out)
        return {"act_mean": mean, "act_var": var, "effective_rank": effective_rank(out),
                "input_cosine": input_cosine(out), "token_cosine": token_cosine(out)}

    def split(z):
        b, t, _ = z.shape
        return z.view(b, t, heads, dh).transpose(1, 2)

    def step():
        for p in blocks:
            for w in p.values():
                w.grad = None
        stats, outputs = [], []
        stream = x
        for p in blocks:
            u = F.layer_norm(stream, stream.shape[-1:], eps=1e-5)
            q, k, v = (split(F.linear(u, p["w" + n], p["b" + n])) for n in "qkv")
            logits = (q @ k.transpose(-2, -1)) * scale
            probs = torch.softmax(logits, dim=-1)
            b, _, t, _ = probs.shape
            mixed = (probs @ v).transpose(1, 2).reshape(b, t, -1)
            attn = F.linear(mixed, p["wo"], p["bo"])
            mid = stream + attn
            h = F.linear(F.layer_norm(mid, mid.shape[-1:], eps=1e-5), p["w1"], p["b1"])
            mlp = F.linear(F.gelu(h), p["w2"], p["b2"])
            stream = mid + mlp
            for z in (attn, mlp, stream):
                z.retain_grad()
            outputs.append((attn, mlp, stream))
            with torch.no_grad():
                preact_mean, preact_var = moments(logits)
                entropy = -torch.special.xlogy(probs, probs).sum(-1).mean().item()
                row = {"attn": {"preact_mean": preact_mean, "preact_var": preact_var, "attn_entropy": entropy,
                                "attn_max": probs.amax(-1).mean().item(), **common(attn)}}
                # φ'(h) of the exact GELU, whose zeros make dead units
                deriv = 0.5 * (1 + torch.erf(h * 0.5 ** 0.5)) + h * torch.exp(-0.5 * h * h) * (2 * math.pi) ** -0.5
                preact_mean, preact_var = moments(h)
                row["mlp"] = {"preact_mean": preact_mean, "preact_var": preact_var, "saturated_frac": 0.0,
                              "dead_frac": (deriv == 0).all(0).all(0).float().mean().item(), **common(mlp)}
                row["stream"] = common(stream)
                if not (torch.isfinite(logits).all() and torch.isfinite(stream).all()):
                    row["overflow"] = True
                stats.append(row)
        (stream * g).sum().backward()
        with torch.no_grad():
            for p, row, (attn, mlp, out) in zip(blocks, stats, outputs):
                for name, z, weights in (("attn", attn, "qkvo"), ("mlp", mlp, "12"), ("stream", out, "")):
                    row[name]["grad_var"] = z.grad.var(unbiased=False).item()
                    if weights:
                        row[name]["weight_grad_var"] = torch.cat(
                            [p["w" + w].grad.reshape(-1) for w in weights]).var(unbiased=False).item()
                        row[name]["weight_std"] = torch.cat(
                            [p["w" + w].detach().reshape(-1) for w in weights]).std(unbiased=False).item()
        return stats

    return step


def check_torch(run, torch_step):
    """Largest relative gap between torch's statistics and initcli's, per column."""
    rows = transformer.run_prepared(run).layers
    stats = torch_step()
    gaps = {}
    for row in rows:
        theirs = stats[row.layer - 1][row.sublayer]
        for column, value in theirs.items():
            ours = getattr(row, column)
            if ours is None or value is None:
                continue
            gap = abs(ours - value) / max(abs(ours), 1e-3)
            gaps[column] = max(gaps.get(column, 0.0), gap)
    return gaps


# -- timing, memory, profile ---------------------------------------------------------------


def peak_memory(options):
    run = prepared(options)
    tracemalloc.start()
    transformer.run_prepared(run)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, run.estimate


def profile_measure(options, top=15):
    run = prepared(options)
    with blas_context(run):
        stack, x, g = transformer.inputs(run)
        transformer.measure(stack, run.act, x, g)  # warm up: the erf fits, BLAS buffers
        profiler = cProfile.Profile()
        profiler.enable()
        transformer.measure(stack, run.act, x, g)
        profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def describe(run):
    s = run.shape
    return f"{run.depth}×{s.width}/{s.heads}h×T{s.seq_len}×r{s.mlp_ratio:g}×b{run.batch}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the default size only, one repeat, no profile")
    parser.add_argument("--profile-threads", choices=("1", "default"), default="1",
                        help="BLAS threads for the profile (default 1: the profile then shows work, not waiting)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time the one-thread rows by this process's CPU time (time.process_time), which "
                             "other processes' load does not inflate; the default-thread rows stay wall time")
    parser.add_argument("--repeats", type=int, help="interleaved runs per median (default 3; 1 with --quick)")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 3)
    sizes = {"default": SIZES["default"]} if args.quick else SIZES
    try:
        import torch
        torch_note = f"torch {torch.__version__} on {torch.get_num_threads()} threads"
    except ImportError:
        torch_note = "torch not installed"
    print(f"numpy {np.__version__}; cores {os.cpu_count()}; numpy BLAS threads {blas_threads()}; {torch_note}")
    print(f"initcli runs on one BLAS thread when its largest product is at most {transformer.SINGLE_THREAD_WORK:,} "
          f"multiply-adds (transformer.SINGLE_THREAD_WORK); the floor follows the same setting")

    print(f"\n## float32, pre-LN, {SCHEME} + {ACTIVATION}, every statistic; median of {repeats} interleaved runs, "
          f"seconds")
    print(f"{'depth×width/heads×T×ratio×batch':>34} {'MACs':>8} {'threads':>7} {'initcli':>8} {'torch':>8} "
          f"{'floor':>8} {'ini/torch':>9} {'ini/floor':>9} {'torch/floor':>11}")

    def ratio(a, b):
        return f"{a / b:.2f}" if a and b else "n/a"

    checks = {}
    for name, options in sizes.items():
        run = prepared(options)
        torch_step = make_torch(run)
        if torch_step is not None:
            with one_thread():
                checks[name] = check_torch(run, torch_step)
        functions = {"initcli": make_initcli(options), "torch": torch_step, "floor": make_floor(run)}
        for threads in ("1", "default"):
            clock = time.process_time if args.cpu_time and threads == "1" else time.perf_counter
            with one_thread() if threads == "1" else nullcontext():
                t = median_times(functions, repeats, clock)
            if threads == "1" and args.cpu_time:
                threads = "1 cpu"
            if threads == "default":
                threads = "1 (own)" if transformer.work(run) <= transformer.SINGLE_THREAD_WORK else "2"
            nan = float("nan")
            print(f"{describe(run):>34} {forward_macs(run) * 3:>8.1e} {threads:>7} {t['initcli']:>8.3f} "
                  f"{t['torch'] or nan:>8.3f} {t['floor']:>8.3f} {ratio(t['initcli'], t['torch']):>9} "
                  f"{ratio(t['initcli'], t['floor']):>9} {ratio(t['torch'], t['floor']):>11}")
    print("MACs: forward multiply-adds × 3 for forward and backward. threads 1: numpy's BLAS")
    print("and torch pinned to one thread; 2: their defaults (initcli's own choice at that size, torch's")
    print("get_num_threads()). Under load from other processes multithreaded BLAS can slow down many-fold.")
    print("1 cpu (--cpu-time): the one-thread row timed by CPU time, which that load does not inflate.")

    if checks:
        print("\n## torch's statistics against initcli's: largest relative gap per column (float32 both)")
        for name, gaps in checks.items():
            print(f"{name:>8}: " + ", ".join(f"{column} {gap:.1e}" for column, gap in sorted(gaps.items())))

    print("\n## peak memory (tracemalloc) against the estimate checked before the run")
    for options in sizes.values():
        with one_thread():  # the memory does not depend on it; the time does
            peak, estimate = peak_memory(options)
        print(f"{describe(prepared(options)):>34} peak {peak / 2**20:8.1f} MiB  estimate {estimate / 2**20:8.1f} MiB  "
              f"peak/estimate {peak / estimate:.2f}")

    if not args.quick:
        print(f"\n## cProfile of transformer.measure at the default size, BLAS threads {args.profile_threads}, "
              f"top 15 by cumulative time")
        with one_thread() if args.profile_threads == "1" else nullcontext():
            print(profile_measure(SIZES["default"]))


if __name__ == "__main__":
    main()
