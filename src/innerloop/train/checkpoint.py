"""Checkpoints: written atomically, read with ``weights_only=True`` (a checkpoint never runs code)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from innerloop.data.store import atomic_torch_save
from innerloop.errors import InnerloopError

LAST = "last.pt"
BEST = "best.pt"


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` to ``path`` atomically: a crash leaves the previous file intact."""
    atomic_torch_save(payload, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise InnerloopError(f"no checkpoint at {path}; train first with `innerloop train CONFIG`")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors name the offending global
        raise InnerloopError(f"cannot read checkpoint {path}: {error}") from None
