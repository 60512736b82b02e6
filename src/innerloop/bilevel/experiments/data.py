"""Seeded train / validation / test splits of Fashion-MNIST for the hyperparameter recipes.

The 70,000 images (both official files pooled, as :mod:`innerloop.data.fashion_mnist` stores
them) are permuted with the split's seed and cut into disjoint ``train_size``, ``val_size`` and
``test_size`` examples; pixels become ``[0, 1]`` floats, flattened, centred by the training
mean. ``label_noise`` replaces that fraction of the *training* labels (an exact count, chosen by
the seed) by a uniformly drawn different class; validation and test labels stay clean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from innerloop.data.fashion_mnist import load_fashion_mnist
from innerloop.errors import ConfigError

CLASSES = 10


@dataclass(frozen=True)
class Splits:
    train_x: Tensor
    train_y: Tensor
    train_y_clean: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor

    @property
    def noisy(self) -> Tensor:
        """Mask of the training examples whose label was replaced."""
        return self.train_y != self.train_y_clean


def fashion_mnist_splits(seed: int, train_size: int, val_size: int, test_size: int, label_noise: float = 0.0,
                         root: str | None = None) -> Splits:
    store = load_fashion_mnist(root)
    total = int(store.class_counts.sum())
    if min(train_size, val_size, test_size) < 1 or train_size + val_size + test_size > total:
        raise ConfigError(f"data.train_size + val_size + test_size must be positive and at most {total}, got "
                          f"{train_size} + {val_size} + {test_size}")
    if not 0.0 <= label_noise < 1.0:
        raise ConfigError(f"data.label_noise must be in [0, 1), got {label_noise}")
    labels = torch.repeat_interleave(torch.arange(store.num_classes), store.class_counts)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(total, generator=generator)
    parts = torch.split(order, [train_size, val_size, test_size, total - train_size - val_size - test_size])
    images = store.images.reshape(total, -1).float() / 255.0
    mean = images[parts[0]].mean(0)
    features = [images[part] - mean for part in parts[:3]]
    train_y = labels[parts[0]].clone()
    flipped = torch.randperm(train_size, generator=generator)[: round(label_noise * train_size)]
    shift = torch.randint(1, CLASSES, (len(flipped),), generator=generator)
    noisy_y = train_y.clone()
    noisy_y[flipped] = (train_y[flipped] + shift) % CLASSES
    return Splits(features[0], noisy_y, train_y, features[1], labels[parts[1]], features[2], labels[parts[2]])
