"""CIFAR-style binary ResNet-18 in the Bi-Real Net layout."""

from __future__ import annotations

from torch import nn

from bnn.models.cnn import ConvNet, binary_conv_stages, real_stem
from bnn.models.registry import register_model


@register_model
def resnet18(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    width: int,
    act_binarizer: str,
    weight_binarizer: str,
) -> nn.Module:
    """Binary ResNet-18: real 3x3 stem (stride 1, no max-pool), widths ``width * [1, 2, 4, 8]`` (64 in
    the paper).

    Bi-Real Net gives every 3x3 binary conv its own shortcut, so the [2, 2, 2, 2] basic blocks of
    two convs each are 4 single-conv blocks per level.
    """
    blocks, features = binary_conv_stages(width, (4, 4, 4, 4), act_binarizer, weight_binarizer)
    return ConvNet(real_stem(in_channels, width), blocks, features, num_classes)
