"""Benchmark of `inspect` on a 1 GiB .safetensors file (not collected by pytest).

    python tests/benchmarks/bench_inspect.py            # 1 GiB, a GPT-2-like layout
    python tests/benchmarks/bench_inspect.py --gib 0.25 # smaller

Writes, in a temporary folder removed afterwards, a safetensors file of float32 matrices shaped
like a transformer's (an embedding, then per block a 4·d×d up projection and a d×4·d down
projection, d = 1024) drawn N(0, 0.02) and N(0, 0.02/√(2·n_layer)), then times
`initcli.inspection.inspect` on it twice: cold-ish (just written, so mostly in the page
cache) and again, and reports the peak resident memory, which must stay far below the
file's size (tensors are memory-mapped and read one at a time).
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build(path: Path, gib: float, d: int = 1024) -> tuple[int, int]:
    """Write the file; returns (n_layer, bytes)."""
    from safetensors.numpy import save_file

    per_block = 2 * 4 * d * d * 4  # two matrices of 4·d² float32
    embedding = 8192 * d * 4
    n_layer = max(1, int((gib * 2**30 - embedding) // per_block))
    rng = np.random.default_rng(0)
    arrays = {"wte.weight": rng.standard_normal((8192, d), dtype=np.float32) * np.float32(0.02)}
    residual = np.float32(0.02 / math.sqrt(2 * n_layer))
    for i in range(n_layer):
        arrays[f"h.{i}.mlp.c_fc.weight"] = rng.standard_normal((4 * d, d), dtype=np.float32) * np.float32(0.02)
        arrays[f"h.{i}.mlp.c_proj.weight"] = rng.standard_normal((d, 4 * d), dtype=np.float32) * residual
    save_file(arrays, str(path))
    return n_layer, path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=1.0)
    args = parser.parse_args()
    from initcli.inspection import inspect

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        started = time.perf_counter()
        n_layer, size = build(path, args.gib)
        print(f"wrote {size / 2**30:.2f} GiB ({2 * n_layer + 1} tensors) in {time.perf_counter() - started:.1f} s")
        for attempt in (1, 2):
            started = time.perf_counter()
            result = inspect(path)
            elapsed = time.perf_counter() - started
            print(f"inspect run {attempt}: {elapsed:.2f} s ({size / 2**30 / elapsed:.2f} GiB/s)")
        named = sum(t.match.split("|")[0] == "normal(std=0.02)" or f"gpt2-residual(n_layer={n_layer})" in t.match
                    for t in result.tensors)
        print(f"{named}/{len(result.tensors)} tensors named as drawn")
        for line in result.summary.lines[:2]:
            print(line)
        # peak memory of a fresh process that only inspects (this one held the arrays it wrote):
        # the heap (tracemalloc sees numpy's buffers) and the RSS, which also counts the file's
        # memory-mapped pages once read (page cache, given back under pressure)
        probe = ("import resource, sys, tracemalloc; from initcli.inspection import inspect; tracemalloc.start(); "
                 "inspect(sys.argv[1]); print(tracemalloc.get_traced_memory()[1], "
                 "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
        heap, rss_kib = map(int, subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True,
                                                text=True, check=True).stdout.split()[-2:])
        print(f"a process inspecting it: heap peak {heap / 2**20:.0f} MiB, RSS peak {rss_kib / 2**10:.0f} MiB "
              f"(mapped file pages included; file {size / 2**20:.0f} MiB)")

if __name__ == "__main__":
    main()
