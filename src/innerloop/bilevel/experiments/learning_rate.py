"""Recipe: the learning rate and momentum of an inner optimizer, learned by hyper-gradient descent.

A one-hidden-layer network (``hidden_units`` ReLU units) trained for ``inner_steps`` full-batch
steps of heavy-ball SGD on a small Fashion-MNIST training set, always from the same seeded
initialisation; the hyperparameters are ``log_lr`` and ``momentum_logit``
(``MomentumSGD(exp(log_lr), sigmoid(momentum_logit))``), and the outer objective is the
validation cross-entropy after training. Hyper-gradients by reverse mode through all the steps
(:class:`~innerloop.bilevel.Unrolled`; ``truncated`` and ``forward`` are the other choices),
Adam on the hyperparameters (Maclaurin et al. 2015; Franceschi et al. 2017).

Baselines, at equal compute counted in training runs (``RUNS_PER_HYPERGRADIENT``: reverse mode
is charged 3 runs per hyper-gradient, a run forward and about two backward, though it measured
about 2; the measured seconds are reported next to it): random search (log-uniform rate in ``[lr_low, lr_high]``, momentum uniform
in ``[0, 0.99]``) and a grid over the same box. Each method's chosen hyperparameters are scored
by training once more and measuring test accuracy; hyper-gradient descent keeps the
hyperparameters with the lowest validation loss along its path, as a search keeps its best.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from innerloop.bilevel.forward_mode import ForwardMode
from innerloop.bilevel.hyperparameter_descent import hyperparameter_descent
from innerloop.bilevel.problem import BilevelProblem, GradientDescent
from innerloop.bilevel.unrolled import Unrolled
from innerloop.bilevel.experiments.data import CLASSES, Splits
from innerloop.functional.inner_optimizers import MomentumSGD
from innerloop.functional.params import Params

MOMENTUM_HIGH = 0.99
MODES = ("unrolled", "truncated", "forward")
# One hyper-gradient's cost in plain training runs, charged to the search baselines' budget:
# measured about 2 (reverse mode), 1.1-1.7 (truncated to the last 20%) and 8-9.5 (forward mode,
# three hyperparameters) in benchmarks/results/bilevel_modes.json; charged generously.
RUNS_PER_HYPERGRADIENT = {"unrolled": 3, "truncated": 2, "forward": 10}


def mlp_logits(weights: Params, inputs: Tensor) -> Tensor:
    """The one-hidden-layer ReLU network of this recipe and the reweighting recipe."""
    return torch.relu(inputs @ weights["hidden"] + weights["hidden_bias"]) @ weights["out"] + weights["out_bias"]


def initial_weights(features: int, hidden_units: int, seed: int) -> Params:
    generator = torch.Generator().manual_seed(seed)
    return {"hidden": torch.randn(features, hidden_units, generator=generator) * math.sqrt(2.0 / features),
            "hidden_bias": torch.zeros(hidden_units),
            "out": torch.randn(hidden_units, CLASSES, generator=generator) * math.sqrt(1.0 / hidden_units),
            "out_bias": torch.zeros(CLASSES)}


def problem_for(splits: Splits, inner_steps: int) -> BilevelProblem:
    def inner(weights: Params, h: Params) -> Tensor:
        return torch.nn.functional.cross_entropy(mlp_logits(weights, splits.train_x), splits.train_y)

    def outer(weights: Params, h: Params) -> Tensor:
        return torch.nn.functional.cross_entropy(mlp_logits(weights, splits.val_x), splits.val_y)

    solver = GradientDescent(inner_steps, lambda h: MomentumSGD(torch.exp(h["log_lr"]),
                                                                 torch.sigmoid(h["momentum_logit"])))
    return BilevelProblem(inner, outer, solver)


def _score(problem: BilevelProblem, splits: Splits, start: Params, lr: float, momentum: float) -> dict[str, float]:
    hyper = {"log_lr": torch.tensor(math.log(lr)), "momentum_logit": torch.logit(torch.tensor(momentum))}
    with torch.no_grad():
        weights, _ = problem.solver.run(problem.inner_loss, start, hyper)
        val_loss = float(problem.outer_loss(weights, hyper))
        test_logits = mlp_logits(weights, splits.test_x)
    test_accuracy = float((test_logits.argmax(1) == splits.test_y).float().mean())
    return {"val_loss": val_loss if math.isfinite(val_loss) else float("inf"), "test_accuracy": test_accuracy,
            "lr": lr, "momentum": momentum}


def learned(problem: BilevelProblem, splits: Splits, start: Params, settings: dict[str, Any]) -> dict[str, Any]:
    mode = settings["mode"]
    method = {"unrolled": Unrolled(), "truncated": Unrolled(truncate=settings["truncate"]),
              "forward": ForwardMode(chunk_size=2)}[mode]
    began = time.perf_counter()
    history = hyperparameter_descent(
        problem, start, {"log_lr": torch.tensor(math.log(settings["initial_lr"])),
                         "momentum_logit": torch.logit(torch.tensor(settings["initial_momentum"]))},
        method, settings["outer_steps"], outer_optimizer=lambda tensors: torch.optim.Adam(tensors, lr=settings["outer_lr"]))
    lr = float(torch.exp(history.best_hyperparameters["log_lr"]))
    momentum = min(float(torch.sigmoid(history.best_hyperparameters["momentum_logit"])), MOMENTUM_HIGH)
    result = _score(problem, splits, start, lr, momentum)
    result.update(seconds=time.perf_counter() - began,
                  training_runs=RUNS_PER_HYPERGRADIENT[mode] * settings["outer_steps"] + 1,
                  val_loss_curve=history.outer_losses)
    return result


def searched(problem: BilevelProblem, splits: Splits, start: Params, candidates: list[tuple[float, float]]) -> dict[str, Any]:
    began = time.perf_counter()
    scores = [_score(problem, splits, start, lr, momentum) for lr, momentum in candidates]
    best = min(scores, key=lambda score: score["val_loss"])
    return dict(best, seconds=time.perf_counter() - began, training_runs=len(candidates))


def run_seed(splits: Splits, settings: dict[str, Any], seed: int) -> dict[str, dict[str, Any]]:
    if settings["mode"] not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {settings['mode']!r}")
    problem = problem_for(splits, settings["inner_steps"])
    start = initial_weights(splits.train_x.shape[1], settings["hidden_units"], seed)
    budget = RUNS_PER_HYPERGRADIENT[settings["mode"]] * settings["outer_steps"] + 1
    low, high = math.log(settings["lr_low"]), math.log(settings["lr_high"])
    generator = torch.Generator().manual_seed(10_000 + seed)
    random_candidates = [(math.exp(low + (high - low) * float(torch.rand((), generator=generator))),
                          MOMENTUM_HIGH * float(torch.rand((), generator=generator))) for _ in range(budget)]
    side = max(int(math.isqrt(budget)), 1)
    grid_candidates = [(math.exp(log_lr), momentum) for log_lr in torch.linspace(low, high, side).tolist()
                       for momentum in torch.linspace(0.0, MOMENTUM_HIGH, side).tolist()]
    return {f"hyper-gradient descent ({settings['mode']})": learned(problem, splits, start, settings),
            f"random search ({budget} runs)": searched(problem, splits, start, random_candidates),
            f"grid search ({side}x{side} runs)": searched(problem, splits, start, grid_candidates),
            "initial hyperparameters": dict(_score(problem, splits, start, settings["initial_lr"],
                                                   settings["initial_momentum"]), seconds=0.0, training_runs=1)}
