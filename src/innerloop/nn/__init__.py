"""Backbones, found by name through :data:`BACKBONES`."""

from collections.abc import Callable

from torch import nn

from innerloop.nn.conv4 import Conv4

BACKBONES: dict[str, Callable[..., nn.Module]] = {"conv4": Conv4}

__all__ = ["BACKBONES", "Conv4"]
