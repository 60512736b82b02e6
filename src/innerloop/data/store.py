"""Class-indexed tensor stores and the class splits that episodes are drawn from.

A dataset is decoded once into a :class:`TensorStore`: every example of class ``c`` sits in the
contiguous rows ``images[class_offsets[c] : class_offsets[c] + class_counts[c]]``. Sampling an
episode is then a handful of index operations on this tensor (see :mod:`innerloop.tasks`).

A :class:`ClassSplit` is a view that selects some classes of a store and, optionally, turns each
selected class into several new classes by rotating its images by multiples of 90 degrees (the
Omniglot augmentation of Santoro et al. 2016 and Vinyals et al. 2016).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

STORE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class TensorStore:
    """Decoded examples grouped by class.

    Attributes:
        images: ``uint8 [N, ...]`` examples, all of one class contiguous.
        class_offsets: ``int64 [C]`` first row of each class.
        class_counts: ``int64 [C]`` number of examples of each class.
        class_names: name of each class (for Omniglot ``"Alphabet/characterNN"``).
        class_groups: group of each class (for Omniglot its alphabet).
    """

    images: Tensor
    class_offsets: Tensor
    class_counts: Tensor
    class_names: tuple[str, ...]
    class_groups: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return int(self.class_counts.numel())

    def save(self, path: Path) -> None:
        """Write the store atomically (temporary file in the same folder, then rename)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format_version": STORE_FORMAT_VERSION,
            "images": self.images,
            "class_offsets": self.class_offsets,
            "class_counts": self.class_counts,
            "class_names": list(self.class_names),
            "class_groups": list(self.class_groups),
        }
        atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: Path) -> TensorStore:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        if payload.get("format_version") != STORE_FORMAT_VERSION:
            raise ValueError(f"{path} has store format {payload.get('format_version')}")
        return cls(
            images=payload["images"],
            class_offsets=payload["class_offsets"],
            class_counts=payload["class_counts"],
            class_names=tuple(payload["class_names"]),
            class_groups=tuple(payload["class_groups"]),
        )


def cached_store(path: Path, decode: Callable[[], TensorStore], use_cache: bool = True) -> TensorStore:
    """The store cached at ``path``, else ``decode()`` saved there: a damaged cache or one from
    another format version is decoded again, and an unwritable cache only costs the next run a
    decode."""
    if use_cache and path.is_file():
        try:
            return TensorStore.load(path)
        except Exception:  # a cache from another version or a damaged file: decode again
            path.unlink(missing_ok=True)
    store = decode()
    if use_cache:
        try:
            store.save(path)
        except OSError:
            pass
    return store


def atomic_torch_save(obj: object, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then ``os.replace``.

    A crash at any moment leaves either the old file or the new one, never a torn file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise


@dataclass(frozen=True)
class ClassSplit:
    """A set of (possibly rotated) classes of a store that episodes are sampled from.

    Attributes:
        store: the decoded examples.
        name: split name, e.g. ``"train"`` or ``"test"``.
        base_classes: ``int64 [C]`` class index in ``store`` of each split class.
        quarter_turns: ``int64 [C]`` rotation of each split class, in multiples of 90 degrees
            counter-clockwise (0 when the split has no rotation augmentation).
    """

    store: TensorStore
    name: str
    base_classes: Tensor
    quarter_turns: Tensor

    @property
    def num_classes(self) -> int:
        return int(self.base_classes.numel())

    @property
    def min_examples_per_class(self) -> int:
        return int(self.store.class_counts[self.base_classes].min())

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(self.store.images.shape[1:])

    @staticmethod
    def with_rotations(
        store: TensorStore, name: str, base_classes: Tensor, rotations: tuple[int, ...] = (0,)
    ) -> ClassSplit:
        """Each base class becomes ``len(rotations)`` classes, one per rotation in degrees."""
        for degrees in rotations:
            if degrees % 90 != 0:
                raise ValueError(f"rotations must be multiples of 90 degrees, got {degrees}")
        turns = torch.tensor([(degrees // 90) % 4 for degrees in rotations], dtype=torch.int64)
        base = base_classes.to(torch.int64)
        # Class order: all base classes at rotation[0], then all at rotation[1], ...
        return ClassSplit(
            store=store,
            name=name,
            base_classes=base.repeat(len(rotations)),
            quarter_turns=turns.repeat_interleave(base.numel()),
        )
