"""Backbones, found by name through :data:`BACKBONES`; all of them run under ``torch.func``."""

from collections.abc import Callable

from torch import nn

from innerloop.nn.conv4 import BATCH_NORMS, Conv4
from innerloop.nn.custom_backbone import needs_module
from innerloop.nn.mlp import MLP, ResidualMLP
from innerloop.nn.task_batch_norm import TaskBatchNorm, batch_norm_groups, task_batch_norm

BACKBONES: dict[str, Callable[..., nn.Module]] = {"conv4": Conv4, "mlp": MLP, "residual-mlp": ResidualMLP}


def minilm_backbone(in_features: int, hidden_sizes: tuple[int, ...] = ()) -> nn.Module:
    """all-MiniLM-L6-v2 with its top layer trained, on token-id episodes (the ``text`` extra)."""
    from innerloop.nn.sentence_encoder import TokenEncoderBackbone

    return TokenEncoderBackbone(in_features, hidden_sizes, trainable_layers=1)


BACKBONES["minilm"] = minilm_backbone
VECTOR_BACKBONES = ("mlp", "residual-mlp", "minilm")  # take feature vectors (minilm: token ids), not images
# Your own nn.Module, passed in Python (innerloop.nn.custom_backbone): build_learner(config, backbone=...)
BACKBONES["custom"] = needs_module

__all__ = ["BACKBONES", "BATCH_NORMS", "VECTOR_BACKBONES", "Conv4", "MLP", "ResidualMLP", "TaskBatchNorm", "batch_norm_groups", "task_batch_norm"]
