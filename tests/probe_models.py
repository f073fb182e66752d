"""Models for tests/test_probe.py, loaded by `initcli probe tests/probe_models.py:NAME`."""

from __future__ import annotations

import math

import torch
from torch import nn


def from_weights(path: str) -> nn.Sequential:
    """Linear → ReLU layers holding the weights and biases of an `initcli sample --save` file."""
    from initcli.weightfile import load_npz

    weights, biases, _ = load_npz(path)
    layers = []
    for w, b in zip(weights, biases):
        linear = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w))
            linear.bias.copy_(torch.from_numpy(b))
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers)


def mlp(width: int = 32, depth: int = 3) -> nn.Sequential:
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers)


def small_cnn(channels: int = 8) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(inplace=True),
                         nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(channels, 10))


class Block(nn.Module):
    """x + α·branch(x) with a pre-norm branch LN → ReLU → Linear: under He init the branch adds
    variance 1 whatever the stream's (LN output has unit second moment, ReLU keeps half, He
    doubles it back), so the stream's variance is 1 + l·α² after l blocks."""

    def __init__(self, width: int, alpha: float) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.LayerNorm(width, elementwise_affine=False), nn.ReLU(),
                                    nn.Linear(width, width, bias=False))
        self.stream = nn.Identity()
        self.alpha = alpha

    def forward(self, x):
        return self.stream(x + self.alpha * self.branch(x))


def residual(width: int = 128, depth: int = 16, scaled: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    alpha = 1 / math.sqrt(depth) if scaled else 1.0
    model = nn.Sequential(*[Block(width, alpha) for _ in range(depth)])
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return model


class Marked(nn.Module):
    """A branch the tree does not name: marked with `initcli_branch = True`."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)
        self.fc.initcli_branch = True

    def forward(self, x):
        return x + self.fc(x)


def tokens(vocab: int = 50, dim: int = 32):
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(vocab, dim), nn.LayerNorm(dim), nn.Linear(dim, vocab))


def with_example():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh()), torch.randn(16, 4)


def not_a_module():
    return 3


NOT_CALLABLE = 5
