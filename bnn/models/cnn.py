"""Small binary CNN, plus the conv building blocks shared with :mod:`bnn.models.resnet`."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from bnn.layers import BinaryConv2d, RPReLU, RSign
from bnn.models.registry import register_model


def real_stem(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """The real first layer: conv3x3 + BN (no activation, as in ReActNet and Bi-Real Net)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
    )


def downsample(stride: int) -> nn.Module:
    """AvgPool2d(2) for stride 2; ``ceil_mode`` matches a stride-2 padded 3x3 conv on odd sizes (7 -> 4)."""
    return nn.AvgPool2d(2, ceil_mode=True) if stride == 2 else nn.Identity()


def shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Bi-Real Net shortcut: identity, or AvgPool2d(2) and/or a real 1x1 conv + BN."""
    layers = [] if stride == 1 else [downsample(stride)]
    if in_channels != out_channels:
        layers += [nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
    return nn.Sequential(*layers) if layers else nn.Identity()


class BinaryConvBlock(nn.Module):
    """``x -> RPReLU(BN(BinaryConv3x3(RSign(x))) + shortcut(x))``: one binary conv with its own shortcut."""

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, act_binarizer: str, weight_binarizer: str
    ):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.sign = RSign(in_channels, binarizer=act_binarizer)
        self.conv = BinaryConv2d(
            in_channels, out_channels, 3, stride=stride, padding=1, weight_binarizer=weight_binarizer
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.shortcut = shortcut(in_channels, out_channels, stride)
        self.act = RPReLU(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(self.sign(x))) + self.shortcut(x))


def binary_conv_stages(
    width: int, stages: Sequence[int], act_binarizer: str, weight_binarizer: str
) -> tuple[nn.Sequential, int]:
    """``stages[i]`` blocks at ``width * 2**i`` channels; each level after the first opens with stride 2.

    Returns the blocks and their output channels.
    """
    if not stages or any(n < 1 for n in stages):
        raise ValueError(f"stages must be a non-empty sequence of positive block counts, got {stages!r}")
    blocks, channels = [], width
    for level, count in enumerate(stages):
        out = width * 2**level
        for i in range(count):
            stride = 2 if level > 0 and i == 0 else 1
            blocks.append(BinaryConvBlock(channels, out, stride, act_binarizer, weight_binarizer))
            channels = out
    return nn.Sequential(*blocks), channels


class ConvNet(nn.Module):
    """Real stem -> binary blocks -> global average pool -> real classifier."""

    def __init__(self, stem: nn.Module, blocks: nn.Module, features: int, num_classes: int):
        super().__init__()
        self.stem = stem
        self.blocks = blocks
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.blocks(self.stem(x))).flatten(1))


@register_model
def cnn(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    width: int,
    act_binarizer: str,
    weight_binarizer: str,
    stages: Sequence[int] = (2, 2, 2),
) -> nn.Module:
    """Small binary CNN (digits 8x8, MNIST 28x28, CIFAR 32x32); ``stages`` = blocks per width level.

    The default gives widths ``[w, w, 2w, 2w, 4w, 4w]`` with stride 2 at the 3rd and 5th block.
    """
    blocks, features = binary_conv_stages(width, tuple(stages), act_binarizer, weight_binarizer)
    return ConvNet(real_stem(in_channels, width), blocks, features, num_classes)
