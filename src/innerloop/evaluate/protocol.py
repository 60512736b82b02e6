"""The evaluation protocol: a per-episode score over fixed seeded episodes, mean ± 95% CI.

The score is the learner's ``episode_metric``: query accuracy for classifiers, query mean
squared error for regression learners (``learner.metric_name`` says which).

:func:`evaluate_uncertainty` scores the learner's predictive distribution on the same episodes:
NLL, Brier score and expected calibration error for classifiers, Gaussian NLL and interval
coverage for regression (:mod:`innerloop.evaluate.uncertainty`).

The interval is the normal approximation used throughout the few-shot literature,
``1.96 * std(accuracies, ddof=1) / sqrt(num_episodes)``, over per-episode query accuracies.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from innerloop.algorithms.base import MetaLearner
from innerloop.algorithms.predictive import GaussianMixturePredictive
from innerloop.evaluate.uncertainty import (
    ReliabilityBins,
    bootstrap_ece,
    brier_score,
    classification_nll,
    gaussian_nll,
    interval_coverage,
    reliability_bins,
)
from innerloop.tasks.episodes import Episodes
from innerloop.tasks.fixed import FixedEpisodes


def seeded_batches(episodes: FixedEpisodes, batch_size: int) -> Iterator[Episodes]:
    """The fixed episodes in batches, each scored under torch's global generator seeded from
    ``(episodes.seed, first episode of the batch)`` and restored afterwards, so a learner that
    samples (neural processes, VERSA, PLATIPUS) gives the same scores on every evaluation with
    the same batch size, and evaluating does not move the caller's random stream."""
    start = 0
    for batch in episodes.batches(batch_size):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed((episodes.seed * 1_000_003 + start) % 2**63)
            yield batch
        start += len(batch)


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


# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (standard tables).
_T_QUANTILES_95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
                   2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
                   2.052, 2.048, 2.045, 2.042)


def t_quantile_95(degrees_of_freedom: int) -> float:
    """``t_{0.975}`` with ``degrees_of_freedom``: the table up to 30, beyond it the Cornish-Fisher
    expansion around the normal quantile (error < 1e-4 there)."""
    if degrees_of_freedom < 1:
        raise ValueError(f"degrees_of_freedom must be >= 1, got {degrees_of_freedom}")
    if degrees_of_freedom <= len(_T_QUANTILES_95):
        return _T_QUANTILES_95[degrees_of_freedom - 1]
    z, n = 1.959964, float(degrees_of_freedom)
    return z + (z ** 3 + z) / (4 * n) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * n ** 2)


def mean_and_t_ci95(values: Tensor) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t confidence interval of ``values``: for a few
    independent repetitions (seeds, stream orders), where the normal interval of
    :func:`mean_and_ci95` is too narrow (×1.42 at 5 values, ×6.5 at 2)."""
    values = values.to(torch.float64)
    if values.numel() < 2:
        return float(values.mean()), float("nan")
    half_width = t_quantile_95(values.numel() - 1) * float(values.std(unbiased=True)) / math.sqrt(values.numel())
    return float(values.mean()), half_width


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
        for batch in seeded_batches(episodes, batch_size):
            scores.append(learner.episode_metric(batch).to(torch.float64))
    finally:
        learner.train(was_training)
    per_episode = torch.cat(scores)
    finite = torch.isfinite(per_episode)
    mean, ci95 = mean_and_ci95(per_episode[finite]) if bool(finite.any()) else (math.nan, math.nan)
    return EpisodeResult(learner.metric_name, per_episode, mean, ci95, time.perf_counter() - start,
                         non_finite=int((~finite).sum()))


@dataclass(frozen=True)
class UncertaintyResult:
    """Calibration and proper scores over the fixed episodes (see
    :mod:`~innerloop.evaluate.uncertainty`): ``metrics`` maps a name (``nll``, ``brier``,
    ``ece``; for regression ``nll`` and ``coverage_90`` etc.) to ``(mean, ci95)``."""

    kind: str  # "classification" or "regression"
    metrics: dict[str, tuple[float, float]]
    reliability: ReliabilityBins | None = None  # classification: the reliability diagram's bins
    coverage_curve: tuple[tuple[float, float], ...] = ()  # regression: (nominal, observed) levels
    non_finite: int = 0


CURVE_LEVELS = tuple(round(0.05 * k, 2) for k in range(1, 20))


@torch.no_grad()
def evaluate_uncertainty(learner: MetaLearner, episodes: FixedEpisodes, batch_size: int = 50,
                         bins: int = 15, levels: tuple[float, ...] = (0.5, 0.9, 0.95)) -> UncertaintyResult:
    """Score ``learner.predictive`` on every fixed episode: NLL, Brier and ECE for classifiers;
    Gaussian NLL and the coverage of central intervals at ``levels`` for regression learners.
    Episodes whose predictive is not finite are counted in ``non_finite`` and left out."""
    was_training = learner.training
    learner.eval()
    scores: dict[str, list[Tensor]] = {}
    pooled: dict[str, list[Tensor]] = {"confidence": [], "correct": []}
    kind = "classification"
    try:
        for batch in seeded_batches(episodes, batch_size):
            predictive = learner.predictive(batch)
            if isinstance(predictive, GaussianMixturePredictive):
                kind = "regression"
                valid = torch.isfinite(predictive.means) & torch.isfinite(predictive.stds) & (predictive.stds > 0)
                finite = valid.flatten(1).all(1)
                per_task = {"nll": gaussian_nll(predictive, batch.query_y)}
                for level in sorted(set(levels) | set(CURVE_LEVELS)):
                    per_task[f"coverage_{level:g}"] = interval_coverage(predictive, batch.query_y, level)
            else:
                probs = predictive.probs
                finite = torch.isfinite(probs).flatten(1).all(1)
                per_task = {"nll": classification_nll(probs, batch.query_y),
                            "brier": brier_score(probs, batch.query_y)}
                confidence, guess = probs.max(-1)
                pooled["confidence"].append(confidence[finite])
                pooled["correct"].append((guess == batch.query_y)[finite])
            for name, values in per_task.items():
                scores.setdefault(name, []).append(values.to(torch.float64)[finite])
    finally:
        learner.train(was_training)
    metrics = {name: mean_and_ci95(torch.cat(values)) for name, values in scores.items()
               if kind == "classification" or name == "nll" or
               float(name.removeprefix("coverage_")) in levels}
    non_finite = episodes.num_episodes - int(torch.cat(scores["nll"]).numel())
    if kind == "regression":
        curve = tuple((level, float(torch.cat(scores[f"coverage_{level:g}"]).mean()))
                      for level in CURVE_LEVELS)
        return UncertaintyResult(kind, metrics, coverage_curve=curve, non_finite=non_finite)
    confidence, correct = torch.cat(pooled["confidence"]), torch.cat(pooled["correct"])
    metrics["ece"] = bootstrap_ece(confidence, correct, bins)
    return UncertaintyResult(kind, metrics, reliability_bins(confidence, correct, bins),
                             non_finite=non_finite)
