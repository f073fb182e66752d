"""The one LayerNorm every engine uses: torch's, and exact on the symmetric rows a constant
init makes (equal units must stay equal, whatever the rounding of a sum would do)."""

import numpy as np
import pytest

from initcli.engines.shared import LAYER_NORM_EPS, layer_norm, layer_norm_backward

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("width", [3, 7, 64, 257, 1000])
@pytest.mark.parametrize("value", [0.1, 1 / 3, -2.7, 1e4])
def test_equal_units_stay_exactly_equal(dtype, width, value):
    # rows of one repeated value (what constant weights give every unit) in a batch with rows
    # that are not: the normalised rows are exact zeros, and so is the gradient of equal
    # cotangents (LN's Jacobian annihilates the all-ones direction)
    rng = np.random.default_rng(width)
    x = rng.standard_normal((4, width)).astype(dtype)
    x[1] = dtype(value)
    x[3] = dtype(-value)
    normed, inv_std = layer_norm(x)
    assert np.all(normed[[1, 3]] == 0)
    grad = np.full_like(x, dtype(0.3))
    assert np.all(layer_norm_backward(grad, normed, inv_std)[[1, 3]] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(8, 64), (2, 5, 16), (3, 4, 333)])
def test_matches_torch(dtype, shape):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 3 + 1.5).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    normed, inv_std = layer_norm(x)
    t = torch.tensor(x, requires_grad=True)
    out = torch.nn.functional.layer_norm(t, shape[-1:], eps=LAYER_NORM_EPS)
    out.backward(torch.tensor(g))
    # forward: a few roundings per entry plus the reduction over the last axis; backward adds
    # two more reductions, scaled by 1/std (≤ 1/3 here)
    eps = np.finfo(dtype).eps
    bound = 8 * (shape[-1] ** 0.5 + 4) * eps
    np.testing.assert_allclose(normed, out.detach().numpy(), rtol=0, atol=bound * 4)
    grad_in = layer_norm_backward(g, normed, inv_std)
    scale = np.abs(g).max()
    np.testing.assert_allclose(grad_in, t.grad.numpy(), rtol=0, atol=bound * 4 * scale)
