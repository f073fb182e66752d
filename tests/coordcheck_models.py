"""Models for tests/test_coordcheck.py, loaded by
`initcli coordcheck --module tests/coordcheck_models.py:NAME --width-arg width`.

`mlp` is the standard parametrization: He-normal weights (torch's kaiming_normal_, fan_in),
zero biases, one learning rate. `MupMLP` is µP in mup's package form (Yang et al. 2022, §4
and Table 8; mup's MuReadout and MuAdam) relative to a base width n0, m = width/n0: the
readout's output multiplied by 1/m and its weights initialised at zero, and through
`initcli_param_groups` Adam's learning rate divided by m for the hidden (width × width)
weights only — input weights, biases and the readout keep the base rate. At width n0 it is
the SP model (with a zero readout).
"""

from __future__ import annotations

from torch import nn


def _layers(width: int, depth: int, inputs: int) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Linear(inputs, width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    for module in layers:
        if isinstance(module, nn.Linear):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            nn.init.zeros_(module.bias)
    return layers


def mlp(width: int, depth: int = 2, inputs: int = 2, outputs: int = 1) -> nn.Sequential:
    """SP: Linear(inputs, width) → ReLU → (Linear(width, width) → ReLU) × (depth − 1) → Linear(width,
    outputs), every Linear He-normal: modules 0 (input layer), 2 (hidden), 4 (readout) at depth 2."""
    readout = nn.Linear(width, outputs)
    nn.init.kaiming_normal_(readout.weight, nonlinearity="linear")
    nn.init.zeros_(readout.bias)
    return nn.Sequential(*_layers(width, depth, inputs), readout)


class MupReadout(nn.Linear):
    """mup's MuReadout: the Linear applied to x/m, weights initialised at zero."""

    def __init__(self, width: int, outputs: int, multiplier: float) -> None:
        super().__init__(width, outputs)
        self.multiplier = multiplier
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x):
        return super().forward(x * self.multiplier)


class MupMLP(nn.Module):
    def __init__(self, width: int, depth: int = 2, inputs: int = 2, outputs: int = 1, base_width: int = 64) -> None:
        super().__init__()
        self.width_mult = width / base_width
        self.body = nn.Sequential(*_layers(width, depth, inputs))
        self.readout = MupReadout(width, outputs, 1 / self.width_mult)

    def forward(self, x):
        return self.readout(self.body(x))

    def initcli_param_groups(self, optimizer: str, lr: float) -> list[dict]:
        if optimizer != "adam":
            raise ValueError("this test model states µP's Adam rates only")
        # mup's MuAdam: parameters with two infinite dimensions (hidden weights) take lr/m
        hidden = [m.weight for m in list(self.body)[2::2]]
        kept = {id(p) for p in hidden}
        return [{"params": hidden, "lr": lr / self.width_mult},
                {"params": [p for p in self.parameters() if id(p) not in kept], "lr": lr}]


def mup_mlp(width: int, depth: int = 2, inputs: int = 2, outputs: int = 1, base_width: int = 64) -> MupMLP:
    return MupMLP(width, depth, inputs, outputs, base_width)


def with_example(width: int):
    """(model, example input): 16 inputs of 4 features, drawn after the point's torch seed."""
    import torch

    return nn.Sequential(nn.Linear(4, width), nn.Tanh(), nn.Linear(width, 3)), torch.randn(16, 4)


def no_width(depth: int = 2) -> nn.Sequential:
    return nn.Sequential(*_layers(8, depth, 2))


def not_a_module(width: int):
    return width


def frozen(width: int) -> nn.Sequential:
    model = nn.Sequential(nn.Linear(2, width), nn.ReLU(), nn.Linear(width, 1))
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def builtin(width: int, depth: int = 2, seed: int = 0, dtype: str = "float64") -> nn.Sequential:
    """The built-in coordcheck network under SP (he-normal, relu, zero biases) as torch modules:
    `initcli.engine.build_stack` draws the same weights for the same seed and sizes."""
    import torch

    from initcli.engine import build_stack
    from initcli.schemes import make_init

    stack = build_stack(make_init("he-normal", activation="relu"), [2, *[width] * depth, 1], seed=seed, dtype=dtype)
    layers: list[nn.Module] = []
    for w, b in zip(stack.weights, stack.biases):
        linear = nn.Linear(w.shape[1], w.shape[0], dtype=getattr(torch, dtype))
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(w))
            linear.bias.copy_(torch.from_numpy(b))
        layers += [linear, nn.ReLU()]
    return nn.Sequential(*layers[:-1])
