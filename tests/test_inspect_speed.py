"""inspect's fast paths stay right: orthogonality within a dtype's rounding (bf16, fp16, fp8),
the blocked subsample's inclusion probabilities, and bounded memory on big bf16 tensors."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from initcli.inspection import inspect, matching
from initcli.inspection.readers import Widened

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "e4m3": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
# (out, in): wide, tall and square; the long side ≤ 2¹² keeps fp8 e4m3's entries (~1/√L) above its
# subnormals, where its rounding error is largest
SHAPES = ((96, 512), (512, 96), (256, 256))


def _orthogonal(rng, shape, gain=1.0) -> np.ndarray:
    """Rows (or columns, on the short side) orthonormal times gain: Q of a Gaussian's QR, in float64."""
    rows, cols = shape
    q, r = np.linalg.qr(rng.standard_normal((max(shape), min(shape))))
    q *= np.sign(np.diag(r))
    return np.ascontiguousarray(gain * (q.T if rows < cols else q))


def _bf16_nearest(x: np.ndarray) -> np.ndarray:
    """float32 → bf16 codes rounded to nearest even, by bit manipulation (not through torch)."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_orthogonal_rounded_to_a_short_dtype_is_read_and_gaussian_is_not(tmp_path, dtype):
    """An orthogonal matrix rounded to bf16/fp16/fp8 reads as orthogonal (its gain named); a
    Gaussian matrix rounded alike does not (it matches a variance-scaling scheme instead)."""
    rng = np.random.default_rng(3)
    tensors, expected = {}, {}
    for i, shape in enumerate(SHAPES):
        gain, label = ((1.0, "orthogonal"), (math.sqrt(2), "orthogonal(gain=sqrt2)"))[i % 2]
        tensors[f"ortho{i}.weight"] = torch.from_numpy(_orthogonal(rng, shape, gain).astype(np.float32))
        expected[f"ortho{i}.weight"] = label
        tensors[f"gauss{i}.weight"] = torch.from_numpy((rng.standard_normal(shape) / math.sqrt(shape[1]))
                                                       .astype(np.float32))
    if dtype == "bf16":  # rounded by numpy, bits handed to safetensors as bf16
        codes = {n: torch.from_numpy(_bf16_nearest(t.numpy()).view(np.int16)).view(torch.bfloat16)
                 for n, t in tensors.items()}
    else:
        codes = {n: t.to(DTYPES[dtype]) for n, t in tensors.items()}
    path = tmp_path / f"{dtype}.safetensors"
    save_file(codes, str(path))
    by_name = {t.name: t for t in inspect(path).tensors}
    for name, label in expected.items():
        assert by_name[name].match.split("|")[0] == label, (name, by_name[name].match)
    for i in range(len(SHAPES)):
        assert "orthogonal" not in by_name[f"gauss{i}.weight"].match, by_name[f"gauss{i}.weight"].match


def test_orthogonality_tolerance_sits_between_rounding_and_gaussian():
    """The tolerance is above what rounding to each dtype does to an orthogonal matrix and at
    most half a Gaussian matrix's RMS Gram error (1/√L): measured by torch's own rounding."""
    rng = np.random.default_rng(4)
    q = _orthogonal(rng, (64, 1024))
    for dtype, eps in (("bf16", 2.0**-8), ("fp16", 2.0**-11), ("e4m3", 2.0**-3), ("e5m2", 2.0**-2)):
        rounded = torch.from_numpy(q.astype(np.float32)).to(DTYPES[dtype]).double().numpy()
        gram = rounded @ rounded.T
        error = gram / np.diag(gram).mean() - np.eye(64)
        rms = math.sqrt(float(np.mean(error**2))) * math.sqrt(1024)
        tau = min(4 * matching._rounding_rms(eps, 64, 1024), 0.5)
        assert rms < tau / 2, (dtype, rms, tau)  # twice the margin rounding needs
        assert matching.orthogonal_gain(rounded, eps) == pytest.approx(1, abs=eps)


def test_orthogonal_check_memory_is_bounded():
    """A bf16 (32, 2¹⁹) matrix with orthogonal rows: the Gram is built a chunk at a time, never
    from 32 float64 vectors of the long side (128 MiB)."""
    s, long_side = 32, 1 << 19
    width = long_side // s
    codes = np.zeros((s, long_side), np.uint16)
    # ±2⁻⁷ as bf16 codes (exact): disjoint supports of 2¹⁴, so the rows are exactly orthonormal
    signed = np.where(np.random.default_rng(5).random(long_side) < 0.5, 0xBC00, 0x3C00).astype(np.uint16)
    assert np.array_equal(_bf16_nearest(np.array([2.0**-7, -(2.0**-7)])), [0x3C00, 0xBC00])
    for i in range(s):
        codes[i, i * width:(i + 1) * width] = signed[i * width:(i + 1) * width]
    matrix = Widened(codes, "bf16")
    tracemalloc.start()
    try:
        gain = matching.orthogonal_gain(matrix, 2.0**-8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert gain == 1.0
    # a chunk of ORTHOGONAL_CHUNK float64 values, its bf16 codes and its float32 widening, twice over
    assert peak < 2 * matching.ORTHOGONAL_CHUNK * (8 + 4 + 2) + (1 << 20), peak / 2**20


def test_measure_memory_is_bounded_on_bf16():
    """measure() on a 16M-element bf16 tensor holds the subsample and its working copies and one
    pass chunk at a time, never the tensor widened (64 MiB) nor two chunks."""
    codes = np.tile(_bf16_nearest(np.random.default_rng(6).standard_normal(1 << 16) * 0.02), 256)
    tensor = Widened(codes.reshape(4096, 4096), "bf16")
    tracemalloc.start()
    try:
        stats, ks_sample = matching.measure(tensor, "big.weight")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.used == matching.SUBSAMPLE and ks_sample.size == matching.KS_SAMPLE
    # the subsample and its KS part with their sorted and masked copies, counted as float64, and one chunk
    bound = 2 * 8 * matching.SUBSAMPLE + 2 * 8 * matching.KS_SAMPLE + 6 * matching.PASS_CHUNK + (1 << 20)
    assert peak < bound, (peak / 2**20, bound / 2**20)


def test_blocked_subsample_takes_every_element_with_equal_probability(monkeypatch):
    """Contiguous blocks, one starting in each stratum: over many seeds each position is taken
    block/stratum times on average (exactly, from the strata's sizes), every stratum starts
    one block, and the same name gives the same sample."""
    monkeypatch.setattr("initcli.inspection.tensor_stats.SUBSAMPLE_BLOCKS", 16)
    n, cap, seeds, length = 170, 48, 4000, 3  # strata of 10 or 11: blocks cross into the next, or wrap
    bounds = [k * n // 16 for k in range(17)]
    stratum_of = np.repeat(np.arange(16), np.diff(bounds))
    density = 1 / np.diff(bounds)[stratum_of]  # a start's probability of being at each position
    expected = sum(np.roll(density, shift) for shift in range(length))  # starts in the `length` positions up to j
    flat = np.arange(n, dtype=np.float32)
    counts = np.zeros(n)
    for seed in range(seeds):
        taken = matching.subsample(flat, f"t{seed}", cap).astype(int)
        assert taken.size == cap
        assert np.array_equal(stratum_of[taken.reshape(16, length)[:, 0]], np.arange(16))
        np.add.at(counts, taken, 1)
    z = (counts / seeds - expected) / np.sqrt(expected * (1 - expected) / seeds)  # ≈ binomial: ≤ 1 per seed
    assert np.max(np.abs(z)) < 5.5  # max of 170 normals: beyond 5.5 with probability 7e-6
    assert np.array_equal(matching.subsample(flat, "same", cap), matching.subsample(flat, "same", cap))
