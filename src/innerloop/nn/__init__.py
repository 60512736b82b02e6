"""Backbones, found by name through :data:`BACKBONES`; all of them run under ``torch.func``."""

from collections.abc import Callable

from torch import nn

from innerloop.nn.conv4 import BATCH_NORMS, Conv4
from innerloop.nn.custom_backbone import needs_module
from innerloop.nn.mlp import MLP, ResidualMLP
from innerloop.nn.task_batch_norm import TaskBatchNorm, batch_norm_groups, task_batch_norm

BACKBONES: dict[str, Callable[..., nn.Module]] = {"conv4": Conv4, "mlp": MLP, "residual-mlp": ResidualMLP}
VECTOR_BACKBONES = ("mlp", "residual-mlp")  # take feature vectors, not images
# Your own nn.Module, passed in Python (innerloop.nn.custom_backbone): build_learner(config, backbone=...)
BACKBONES["custom"] = needs_module

__all__ = ["BACKBONES", "BATCH_NORMS", "VECTOR_BACKBONES", "Conv4", "MLP", "ResidualMLP", "TaskBatchNorm", "batch_norm_groups", "task_batch_norm"]
