"""Uncertainty metrics against hand-computed values, and calibrated vs over-confident predictors."""

from __future__ import annotations

import math

import pytest
import torch

from innerloop.algorithms.base import MetaLearner
from innerloop.algorithms.predictive import CategoricalPredictive, GaussianMixturePredictive
from innerloop.evaluate.protocol import evaluate_uncertainty
from innerloop.evaluate.uncertainty import (
    bootstrap_ece,
    brier_score,
    classification_nll,
    expected_calibration_error,
    gaussian_nll,
    interval_coverage,
    reliability_bins,
)
from innerloop.tasks.episodes import Episodes


def test_nll_and_brier_match_hand_computation():
    probs = torch.tensor([[[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]]], dtype=torch.float64)
    labels = torch.tensor([[0, 2]])
    # NLL: (-log 0.7 - log 0.3) / 2
    assert classification_nll(probs, labels).item() == pytest.approx((-math.log(0.7) - math.log(0.3)) / 2)
    # Brier: ((0.3^2 + 0.2^2 + 0.1^2) + (0.1^2 + 0.6^2 + 0.7^2)) / 2 = (0.14 + 0.86) / 2
    assert brier_score(probs, labels).item() == pytest.approx(0.5)


def test_ece_matches_hand_computation():
    confidence = torch.tensor([0.95, 0.85, 0.65, 0.55, 0.30])
    correct = torch.tensor([True, False, True, True, False])
    # bins of width 0.5: (0, 0.5] holds 0.30 (accuracy 0); (0.5, 1] holds the other four
    # (mean confidence 0.75, accuracy 0.75). ECE = 1/5 * |0 - 0.3| + 4/5 * |0.75 - 0.75| = 0.06.
    assert expected_calibration_error(confidence, correct, bins=2) == pytest.approx(0.06)
    # 10 bins: every prediction alone in its bin: mean |correct - confidence|
    # = (0.05 + 0.85 + 0.35 + 0.45 + 0.30) / 5 = 0.40
    assert expected_calibration_error(confidence, correct, bins=10) == pytest.approx(0.40)


def test_reliability_bins_edges_are_right_closed():
    bins = reliability_bins(torch.tensor([0.0, 0.5, 0.5000001, 1.0]), torch.tensor([1, 0, 1, 1]).bool(), bins=2)
    assert bins.counts.tolist() == [2, 2]  # 0 and 0.5 in (0, 0.5]; the rest in (0.5, 1]
    assert bins.accuracy.tolist() == [0.5, 1.0]
    empty = reliability_bins(torch.tensor([0.95]), torch.tensor([True]), bins=4)
    assert empty.counts.tolist() == [0, 0, 0, 1] and math.isnan(float(empty.accuracy[0]))


def test_coverage_and_gaussian_nll_match_hand_computation():
    predictive = GaussianMixturePredictive.gaussian(torch.zeros(1, 4), torch.ones(1, 4))
    targets = torch.tensor([[0.0, 1.0, 1.7, -2.5]])
    # the central 90% interval of N(0, 1) is [-1.645, 1.645]: the first two are inside
    assert interval_coverage(predictive, targets, 0.9).item() == pytest.approx(0.5)
    assert interval_coverage(predictive, targets, 0.5).item() == pytest.approx(0.25)  # |y| <= 0.674
    expected = sum(0.5 * math.log(2 * math.pi) + 0.5 * y * y for y in (0.0, 1.0, 1.7, -2.5)) / 4
    assert gaussian_nll(predictive, targets).item() == pytest.approx(expected)


def test_gaussian_mixture_moments_density_cdf_and_quantiles():
    means = torch.tensor([[[-1.0, 2.0]]], dtype=torch.float64)
    stds = torch.tensor([[[0.5, 1.0]]], dtype=torch.float64)
    mixture = GaussianMixturePredictive(means, stds)
    assert mixture.mean.item() == pytest.approx(0.5)
    # E[y^2] = ((0.25 + 1) + (1 + 4)) / 2 = 3.125, variance = 3.125 - 0.25
    assert mixture.variance.item() == pytest.approx(2.875)
    y = torch.tensor([[0.3]])
    density = 0.5 * sum(math.exp(-0.5 * ((0.3 - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
                        for m, s in ((-1.0, 0.5), (2.0, 1.0)))
    assert mixture.log_prob(y).item() == pytest.approx(math.log(density))
    cdf = 0.5 * sum(0.5 * (1 + math.erf((0.3 - m) / (s * math.sqrt(2)))) for m, s in ((-1.0, 0.5), (2.0, 1.0)))
    assert mixture.cdf(y).item() == pytest.approx(cdf)
    assert mixture.cdf(mixture.quantile(0.83)).item() == pytest.approx(0.83, abs=1e-9)
    single = GaussianMixturePredictive.gaussian(torch.tensor([[1.0]]), torch.tensor([[2.0]]))
    assert single.quantile(0.95).item() == pytest.approx(1.0 + 2.0 * 1.6448536269514722, abs=1e-8)


def test_calibrated_classifier_has_near_zero_ece_and_overconfident_one_does_not():
    generator = torch.Generator().manual_seed(0)
    confidence = 0.3 + 0.7 * torch.rand(400, 50, generator=generator, dtype=torch.float64)
    calibrated = torch.rand(400, 50, generator=generator, dtype=torch.float64) < confidence
    overconfident = torch.rand(400, 50, generator=generator, dtype=torch.float64) < confidence - 0.25
    ece, half_width = bootstrap_ece(confidence, calibrated, bins=15, resamples=200)
    assert ece < 0.015 and 0 < half_width < 0.01
    bad, _ = bootstrap_ece(confidence, overconfident, bins=15, resamples=200)
    assert bad == pytest.approx(0.25, abs=0.02)


def test_calibrated_regressor_has_nominal_coverage_and_overconfident_one_does_not():
    generator = torch.Generator().manual_seed(1)
    mean = torch.randn(200, 100, generator=generator, dtype=torch.float64)
    std = 0.2 + torch.rand(200, 100, generator=generator, dtype=torch.float64)
    targets = mean + std * torch.randn(200, 100, generator=generator, dtype=torch.float64)
    calibrated = GaussianMixturePredictive.gaussian(mean, std)
    overconfident = GaussianMixturePredictive.gaussian(mean, std / 2)
    for level in (0.5, 0.9, 0.95):
        assert interval_coverage(calibrated, targets, level).mean().item() == pytest.approx(level, abs=0.01)
    # half the std: the 90% interval covers |z| <= 0.822, i.e. 58.9% of the targets
    assert interval_coverage(overconfident, targets, 0.9).mean().item() == pytest.approx(0.589, abs=0.015)
    assert gaussian_nll(overconfident, targets).mean() > gaussian_nll(calibrated, targets).mean() + 0.5


class _FixedPredictive(MetaLearner):
    """A stand-in learner whose predictive is given (one task of it diverged)."""

    def __init__(self, probs: torch.Tensor) -> None:
        super().__init__()
        self.probs = probs

    def predictive(self, episodes: Episodes) -> CategoricalPredictive:
        start = int(episodes.class_ids[0, 0])
        return CategoricalPredictive(self.probs[start:start + episodes.num_tasks])


class _Episodes:
    def __init__(self, labels: torch.Tensor) -> None:
        self.labels, self.num_episodes, self.seed = labels, labels.shape[0], 0

    def batches(self, batch_size: int):
        for start in range(0, self.num_episodes, batch_size):
            stop = min(start + batch_size, self.num_episodes)
            labels = self.labels[start:stop]
            empty = torch.zeros(stop - start, 1)
            yield Episodes(empty, empty, empty, labels, 3, 1, labels.shape[1],
                           torch.full((stop - start, 3), start))


def test_evaluate_uncertainty_pools_batches_and_leaves_out_diverged_tasks():
    generator = torch.Generator().manual_seed(2)
    probs = torch.softmax(torch.randn(7, 6, 3, generator=generator, dtype=torch.float64), -1)
    labels = torch.randint(0, 3, (7, 6), generator=generator)
    probs[4] = float("nan")
    result = evaluate_uncertainty(_FixedPredictive(probs), _Episodes(labels), batch_size=3, bins=5)
    keep = [0, 1, 2, 3, 5, 6]
    assert result.non_finite == 1
    assert result.metrics["nll"][0] == pytest.approx(classification_nll(probs[keep], labels[keep]).mean().item())
    assert result.metrics["brier"][0] == pytest.approx(brier_score(probs[keep], labels[keep]).mean().item())
    confidence, guess = probs[keep].max(-1)
    assert result.metrics["ece"][0] == pytest.approx(
        expected_calibration_error(confidence, guess == labels[keep], bins=5))


def test_ece_bins_follow_the_plotted_edges_exactly():
    bins = reliability_bins(torch.linspace(0, 1, 11, dtype=torch.float64)[3:4], torch.tensor([True]), bins=10)
    assert bins.counts.tolist() == [0, 0, 1, 0, 0, 0, 0, 0, 0, 0]  # 0.3 lies in (0.2, 0.3]


class _SamplingRegressor(MetaLearner):
    """A stand-in for a sampling learner: its predictive draws from torch's global generator."""

    metric_name = "mse"

    def predictive(self, episodes: Episodes) -> GaussianMixturePredictive:
        means = episodes.query_x[..., 0].unsqueeze(-1) + 0.3 * torch.randn(*episodes.query_x.shape[:2], 4,
                                                                           dtype=torch.float64)
        return GaussianMixturePredictive(means, torch.full_like(means, 0.5))


def test_regression_uncertainty_is_seeded_and_leaves_the_callers_random_stream_alone():
    from innerloop.data import DATASETS
    from innerloop.tasks.fixed import FixedEpisodes
    from innerloop.tasks.gp_functions import GaussianProcessTasks

    tasks = GaussianProcessTasks(DATASETS["gp"].split(None, "test"), shots=3, queries=20)
    episodes = FixedEpisodes(tasks, 12, seed=0)
    torch.manual_seed(5)
    state = torch.get_rng_state()
    first = evaluate_uncertainty(_SamplingRegressor(), episodes, batch_size=5, levels=(0.5, 0.9))
    assert torch.equal(torch.get_rng_state(), state)
    again = evaluate_uncertainty(_SamplingRegressor(), episodes, batch_size=5, levels=(0.5, 0.9))
    assert first.metrics == again.metrics and first.kind == "regression"
    assert set(first.metrics) == {"nll", "coverage_0.5", "coverage_0.9"}
    assert [level for level, _ in first.coverage_curve] == [round(0.05 * k, 2) for k in range(1, 20)]
    observed = [value for _, value in first.coverage_curve]
    assert observed == sorted(observed)  # wider intervals cover more
