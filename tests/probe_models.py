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


# -- architectures as their libraries build them -------------------------------------------------
# Plain-torch copies of torchvision's ResNet and VisionTransformer at small sizes (torchvision
# cannot be installed here), with the inits their documentation and source state: ResNet's
# convs kaiming_normal_(fan_out, relu), BatchNorm weight 1 and bias 0, the fc torch's default;
# ViT's patch conv truncated normal std √(1/fan_in), class token 0, position embedding
# N(0, 0.02²), MLP weights xavier_uniform_ and biases N(0, 1e-6²), the head all zero.


class BasicBlock(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class _ResNetTrunk(nn.Module):
    """What torchvision's ResNets share: the stem, layer1…layer4, pool and fc in one forward,
    and the init (convs kaiming_normal_(fan_out, relu), BatchNorm weight 1 and bias 0)."""

    def init_as_torchvision(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ResNet(_ResNetTrunk):
    """torchvision's resnet18 layout (stem, layer1…layer4 of two BasicBlocks, pool, fc)."""

    def __init__(self, widths=(8, 16, 32, 64), blocks: int = 2, classes: int = 10, norm: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = widths[0]
        for i, planes in enumerate(widths, start=1):
            stage = [BasicBlock(inplanes, planes, 1 if i == 1 else 2)] + [BasicBlock(planes, planes)
                                                                           for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*stage))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], classes)
        self.init_as_torchvision()


def resnet(scale: float = 1.0):
    model = ResNet()
    _scale_weights(model, scale)
    return model


class MLPBlock(nn.Sequential):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.1), nn.Linear(hidden, dim), nn.Dropout(0.1))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.normal_(m.bias, std=1e-6)


class EncoderBlock(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, dropout=0.1, batch_first=True)
        self.dropout = nn.Dropout(0.1)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, hidden)

    def forward(self, x):
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + self.dropout(y)
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    def __init__(self, tokens: int, dim: int, depth: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, tokens, dim).normal_(std=0.02))
        self.dropout = nn.Dropout(0.1)
        from collections import OrderedDict

        self.layers = nn.Sequential(OrderedDict((f"encoder_layer_{i}", EncoderBlock(dim, heads, hidden))
                                                for i in range(depth)))
        self.ln = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))


class VisionTransformer(nn.Module):
    """torchvision's VisionTransformer layout: conv_proj patches, a class token, encoder blocks,
    the class token's features into a zero-initialised head."""

    def __init__(self, image: int = 16, patch: int = 4, dim: int = 32, depth: int = 4, heads: int = 2,
                 hidden: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.patch, self.dim = patch, dim
        self.conv_proj = nn.Conv2d(3, dim, patch, patch)
        fan_in = 3 * patch * patch
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder = Encoder((image // patch) ** 2 + 1, dim, depth, heads, hidden)
        self.heads = nn.Sequential()
        self.heads.add_module("head", nn.Linear(dim, classes))
        nn.init.zeros_(self.heads.head.weight)
        nn.init.zeros_(self.heads.head.bias)

    def forward(self, x):
        x = self.conv_proj(x).flatten(2).permute(0, 2, 1)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.heads(self.encoder(x)[:, 0])


def vit(scale: float = 1.0):
    model = VisionTransformer()
    _scale_weights(model, scale)
    return model


def deep_relu(width: int = 64, depth: int = 16, init: str = "xavier", scale: float = 1.0) -> nn.Sequential:
    """Linear → ReLU × depth, no norm: xavier_normal_ (Var 1/n, half of what ReLU needs) or
    kaiming_normal_ (Var 2/n, He et al. 2015)."""
    layers = []
    for _ in range(depth):
        linear = nn.Linear(width, width)
        if init == "xavier":
            nn.init.xavier_normal_(linear.weight)
        else:
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        nn.init.zeros_(linear.bias)
        layers += [linear, nn.ReLU()]
    model = nn.Sequential(*layers)
    _scale_weights(model, scale)
    return model


def _scale_weights(model: nn.Module, scale: float) -> None:
    """Every weight matrix or kernel × scale (the broken variants)."""
    if scale == 1.0:
        return
    with torch.no_grad():
        for module in model.modules():
            for name, param in module.named_parameters(recurse=False):
                if param.ndim >= 2 and ("weight" in name) and "Norm" not in type(module).__name__:
                    param.mul_(scale)


class Counting(nn.Module):
    """A forward that replaces a buffer (`self.calls = self.calls + 1`) and bumps another in place."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.register_buffer("calls", torch.zeros(()))
        self.register_buffer("seen", torch.zeros(4))

    def forward(self, x):
        self.calls = self.calls + 1
        self.seen.add_(x.detach().mean(0))
        return self.fc(x)


def counting():
    return Counting()


def on_meta():
    with torch.device("meta"):
        return nn.Sequential(nn.Linear(4, 4), nn.ReLU())


def empty_example():
    return nn.Sequential(nn.Linear(4, 4)), torch.zeros(0, 4)


def unseeded(width: int = 16) -> nn.Sequential:
    """Draws from torch's global generator without seeding it, as most model builders do."""
    return nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))


class DictOutput(nn.Module):
    """Returns {"features": …, "logits": …} in that order: probe must take the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.classifier = nn.Linear(16, 3)

    def forward(self, x):
        features = self.body(x)
        return {"features": features, "logits": self.classifier(features)}


def dict_output():
    return DictOutput()


def bad_example():
    """An example input of 5 features for a model taking 4."""
    return nn.Sequential(nn.Linear(4, 8)), torch.randn(3, 5)


# -- models for coordcheck --module (tests/test_coordcheck.py) ------------------------------------


class ResidualBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)
        nn.init.kaiming_normal_(self.fc.weight, nonlinearity="relu")
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):
        return x + torch.relu(self.fc(x)) / math.sqrt(2)


def residual_blocks(width: int, depth: int = 3) -> nn.Sequential:
    """Linear(2, width), `depth` blocks x + ReLU(fc(x))/√2 (modules 1…depth), Linear(width, 1)."""
    return nn.Sequential(nn.Linear(2, width), *[ResidualBlock(width) for _ in range(depth)], nn.Linear(width, 1))


class InfShape:
    """The three questions mup's optimizers ask of the `infshape` that mup's set_base_shapes
    attaches to every parameter: how many dimensions grow with width (`ninf`), the width
    multiplier (`width_mult`: the fan-in's for a matrix), and fan-in over fan-out multiplier."""

    def __init__(self, infinite: int, width_mult: float) -> None:
        self.infinite, self.mult = infinite, width_mult

    def ninf(self) -> int:
        return self.infinite

    def width_mult(self) -> float:
        return self.mult

    def fanin_fanout_mult_ratio(self) -> float:
        return 1.0  # hidden matrices: both fans grow alike


def mup_shaped(width: int, depth: int = 2, base_width: int = 64):
    """coordcheck_models.MupMLP without its initcli_param_groups, its parameters carrying mup's
    infshape as set_base_shapes would set it (base width `base_width`): hidden matrices have two
    infinite dimensions, input weights, biases and the readout's weight one, the readout's bias
    none."""
    from coordcheck_models import MupMLP

    class MupShaped(MupMLP):
        initcli_param_groups = None

    model = MupShaped(width, depth, base_width=base_width)
    mult = width / base_width
    hidden = {id(m.weight) for m in list(model.body)[2::2]}
    for name, param in model.named_parameters():
        infinite = 2 if id(param) in hidden else 0 if name == "readout.bias" else 1
        param.infshape = InfShape(infinite, mult)
    return model


class Permute(nn.Module):
    """torchvision.ops.misc.Permute."""

    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return torch.permute(x, self.dims)


class CNBlock(nn.Module):
    """torchvision's ConvNeXt block: depthwise 7×7 conv, then channels last for LayerNorm and
    the MLP, a layer scale of 1e-6, and the residual sum; Linear and conv weights
    trunc_normal_(std 0.02), biases 0, as torchvision's ConvNeXt initialises them."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(dim, dim, 7, padding=3, groups=dim), Permute([0, 2, 3, 1]),
                                   nn.LayerNorm(dim, eps=1e-6), nn.Linear(dim, 4 * dim), nn.GELU(),
                                   nn.Linear(4 * dim, dim), Permute([0, 3, 1, 2]))
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 1e-6))

    def forward(self, x):
        return x + self.layer_scale * self.block(x)


def convnext(dim: int = 16, blocks: int = 3) -> nn.Module:
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Conv2d(3, dim, 4, 4), nn.Sequential(*[CNBlock(dim)
                                                                                         for _ in range(blocks)])))
    model.add_module("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(dim),
                                           nn.Linear(dim, 10)))
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
    return model


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (ResNet v1.5: the stride on the 3×3 conv): 1×1 → 3×3 → 1×1 to
    planes × 4 channels, a BatchNorm after each, the sum with the (downsampled) input, ReLU."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class BottleneckResNet(_ResNetTrunk):
    """torchvision's resnet50 layout: stem (7×7 stride-2 conv, BN, ReLU, 3×3 stride-2 max pool),
    layer1…layer4 of Bottlenecks (3, 4, 6, 3; the first block of layers 2–4 strides 2), pool,
    fc; convs kaiming_normal_(fan_out, relu), BatchNorm weight 1 and bias 0, zero_init_residual
    False, the fc torch's default. `planes` are torchvision's 64…512 (outputs ×4: 256…2048)."""

    def __init__(self, planes=(64, 128, 256, 512), blocks=(3, 4, 6, 3), classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, planes[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = planes[0]
        for i, (width, count) in enumerate(zip(planes, blocks), start=1):
            stage = [Bottleneck(inplanes, width, 1 if i == 1 else 2)]
            inplanes = width * Bottleneck.expansion
            stage += [Bottleneck(inplanes, width) for _ in range(count - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, classes)
        self.init_as_torchvision()


def resnet50(scale: float = 1.0, planes=(64, 128, 256, 512)):
    model = BottleneckResNet(planes)
    _scale_weights(model, scale)
    return model
