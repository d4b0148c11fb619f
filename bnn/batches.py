"""Batch iteration over in-memory uint8 images, with vectorised train-time augmentation.

Augmentation runs on the uint8 batch before normalisation, so crop padding is black (pixel 0), as
with torchvision's ``RandomCrop`` followed by ``Normalize``. Random draws are made on the
generator's device (CPU by default) and then moved, so a seeded generator gives the same batches
whatever ``device`` is.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bnn.data import ImageData


def normalize(images: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 ``(N, C, H, W)`` to float32 ``(x / 255 - mean) / std`` with per-channel ``mean``/``std``."""
    scale = (1.0 / (255.0 * std)).to(images.device, torch.float32).view(1, -1, 1, 1)
    shift = (mean / std).to(images.device, torch.float32).view(1, -1, 1, 1)
    return images.to(torch.float32).mul_(scale).sub_(shift)


def _draw_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def random_crop(x: Tensor, padding: int, generator: torch.Generator | None = None) -> Tensor:
    """Zero-pad by ``padding`` and crop each sample back to ``(H, W)`` at its own random offset."""
    if padding == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    device = _draw_device(generator)
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device).to(x.device)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=device).to(x.device)
    rows = (top[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (left[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    return padded[batch, channels, rows, cols]


def random_hflip(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Mirror each sample left-right with probability 0.5 (sample ``i`` flips iff ``rand()[i] < 0.5``)."""
    flip = torch.rand(x.shape[0], generator=generator, device=_draw_device(generator)) < 0.5
    return torch.where(flip.to(x.device)[:, None, None, None], x.flip(-1), x)


@dataclass
class Augment:
    """Train-time augmentation: random crop with ``crop_padding`` then random horizontal flip."""

    crop_padding: int = 0
    hflip: bool = False

    def __post_init__(self) -> None:
        if self.crop_padding < 0:
            raise ValueError(f"crop_padding must be >= 0, got {self.crop_padding}")

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Returns ``x`` untouched, drawing nothing from ``generator``, when both are off."""
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, generator)
        if self.hflip:
            x = random_hflip(x, generator)
        return x


def iterate_batches(
    data: ImageData,
    *,
    batch_size: int,
    mean: Tensor,
    std: Tensor,
    shuffle: bool,
    generator: torch.Generator | None = None,
    augment: Augment | None = None,
    device: str | torch.device = "cpu",
    drop_last: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """One epoch of normalised float32 ``(x, y)`` batches on ``device``.

    ``generator`` drives both the shuffle and the augmentation, so the same seed reproduces the
    epoch exactly. Only each batch is converted to float, never the whole split.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(data)
    if shuffle:
        order = torch.randperm(n, generator=generator, device=_draw_device(generator)).cpu()
    else:
        order = torch.arange(n)
    mean, std = mean.to(device), std.to(device)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        if drop_last and len(index) < batch_size:
            break
        x = data.images[index].to(device)
        if augment is not None:
            x = augment(x, generator)
        yield normalize(x, mean, std), data.labels[index].to(device)
