"""Recipe: L2 strengths per parameter, learned on a held-out split by implicit hyper-gradients.

Multinomial logistic regression on a small Fashion-MNIST training set,

    inner_loss(weights, h) = cross_entropy(train_x @ weights["w"] + weights["b"], train_y)
                             + 0.5 * sum(exp(h["log_l2"]) * weights["w"] ** 2)
    outer_loss(weights, h) = cross_entropy(val_x @ weights["w"] + weights["b"], val_y)

with ``log_l2`` one value (``global``), one per input pixel (``feature``, shared by the ten
classes) or one per weight (``weight``, 7,840 strengths). Hyper-gradients by implicit
differentiation (:class:`~innerloop.bilevel.ImplicitCG`) at the warm-started inner optimum,
Adam on ``log_l2``, keeping the strengths of the lowest validation loss seen. The baseline is a grid search over one global strength, solved along the
regularization path (strongest first, each solve warm-started from the previous), given the
same number of gradient evaluations (a Hessian-vector product counts as two).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from innerloop.bilevel.hyperparameter_descent import hyperparameter_descent
from innerloop.bilevel.implicit import ImplicitCG
from innerloop.bilevel.problem import BilevelProblem, GradientDescent
from innerloop.bilevel.experiments.data import CLASSES, Splits
from innerloop.functional.inner_optimizers import MomentumSGD
from innerloop.functional.params import Params

GRANULARITIES = ("global", "feature", "weight")


def _logits(weights: Params, inputs: Tensor) -> Tensor:
    return inputs @ weights["w"] + weights["b"]


def _accuracy_and_loss(weights: Params, inputs: Tensor, labels: Tensor) -> tuple[float, float]:
    logits = _logits(weights, inputs)
    return (float((logits.argmax(1) == labels).float().mean()),
            float(torch.nn.functional.cross_entropy(logits, labels)))


def _strengths(log_l2: Tensor, features: int) -> Tensor:
    """Broadcast ``log_l2`` of any granularity to the weight's ``[features, classes]`` shape."""
    if log_l2.numel() == 1:
        return torch.exp(log_l2).reshape(1, 1)
    if log_l2.shape == (features,):
        return torch.exp(log_l2)[:, None]
    return torch.exp(log_l2)


def problem_for(splits: Splits, inner_steps: int) -> BilevelProblem:
    features = splits.train_x.shape[1]
    smoothness = 0.5 * float(torch.linalg.eigvalsh(splits.train_x.T @ splits.train_x / len(splits.train_x))[-1])

    def inner(weights: Params, h: Params) -> Tensor:
        penalty = 0.5 * (_strengths(h["log_l2"], features) * weights["w"] ** 2).sum()
        return torch.nn.functional.cross_entropy(_logits(weights, splits.train_x), splits.train_y) + penalty

    def outer(weights: Params, h: Params) -> Tensor:
        return torch.nn.functional.cross_entropy(_logits(weights, splits.val_x), splits.val_y)

    def optimizer(h: Params) -> MomentumSGD:  # step 1 / L for the current strengths, Nesterov momentum
        largest = float(torch.exp(h["log_l2"].detach()).max())
        return MomentumSGD(1.0 / (smoothness + largest), momentum=0.9, nesterov=True)

    return BilevelProblem(inner, outer, GradientDescent(inner_steps, optimizer))


def zero_weights(features: int) -> Params:
    return {"w": torch.zeros(features, CLASSES), "b": torch.zeros(CLASSES)}


def learned(splits: Splits, granularity: str, initial_log_l2: float, outer_steps: int, outer_lr: float,
            inner_steps: int, cg_iterations: int) -> dict[str, Any]:
    features = splits.train_x.shape[1]
    shape = {"global": (1,), "feature": (features,), "weight": (features, CLASSES)}[granularity]
    problem = problem_for(splits, inner_steps)
    # The first solve starts cold: give it the steps of a path point, then warm starts.
    start, _ = problem.solver.run(problem.inner_loss, zero_weights(features),
                                  {"log_l2": torch.full(shape, initial_log_l2)}, steps=4 * inner_steps)
    began = time.perf_counter()
    history = hyperparameter_descent(problem, start, {"log_l2": torch.full(shape, initial_log_l2)},
                                     ImplicitCG(cg_iterations), outer_steps, warm_start=True,
                                     outer_optimizer=lambda tensors: torch.optim.Adam(tensors, lr=outer_lr))
    weights, _ = problem.solver.run(problem.inner_loss, history.weights, history.best_hyperparameters)
    seconds = time.perf_counter() - began
    evaluations = 4 * inner_steps + outer_steps * (inner_steps + 2 * cg_iterations + 3) + inner_steps
    test_accuracy, test_loss = _accuracy_and_loss(weights, splits.test_x, splits.test_y)
    val_accuracy, val_loss = _accuracy_and_loss(weights, splits.val_x, splits.val_y)
    log_l2 = history.best_hyperparameters["log_l2"]
    return {"test_accuracy": test_accuracy, "test_loss": test_loss, "val_accuracy": val_accuracy,
            "val_loss": val_loss, "gradient_evaluations": evaluations, "seconds": seconds,
            "log_l2_mean": float(log_l2.mean()), "log_l2_std": float(log_l2.std()) if log_l2.numel() > 1 else 0.0,
            "final_inner_gradient_norm": history.inner_gradient_norms[-1], "val_loss_curve": history.outer_losses}


def grid_search(splits: Splits, budget: int, grid_points: int, low: float, high: float) -> dict[str, Any]:
    """Global strengths ``exp(linspace(high, low))``, strongest first, along the regularization path."""
    features = splits.train_x.shape[1]
    steps = budget // grid_points
    problem = problem_for(splits, steps)
    weights, best = zero_weights(features), None
    began = time.perf_counter()
    for log_l2 in torch.linspace(high, low, grid_points):
        hyper = {"log_l2": log_l2.reshape(1)}
        weights, _ = problem.solver.run(problem.inner_loss, weights, hyper)
        val_loss = float(problem.outer_loss(weights, hyper))
        if best is None or val_loss < best[0]:
            best = (val_loss, float(log_l2), weights)
    seconds = time.perf_counter() - began
    val_loss, log_l2, weights = best
    test_accuracy, test_loss = _accuracy_and_loss(weights, splits.test_x, splits.test_y)
    val_accuracy, _ = _accuracy_and_loss(weights, splits.val_x, splits.val_y)
    return {"test_accuracy": test_accuracy, "test_loss": test_loss, "val_accuracy": val_accuracy,
            "val_loss": val_loss, "gradient_evaluations": steps * grid_points, "seconds": seconds,
            "log_l2_mean": log_l2, "log_l2_std": 0.0, "grid_step": (high - low) / max(grid_points - 1, 1),
            "steps_per_point": steps}


def run_seed(splits: Splits, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """All methods of the recipe on one seeded split: ``{method name: metrics}``."""
    results: dict[str, dict[str, Any]] = {}
    budget = None
    for granularity in settings["granularities"]:
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        name = f"hyper-gradient, {granularity} L2"
        results[name] = learned(splits, granularity, settings["initial_log_l2"], settings["outer_steps"],
                                settings["outer_lr"], settings["inner_steps"], settings["cg_iterations"])
        budget = results[name]["gradient_evaluations"] if budget is None else max(budget, results[name]["gradient_evaluations"])
    grid_points = settings["grid_points"]
    results[f"grid search, global L2 ({grid_points} values)"] = grid_search(
        splits, budget or grid_points * settings["inner_steps"], grid_points, settings["grid_low"], settings["grid_high"])
    if not math.isfinite(results[f"grid search, global L2 ({grid_points} values)"]["val_loss"]):
        raise FloatingPointError("the grid search diverged")
    return results
