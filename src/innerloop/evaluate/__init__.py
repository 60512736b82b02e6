"""Evaluation protocols and reports."""

from innerloop.evaluate.protocol import EpisodeResult, evaluate_episodes, mean_and_ci95
from innerloop.evaluate.report import EvaluationReport, StepResult
from innerloop.evaluate.run import evaluate_run

__all__ = ["EpisodeResult", "EvaluationReport", "evaluate_episodes", "evaluate_run", "mean_and_ci95", "StepResult"]
