"""Conv-4, the standard few-shot backbone (Vinyals et al. 2016; Snell et al. 2017).

Four blocks of ``3x3 conv (hidden_channels) → BatchNorm → ReLU → 2x2 max-pool``; the output is
flattened. On 28x28 Omniglot the spatial size goes 28 → 14 → 7 → 3 → 1, so the embedding has
``hidden_channels`` (64) features.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )


class Conv4(nn.Module):
    """Conv-4 embedding network: ``[B, C, H, W] → [B, embedding_dim]``."""

    def __init__(self, in_channels: int = 1, hidden_channels: int = 64, image_size: int = 28) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            conv_block(in_channels, hidden_channels),
            *(conv_block(hidden_channels, hidden_channels) for _ in range(3)),
        )
        side = image_size
        for _ in range(4):
            side //= 2
        if side < 1:
            raise ValueError(f"Conv-4 needs images of at least 16x16, got {image_size}x{image_size}")
        self.embedding_dim = hidden_channels * side * side

    def forward(self, images: Tensor) -> Tensor:
        return torch.flatten(self.blocks(images), start_dim=1)
