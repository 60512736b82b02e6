"""The evaluation protocol: a per-episode score over fixed seeded episodes, mean ± 95% CI.

The score is the learner's ``episode_metric``: query accuracy for classifiers, query mean
squared error for regression learners (``learner.metric_name`` says which).

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
class EpisodeResult:
    """Per-episode scores (accuracy or MSE, named by ``metric``) and their summary."""

    metric: str
    episode_scores: Tensor  # float64 [num_episodes], non-finite where adaptation diverged
    mean: float  # over the episodes with a finite score
    ci95: float
    seconds: float
    non_finite: int = 0  # episodes whose score is nan or inf (e.g. an inner loop that diverged)

    @property
    def num_episodes(self) -> int:
        return int(self.episode_scores.numel())


def mean_and_ci95(values: Tensor) -> tuple[float, float]:
    """Mean and half-width of the 95% normal confidence interval of ``values``."""
    values = values.to(torch.float64)
    if values.numel() < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), 1.96 * float(values.std(unbiased=True)) / math.sqrt(values.numel())


@torch.no_grad()
def evaluate_episodes(learner: MetaLearner, episodes: FixedEpisodes, batch_size: int = 50) -> EpisodeResult:
    """Score ``learner`` on every fixed episode (learner in eval mode; its mode is restored).

    An episode whose score is not finite (an inner loop that diverged on it) is counted in
    ``non_finite`` and left out of the mean and interval, which reports must then state.

    Gradient-based learners still take their inner steps here: ``torch.func.grad`` computes
    inner gradients under ``no_grad``, and the inner loop runs first order, keeping no graph.
    """
    was_training = learner.training
    learner.eval()
    start = time.perf_counter()
    scores = []
    try:
        for batch in episodes.batches(batch_size):
            scores.append(learner.episode_metric(batch).to(torch.float64))
    finally:
        learner.train(was_training)
    per_episode = torch.cat(scores)
    finite = torch.isfinite(per_episode)
    mean, ci95 = mean_and_ci95(per_episode[finite]) if bool(finite.any()) else (math.nan, math.nan)
    return EpisodeResult(learner.metric_name, per_episode, mean, ci95, time.perf_counter() - start,
                         non_finite=int((~finite).sum()))
