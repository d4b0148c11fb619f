"""Binary MLP: a real input layer, residual binary blocks, a real classifier."""

from __future__ import annotations

from torch import Tensor, nn

from bnn.layers import BinaryLinear, RPReLU, RSign
from bnn.models.registry import register_model


class BinaryLinearBlock(nn.Module):
    """``x -> RPReLU(BN(BinaryLinear(RSign(x))) + x)``: the 1-D analogue of a ReActNet block."""

    def __init__(self, width: int, act_binarizer: str, weight_binarizer: str):
        super().__init__()
        self.sign = RSign(width, binarizer=act_binarizer)
        self.linear = BinaryLinear(width, width, weight_binarizer=weight_binarizer)
        self.bn = nn.BatchNorm1d(width)
        self.act = RPReLU(width)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.linear(self.sign(x))) + x)


class BinaryMLP(nn.Module):
    def __init__(
        self,
        in_features: int,
        num_classes: int,
        width: int,
        depth: int,
        act_binarizer: str,
        weight_binarizer: str,
    ):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, width, bias=False), nn.BatchNorm1d(width)
        )
        self.blocks = nn.Sequential(
            *(BinaryLinearBlock(width, act_binarizer, weight_binarizer) for _ in range(depth))
        )
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.blocks(self.stem(x)))


@register_model
def mlp(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    width: int,
    act_binarizer: str,
    weight_binarizer: str,
    depth: int = 2,
) -> nn.Module:
    """Binary MLP on flattened ``in_channels x image_size x image_size`` images; ``depth`` binary blocks."""
    if depth < 1:
        raise ValueError(f"mlp needs depth >= 1 (binary blocks), got {depth}")
    return BinaryMLP(in_channels * image_size**2, num_classes, width, depth, act_binarizer, weight_binarizer)
