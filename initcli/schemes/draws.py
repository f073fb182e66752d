"""Samplers over an explicit numpy Generator, in float32: Box–Muller normals, the location-scale
draws (normal, uniform, truncated normal) and the structured matrices (orthogonal, orthogonal
per tap, dirac, sparse) as torch.nn.init builds them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import InitcliError
from .core import TRUNCATED_NORMAL_STD, TRUNCATION_BOUND


def gaussian(rng: np.random.Generator, shape: Sequence[int], dtype=np.float32) -> np.ndarray:
    """Standard normal draws by the Box–Muller transform (Box & Muller 1958).

    Here about twice as fast as numpy's ziggurat, which costs more than a matrix product of
    the same size. The radius √(−2 ln u) comes from float64 uniforms, so the tails reach
    about 8.5σ as a normal's should; the angle, which needs no such range, from float32 ones.
    """
    shape = tuple(int(d) for d in shape)
    n = math.prod(shape)
    half = (n + 1) // 2
    radius = np.sqrt(-2.0 * np.log1p(-rng.random(half))).astype(np.float32)  # 1 − u ∈ (0, 1]
    angle = rng.random(half, dtype=np.float32)
    angle *= np.float32(2 * math.pi)
    out = np.empty(2 * half, dtype=np.float32)
    np.multiply(radius, np.cos(angle), out=out[:half])
    np.multiply(radius, np.sin(angle), out=out[half:])
    return out[:n].reshape(shape).astype(dtype, copy=False)


def _truncated_standard_normal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """N(0,1) conditioned on (-2, 2), by redrawing the ~4.6% that fall outside."""
    out = gaussian(rng, shape)
    flat = out.reshape(-1)
    outside = np.flatnonzero(np.abs(flat) >= TRUNCATION_BOUND)
    while outside.size:
        flat[outside] = gaussian(rng, (outside.size,))
        outside = outside[np.abs(flat[outside]) >= TRUNCATION_BOUND]
    return out


def draw_location_scale(shape: tuple[int, ...], rng: np.random.Generator, distribution: str, mu: float,
                         sigma: float, half: float, dtype) -> np.ndarray:
    """mu + draws of `distribution` with std sigma (the uniform's half-width `half`), in float32."""
    if distribution == "normal":
        weights = gaussian(rng, shape)
        weights *= np.float32(sigma)
    elif distribution == "uniform":
        # (2u − 1) is exact in float32 for u on the 2⁻²⁴ grid; one rounding, no overflow
        weights = rng.random(shape, dtype=np.float32)
        weights *= np.float32(2)
        weights -= np.float32(1)
        weights *= np.float32(half)
    else:
        weights = _truncated_standard_normal(shape, rng)
        weights *= np.float32(sigma / TRUNCATED_NORMAL_STD)
    if mu != 0:
        weights += np.float32(mu)
        if distribution == "uniform":  # keep rounding inside [low, high]
            np.clip(weights, np.float32(mu - half), np.float32(mu + half), out=weights)
    return weights.astype(dtype, copy=False)


def draw_orthogonal(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A (semi-)orthogonal tensor as torch.nn.init.orthogonal_ builds it: flatten to
    (rows, numel/rows), QR of a Gaussian matrix (of its transpose when rows < cols), and
    multiply Q's columns by sign(diag R) so the result is Haar-distributed (Mezzadri 2007)."""
    rows = shape[0]
    cols = math.prod(shape) // rows
    draw = gaussian(rng, (rows, cols), np.float64)
    if rows < cols:
        draw = draw.T
    q, r = np.linalg.qr(draw)
    q *= np.where(np.diag(r) < 0, -1.0, 1.0)
    if rows < cols:
        q = q.T
    return q.reshape(shape)


def draw_orthogonal_per_tap(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """An (out, in, *kernel) tensor whose every tap W[:, :, t] is an independent Haar
    (semi-)orthogonal out×in matrix (as `draw_orthogonal` draws one), all divided by √taps so that
    Σ_t W_tᵀW_t = I for out ≥ in: a C→C kernel has σ_w² = C·taps·Var(W) = 1. The conv it
    makes is not an isometry (at spatial frequency ω it is Σ_t W_t·e^{iω·t}, not orthogonal)
    but preserves the mean square, E[JᵀJ] = I. One tap (a 2-D shape) is `draw_orthogonal`'s draw."""
    rows, cols = shape[0], shape[1]
    taps = math.prod(shape[2:])
    draw = gaussian(rng, (taps, rows, cols), np.float64)
    if rows < cols:
        draw = draw.swapaxes(1, 2)
    q, r = np.linalg.qr(draw)  # one QR per tap, batched
    q *= np.where(np.diagonal(r, axis1=1, axis2=2) < 0, -1.0, 1.0)[:, None, :]  # Haar (Mezzadri 2007)
    if rows < cols:
        q = q.swapaxes(1, 2)
    q /= math.sqrt(taps)
    return np.moveaxis(q, 0, -1).reshape(shape)


def dirac_weights(shape: tuple[int, ...], groups: int, gain: float) -> np.ndarray:
    """torch.nn.init.dirac_: for each of `groups` groups of out/groups output channels, input
    channel i feeds output channel g·out/groups + i at the kernel's centre (index k // 2 of
    each kernel dimension), for i < min(out/groups, in); a 2-D shape has no kernel (eye_ per
    group, where torch only takes 3- to 5-D conv kernels)."""
    if shape[0] % groups:
        raise InitcliError("groups", f"must divide the {shape[0]} output channels of shape {shape}, got {groups}")
    per_group = shape[0] // groups
    taps = min(per_group, shape[1])
    weights = np.zeros(shape, dtype=np.float32)
    rows = (np.arange(groups)[:, None] * per_group + np.arange(taps)[None, :]).ravel()
    cols = np.tile(np.arange(taps), groups)
    weights[(rows, cols) + tuple(d // 2 for d in shape[2:])] = np.float32(gain)
    return weights


def draw_sparse(shape: tuple[int, ...], zeros: int, std: float, rng: np.random.Generator) -> np.ndarray:
    """torch.nn.init.sparse_: N(0, std²) entries, then in each column `zeros` rows, chosen
    uniformly without replacement, set to 0. 2-D only, as torch."""
    if len(shape) != 2:
        raise InitcliError("shape", f"sparse needs a 2-D (out, in) shape, as torch's sparse_, got {shape}")
    weights = gaussian(rng, shape)
    weights *= np.float32(std)
    if zeros:
        rows, cols = shape
        # the `zeros` smallest of i.i.d. uniform keys: a uniformly random subset of each column's rows
        keys = rng.random(shape, dtype=np.float32)
        chosen = keys.argsort(axis=0, kind="stable")[:zeros] if zeros < rows else np.arange(rows)[:, None]
        weights[chosen, np.arange(cols)[None, :]] = 0
    return weights
