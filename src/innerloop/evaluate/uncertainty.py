"""How far to trust a prediction: calibration and proper scores of predictive distributions.

Classification (``probs [T, Q, ways]``, ``labels [T, Q]``):

* negative log-likelihood ``-log probs[y]``, per task the mean over its queries;
* Brier score ``sum_k (probs_k - [y = k])^2`` (Brier 1950; 0 is perfect, 2 the worst), per task
  the mean over its queries;
* expected calibration error (Naeini et al. 2015; Guo et al. 2017): the confidences
  ``max_k probs_k`` of all queries are put in ``bins`` equal-width bins of [0, 1] (bin ``b`` is
  ``(b/bins, (b+1)/bins]``, the first also holds 0), and
  ``ECE = sum_b (n_b / N) |accuracy_b - mean confidence_b|``. ECE is a property of a pool of
  predictions, not of one task (a 5-way task has 75 queries), so it is computed over all queries
  of all fixed tasks and its interval comes from a bootstrap over tasks.

Regression (a :class:`~innerloop.algorithms.predictive.GaussianMixturePredictive`):

* Gaussian NLL ``-log p(y)`` under the (mixture) predictive, per task the mean over queries;
* coverage of the central ``level`` interval: a target lies in the central interval of the
  predictive iff its CDF value ``F(y)`` satisfies ``|F(y) - 1/2| <= level / 2``; per task the
  fraction of covered queries. A calibrated predictor covers ``level`` of the targets.

Per-task scores are summarized as mean ± the normal 95% interval over tasks, like accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from innerloop.algorithms.predictive import GaussianMixturePredictive

PROBABILITY_FLOOR = 1e-12  # -log(0) would be infinite; this caps one query's NLL at ~27.6


def classification_nll(probs: Tensor, labels: Tensor) -> Tensor:
    """Per-task mean of ``-log probs[label]``: ``[T]``."""
    picked = probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return -picked.clamp_min(PROBABILITY_FLOOR).log().mean(-1)


def brier_score(probs: Tensor, labels: Tensor) -> Tensor:
    """Per-task mean of ``sum_k (probs_k - onehot_k)^2``: ``[T]``."""
    onehot = torch.nn.functional.one_hot(labels, probs.shape[-1]).to(probs.dtype)
    return (probs - onehot).square().sum(-1).mean(-1)


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width confidence bins: the reliability diagram and the ECE are read from these."""

    edges: Tensor  # [bins + 1] from 0 to 1
    counts: Tensor  # [bins] predictions per bin
    mean_confidence: Tensor  # [bins], nan where empty
    accuracy: Tensor  # [bins], nan where empty

    @property
    def expected_calibration_error(self) -> float:
        filled = self.counts > 0
        weights = self.counts[filled].to(torch.float64) / self.counts.sum()
        gaps = (self.accuracy[filled] - self.mean_confidence[filled]).abs()
        return float((weights * gaps).sum())

    def to_dict(self) -> dict[str, list]:
        """Plain lists for a JSON report; an empty bin's mean confidence and accuracy are None."""
        def floats(values: Tensor) -> list[float | None]:
            return [None if value != value else float(value) for value in values.tolist()]

        return {"edges": floats(self.edges), "counts": [int(c) for c in self.counts.tolist()],
                "mean_confidence": floats(self.mean_confidence), "accuracy": floats(self.accuracy)}

    @classmethod
    def from_dict(cls, values: dict[str, list]) -> ReliabilityBins:
        """The bins of :meth:`to_dict` (None becomes nan)."""
        def floats(key: str) -> Tensor:
            return torch.tensor([float("nan") if v is None else float(v) for v in values[key]],
                                dtype=torch.float64)

        return cls(floats("edges"), torch.tensor(values["counts"], dtype=torch.int64),
                   floats("mean_confidence"), floats("accuracy"))


def reliability_bins(confidence: Tensor, correct: Tensor, bins: int = 15) -> ReliabilityBins:
    """Bin ``confidence`` (any shape, values in [0, 1]) with ``correct`` (same shape, bool)."""
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    confidence = confidence.reshape(-1).to(torch.float64)
    correct = correct.reshape(-1).to(torch.float64)
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    # (edges[b], edges[b + 1]] -> b; a confidence of exactly 0 goes to the first bin.
    index = torch.bucketize(confidence, edges[1:-1], right=False)
    counts = torch.bincount(index, minlength=bins)
    confidence_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, confidence)
    correct_sum = torch.zeros(bins, dtype=torch.float64).index_add_(0, index, correct)
    denominator = counts.to(torch.float64)
    empty = counts == 0
    nan = torch.full_like(denominator, float("nan"))
    return ReliabilityBins(edges, counts,
                           torch.where(empty, nan, confidence_sum / denominator.clamp_min(1)),
                           torch.where(empty, nan, correct_sum / denominator.clamp_min(1)))


def expected_calibration_error(confidence: Tensor, correct: Tensor, bins: int = 15) -> float:
    """ECE of a pool of predictions (see the module docstring)."""
    return reliability_bins(confidence, correct, bins).expected_calibration_error


def bootstrap_ece(confidence: Tensor, correct: Tensor, bins: int = 15, resamples: int = 1000,
                  seed: int = 0) -> tuple[float, float]:
    """ECE over all tasks' queries (``[T, Q]`` each) and the half-width of its 95% interval,
    ``1.96 * std`` of the ECE over ``resamples`` bootstrap resamples of the tasks."""
    ece = expected_calibration_error(confidence, correct, bins)
    num_tasks = confidence.shape[0]
    if num_tasks < 2:
        return ece, float("nan")
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, num_tasks, (resamples, num_tasks), generator=generator)
    values = torch.tensor([expected_calibration_error(confidence[rows], correct[rows], bins)
                           for rows in draws], dtype=torch.float64)
    return ece, 1.96 * float(values.std(unbiased=True))


def gaussian_nll(predictive: GaussianMixturePredictive, targets: Tensor) -> Tensor:
    """Per-task mean of ``-log p(y)`` under the predictive: ``[T]``."""
    return -predictive.log_prob(targets).mean(-1)


def interval_coverage(predictive: GaussianMixturePredictive, targets: Tensor, level: float) -> Tensor:
    """Per-task fraction of targets inside the central ``level`` predictive interval: ``[T]``."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    inside = (predictive.cdf(targets) - 0.5).abs() <= level / 2
    return inside.to(torch.float64).mean(-1)
