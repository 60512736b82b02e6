"""Evaluation protocols and reports."""

from innerloop.evaluate.protocol import AccuracyResult, evaluate_accuracy, mean_and_ci95
from innerloop.evaluate.report import EvaluationReport
from innerloop.evaluate.run import evaluate_run

__all__ = ["AccuracyResult", "EvaluationReport", "evaluate_accuracy", "evaluate_run", "mean_and_ci95"]
