"""ReActNet-A (Liu et al. 2020), the MobileNetV1-based network AdamBNN trains on ImageNet."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bnn.layers import BinaryConv2d, RPReLU, RSign
from bnn.models.cnn import ConvNet, downsample, real_stem
from bnn.models.registry import register_model

# Output channels of the stem and the 13 blocks at width 32, as in the reference code.
CHANNELS = (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)


class ReActBlock(nn.Module):
    """ReActNet's basic block: a binary 3x3 conv (stride ``s``), then a binary 1x1 conv, each with
    RSign before and a shortcut + RPReLU after.

    A 1x1 part that doubles the channels is two binary 1x1 convs ``C -> C`` whose outputs are
    concatenated, each with ``x`` as shortcut, so no real 1x1 conv is needed on the shortcut.
    """

    def __init__(
        self, in_channels: int, out_channels: int, stride: int, act_binarizer: str, weight_binarizer: str
    ):
        super().__init__()
        if out_channels not in (in_channels, 2 * in_channels):
            raise ValueError(
                f"a ReActNet block keeps or doubles channels, got {in_channels} -> {out_channels}"
            )
        c = in_channels
        self.sign1 = RSign(c, binarizer=act_binarizer)
        self.conv3x3 = BinaryConv2d(c, c, 3, stride=stride, padding=1, weight_binarizer=weight_binarizer)
        self.bn1 = nn.BatchNorm2d(c)
        self.shortcut = downsample(stride)
        self.act1 = RPReLU(c)
        self.sign2 = RSign(c, binarizer=act_binarizer)
        self.convs1x1 = nn.ModuleList(
            BinaryConv2d(c, c, 1, weight_binarizer=weight_binarizer) for _ in range(out_channels // c)
        )
        self.bns2 = nn.ModuleList(nn.BatchNorm2d(c) for _ in self.convs1x1)
        self.act2 = RPReLU(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act1(self.bn1(self.conv3x3(self.sign1(x))) + self.shortcut(x))
        s = self.sign2(x)
        out = torch.cat([bn(conv(s)) + x for conv, bn in zip(self.convs1x1, self.bns2, strict=True)], dim=1)
        return self.act2(out)


@register_model
def reactnet_a(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    width: int,
    act_binarizer: str,
    weight_binarizer: str,
) -> nn.Module:
    """ReActNet-A for 224x224 input; ``width`` is the stem's channels (32 in the paper), all channels
    scale by ``width / 32``.

    Strides follow MobileNetV1: the stem and every block that raises the channels (except to 64)
    have stride 2, 32x downsampling in all.
    """
    channels = [c * width // 32 for c in CHANNELS]
    blocks = []
    for i, (cin, cout) in enumerate(zip(channels[:-1], channels[1:], strict=True)):
        stride = 2 if cout != cin and i > 0 else 1
        blocks.append(ReActBlock(cin, cout, stride, act_binarizer, weight_binarizer))
    return ConvNet(
        real_stem(in_channels, channels[0], stride=2), nn.Sequential(*blocks), channels[-1], num_classes
    )
