from __future__ import annotations

import math

import pytest
import torch

from innerloop.evaluate import EvaluationReport, StepResult, mean_and_ci95


def test_ci95_is_the_normal_interval_of_the_mean():
    values = torch.tensor([0.8, 1.0, 0.6, 0.9, 0.7], dtype=torch.float64)
    mean, ci95 = mean_and_ci95(values)
    assert math.isclose(mean, 0.8, rel_tol=1e-12)
    sample_std = math.sqrt(sum((v - 0.8) ** 2 for v in [0.8, 1.0, 0.6, 0.9, 0.7]) / 4)
    assert math.isclose(ci95, 1.96 * sample_std / math.sqrt(5), rel_tol=1e-12)
    assert math.isnan(mean_and_ci95(torch.tensor([1.0]))[1])


def test_report_is_saved_as_json_and_markdown(tmp_path):
    report = EvaluationReport(method="protonet", transductive=False, dataset="omniglot", split="test",
                              ways=5, shots=1, queries=15, episodes=1000, seed=0, metric="accuracy",
                              results=[StepResult(None, 0.98765, 0.00123)], checkpoint="best.pt",
                              step=100, seconds=1.5, date="2026-11-29")
    json_path, markdown_path = report.save(tmp_path)
    assert json_path.name == "eval-test-5w1s15q-best-1000ep-seed0.json"
    text = markdown_path.read_text()
    assert "98.77% ± 0.12%" in text and "transductive | no" in text and "1000 (seed 0)" in text


def test_report_of_a_gradient_method_names_every_inner_step_count(tmp_path):
    report = EvaluationReport(method="maml", transductive=False, dataset="sinusoid", split="test",
                              ways=1, shots=5, queries=100, episodes=600, seed=0, metric="mse",
                              results=[StepResult(1, 0.5, 0.01), StepResult(0, 3.0, 0.2),
                                       StepResult(10, 0.25, 0.005)],
                              checkpoint="best.pt", step=10, seconds=1.0, date="2026-11-29")
    json_path, markdown_path = report.save(tmp_path)
    assert json_path.name == "eval-test-1w5s100q-best-600ep-seed0-steps1-0-10.json"
    text = markdown_path.read_text()
    assert "mse after 0 inner steps | **3.0000 ± 0.2000**" in text
    assert "mse after 10 inner steps | **0.2500 ± 0.0050**" in text and "5-shot regression" in text
    assert (report.mean, report.ci95) == (0.5, 0.01)


def test_episodes_whose_adaptation_diverged_are_counted_and_left_out_of_the_mean():
    from innerloop.evaluate.protocol import evaluate_episodes

    class Scores(torch.nn.Module):
        metric_name, higher_is_better = "mse", False

        def episode_metric(self, batch):
            return batch

    class Fixed:
        seed = 0

        def batches(self, size):
            yield torch.tensor([1.0, float("nan"), 3.0, float("inf")], dtype=torch.float64)

    result = evaluate_episodes(Scores(), Fixed())
    assert result.non_finite == 2 and result.mean == 2.0 and result.num_episodes == 4
    report = EvaluationReport(method="maml", transductive=False, dataset="sinusoid", split="test",
                              ways=1, shots=5, queries=100, episodes=4, seed=0, metric="mse",
                              results=[StepResult(10, result.mean, result.ci95, result.non_finite)],
                              checkpoint="best.pt", step=1, seconds=0.1, date="2026-11-29")
    assert "2 of 4 episodes diverged" in report.markdown()


def test_a_classifier_whose_adaptation_diverged_scores_nan_not_chance():
    from innerloop.algorithms.base import MetaLearner
    from innerloop.tasks.episodes import Episodes

    class Diverging(MetaLearner):
        def query_logits(self, episodes):
            logits = torch.zeros(2, 3, 3)
            logits[1, 0, 0] = float("nan")
            return logits

    episodes = Episodes(torch.zeros(2, 3, 1), torch.arange(3).repeat(2, 1), torch.zeros(2, 3, 1),
                        torch.arange(3).repeat(2, 1), 3, 1, 1, torch.zeros(2, 3, dtype=torch.int64))
    scores = Diverging().episode_metric(episodes)
    assert scores[0] == 1 / 3 and torch.isnan(scores[1])


def test_student_t_interval_for_few_repetitions():
    from scipy.stats import t

    from innerloop.evaluate.protocol import mean_and_ci95, mean_and_t_ci95, t_quantile_95

    for degrees in (1, 2, 4, 7, 29, 30, 31, 60, 500):
        assert abs(t_quantile_95(degrees) - t.ppf(0.975, degrees)) < 6e-4, degrees
    values = torch.tensor([1.0, 2.0, 4.0, 3.0, 5.0])
    mean, half = mean_and_t_ci95(values)
    assert mean == 3.0 and abs(half - 2.776 * values.std().item() / 5 ** 0.5) < 1e-6
    assert half / mean_and_ci95(values)[1] == pytest.approx(2.776 / 1.96, rel=1e-6)
