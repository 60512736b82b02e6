"""Conv-4, the standard few-shot backbone (Vinyals et al. 2016; Snell et al. 2017; Finn et al. 2017).

Four blocks of ``3x3 conv (hidden_channels) → BatchNorm → ReLU → 2x2 max-pool``; the output is
flattened. On 28x28 Omniglot the spatial size goes 28 → 14 → 7 → 3 → 1, so the embedding has
``hidden_channels`` (64) features. ``pooled_blocks`` < 4 leaves the last blocks unpooled
(Relation Networks compare 7x7 feature maps).

``batch_norm`` chooses the normalization: ``"running"`` (``nn.BatchNorm2d``: batch statistics in
training, running statistics in eval mode — for metric learners trained with ordinary
backpropagation), ``"task"`` (:class:`~innerloop.nn.task_batch_norm.TaskBatchNorm`: always the
current batch's statistics, no buffers — for learners run through ``torch.func``) or ``"none"``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from innerloop.nn.task_batch_norm import TaskBatchNorm

BATCH_NORMS = ("running", "task", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "running":
        return nn.BatchNorm2d(channels)
    if kind == "task":
        return TaskBatchNorm(channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"batch_norm must be one of {', '.join(BATCH_NORMS)}, got '{kind}'")


def conv_block(in_channels: int, out_channels: int, batch_norm: str = "running",
               pool: bool = True) -> nn.Sequential:
    """``3x3 conv → norm → ReLU → 2x2 max-pool`` (the pool is an identity when ``pool`` is False)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        _norm(batch_norm, out_channels),
        nn.ReLU(),
        nn.MaxPool2d(2) if pool else nn.Identity(),
    )


class Conv4(nn.Module):
    """Conv-4 embedding network: ``[B, C, H, W] → [B, embedding_dim]``."""

    def __init__(self, in_channels: int = 1, hidden_channels: int = 64, image_size: int = 28,
                 batch_norm: str = "running", pooled_blocks: int = 4) -> None:
        super().__init__()
        if not 0 <= pooled_blocks <= 4:
            raise ValueError(f"pooled_blocks must be in 0..4, got {pooled_blocks}")
        self.blocks = nn.Sequential(*(
            conv_block(in_channels if index == 0 else hidden_channels, hidden_channels, batch_norm,
                       pool=index < pooled_blocks)
            for index in range(4)))
        side = image_size
        for _ in range(pooled_blocks):
            side //= 2
        if side < 1:
            raise ValueError(f"Conv-4 needs images of at least 16x16, got {image_size}x{image_size}")
        self.out_channels = hidden_channels
        self.feature_side = side  # the feature maps are [B, hidden_channels, side, side]
        self.embedding_dim = hidden_channels * side * side

    def feature_maps(self, images: Tensor) -> Tensor:
        """The last block's output before flattening: ``[B, hidden_channels, side, side]``."""
        return self.blocks(images)

    def forward(self, images: Tensor) -> Tensor:
        return torch.flatten(self.blocks(images), start_dim=1)
