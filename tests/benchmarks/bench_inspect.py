"""Benchmark of `inspect` against the raw loaders (not collected by pytest).

    python tests/benchmarks/bench_inspect.py                      # 1 GiB safetensors, 256 MiB .pt and bf16
    python tests/benchmarks/bench_inspect.py --gib 0.25 --pt-mib 64 --repeats 1   # quicker
    python tests/benchmarks/bench_inspect.py --cpu-time           # on a loaded machine: CPU seconds

Writes, in a temporary folder removed afterwards, float32 matrices shaped like a transformer's (an
embedding, then per block a 4·d×d up projection and a d×4·d down projection, d = 1024) drawn
N(0, 0.02) and N(0, 0.02/√(2·n_layer)):
- as one .safetensors file of --gib GiB: `inspect` against `safetensors.numpy.load_file`
  (goal: at most 2× its time);
- as a torch.save state_dict of --pt-mib MiB: `inspect` against
  `torch.load(weights_only=True)` (goal: at most 3×);
- as bf16 in a .safetensors file of --pt-mib MiB: `inspect`'s peak memory, which must stay
  near the file's size (the file's pages are mapped; bf16 is widened a chunk at a time).
Times are medians over --repeats rounds, the contenders interleaved in each round, the file
in the page cache (it was just written); wall time, or this process's CPU time with --cpu-time
(which other processes' load inflates far less; it sums every thread of the process). Peak
memory is measured in a fresh process that only inspects: VmHWM (resident peak, mapped file
pages included) above its resident size before.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import median_times  # noqa: E402


def layout(total_bytes: float, d: int = 1024, itemsize: int = 4):
    """(n_layer, {name: (shape, std)}) of a GPT-2-like model of about `total_bytes`."""
    per_block = 2 * 4 * d * d * itemsize
    embedding = 8192 * d * itemsize
    n_layer = max(1, int((total_bytes - embedding) // per_block))
    tensors = {"wte.weight": ((8192, d), 0.02)}
    for i in range(n_layer):
        tensors[f"h.{i}.mlp.c_fc.weight"] = ((4 * d, d), 0.02)
        tensors[f"h.{i}.mlp.c_proj.weight"] = ((d, 4 * d), 0.02 / math.sqrt(2 * n_layer))
    return n_layer, tensors


def draws(tensors: dict):
    rng = np.random.default_rng(0)
    for name, (shape, std) in tensors.items():
        yield name, rng.standard_normal(shape, dtype=np.float32) * np.float32(std)


def write_safetensors(path: Path, tensors: dict, bf16: bool = False) -> None:
    """Written tensor by tensor (the header first), never holding the whole model."""
    header, offset = {}, 0
    for name, (shape, _) in tensors.items():
        nbytes = math.prod(shape) * (2 if bf16 else 4)
        header[name] = {"dtype": "BF16" if bf16 else "F32", "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)  # padded as safetensors' own writer does: every tensor 8-byte aligned
    with open(path, "wb") as handle:
        handle.write(len(text).to_bytes(8, "little") + text)
        for _, array in draws(tensors):
            handle.write(((array.view(np.uint32) >> 16).astype("<u2") if bf16 else array).tobytes())


def peak_of_inspecting(path: Path) -> float:
    """MiB a fresh process's resident peak grows by while it inspects `path`."""
    script = """
import sys
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
from initcli.inspection import inspect
import initcli.inspection.readers
if sys.argv[1].endswith('.pt'):
    import torch  # its libraries' pages are not inspect's memory
base = status('VmRSS:')
inspect(sys.argv[1])
print((status('VmHWM:') - base) / 2**20)
"""
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True,
                          env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
    return float(done.stdout.split()[-1])


def report(label: str, times: dict, reference: str, goal: float, size: int) -> None:
    ratio = times["inspect"] / times[reference]
    print(f"{label}: inspect {times['inspect']:.2f} s, {reference} {times[reference]:.2f} s: "
          f"{ratio:.2f}× (goal ≤ {goal:g}×) · {size / 2**30 / times['inspect']:.2f} GiB/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=float, default=1.0, help="size of the .safetensors file")
    parser.add_argument("--pt-mib", type=float, default=256, help="size of the .pt and of the bf16 file")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-time", action="store_true", help="time CPU seconds (time.process_time), not wall")
    args = parser.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    print(f"timing {'CPU' if args.cpu_time else 'wall'} seconds; load average {os.getloadavg()[0]:.2f}")
    from safetensors.numpy import load_file

    from initcli.inspection import inspect

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.safetensors"
        started = time.perf_counter()
        n_layer, tensors = layout(args.gib * 2**30)
        write_safetensors(path, tensors)
        size = path.stat().st_size
        print(f"wrote {size / 2**30:.2f} GiB ({len(tensors)} float32 tensors) in {time.perf_counter() - started:.1f} s")
        result = inspect(path)
        named = sum(t.match.split("|")[0] == "normal(std=0.02)" or f"gpt2-residual(n_layer={n_layer})" in t.match
                    for t in result.tensors)
        print(f"{named}/{len(result.tensors)} tensors named as drawn")
        times = median_times({"inspect": lambda: inspect(path), "load_file": lambda: load_file(str(path))},
                             args.repeats, clock)
        report("safetensors", times, "load_file", 2, size)
        print(f"  peak memory inspecting it: +{peak_of_inspecting(path):.0f} MiB (file {size / 2**20:.0f} MiB)")
        path.unlink()

        try:
            import torch
        except ImportError:
            torch = None
        if torch is not None:
            pt = Path(folder) / "model.pt"
            _, small = layout(args.pt_mib * 2**20)
            torch.save({name: torch.from_numpy(array) for name, array in draws(small)}, pt)
            size = pt.stat().st_size
            times = median_times({"inspect": lambda: inspect(pt),
                                  "torch.load": lambda: torch.load(pt, map_location="cpu", weights_only=True)},
                                 args.repeats, clock)
            report(f".pt ({size / 2**20:.0f} MiB, {len(small)} tensors)", times, "torch.load", 3, size)
            print(f"  peak memory inspecting it: +{peak_of_inspecting(pt):.0f} MiB (file {size / 2**20:.0f} MiB)")
            pt.unlink()

        bf16 = Path(folder) / "bf16.safetensors"
        _, small = layout(args.pt_mib * 2**20, itemsize=2)
        write_safetensors(bf16, small, bf16=True)
        size = bf16.stat().st_size
        started = clock()
        inspect(bf16)
        print(f"bf16 ({size / 2**20:.0f} MiB, {len(small)} tensors): inspect {clock() - started:.2f} s, "
              f"peak memory +{peak_of_inspecting(bf16):.0f} MiB (as float32 it would be {2 * size / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
