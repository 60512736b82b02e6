"""The evaluation protocol: accuracy over fixed seeded episodes, mean ± 95% confidence interval.

The interval is the normal approximation used throughout the few-shot literature,
``1.96 * std(accuracies, ddof=1) / sqrt(num_episodes)``, over per-episode query accuracies.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from innerloop.algorithms.base import MetaLearner
from innerloop.tasks.fixed import FixedEpisodes


@dataclass(frozen=True)
class AccuracyResult:
    """Per-episode accuracies and their summary."""

    episode_accuracies: Tensor  # float64 [num_episodes]
    mean: float
    ci95: float
    seconds: float

    @property
    def num_episodes(self) -> int:
        return int(self.episode_accuracies.numel())


def mean_and_ci95(values: Tensor) -> tuple[float, float]:
    """Mean and half-width of the 95% normal confidence interval of ``values``."""
    values = values.to(torch.float64)
    if values.numel() < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), 1.96 * float(values.std(unbiased=True)) / math.sqrt(values.numel())


@torch.no_grad()
def evaluate_accuracy(learner: MetaLearner, episodes: FixedEpisodes, batch_size: int = 50) -> AccuracyResult:
    """Score ``learner`` on every fixed episode (learner in eval mode; its mode is restored)."""
    was_training = learner.training
    learner.eval()
    start = time.perf_counter()
    accuracies = []
    try:
        for batch in episodes.batches(batch_size):
            logits = learner.query_logits(batch)
            accuracies.append((logits.argmax(-1) == batch.query_y).to(torch.float64).mean(dim=1))
    finally:
        learner.train(was_training)
    per_episode = torch.cat(accuracies)
    mean, ci95 = mean_and_ci95(per_episode)
    return AccuracyResult(per_episode, mean, ci95, time.perf_counter() - start)
