"""Evaluation protocols (scores and calibration over fixed episodes) and reports."""

from innerloop.evaluate.protocol import (
    EpisodeResult,
    UncertaintyResult,
    evaluate_episodes,
    evaluate_uncertainty,
    mean_and_ci95,
)
from innerloop.evaluate.report import EvaluationReport, StepResult
from innerloop.evaluate.run import evaluate_run

__all__ = ["EpisodeResult", "EvaluationReport", "evaluate_episodes", "evaluate_run", "evaluate_uncertainty",
           "mean_and_ci95", "StepResult", "UncertaintyResult"]
