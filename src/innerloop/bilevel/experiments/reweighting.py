"""Recipe: per-example loss weights for noisy labels, learned online by a one-step hyper-gradient.

A one-hidden-layer network trained by minibatch SGD on a Fashion-MNIST training set whose labels
are ``label_noise`` wrong (uniformly to another class), with a small clean validation set
(``val_size`` examples). Methods, all for ``train_steps`` steps of batch ``batch_size`` on the
same seeded batches from the same initialisation:

* ``learning to reweight`` (Ren et al. 2018, :mod:`innerloop.bilevel.learning_to_reweight`):
  every step weighs the batch by ``example_weights(...)`` against a clean batch of
  ``clean_batch`` validation examples, then takes the SGD step on the weighted loss;
* ``uniform weights``: plain training on the noisy labels;
* ``small-loss selection, grid search``: each step trains only on the ``keep`` fraction of the
  batch with the smallest loss (the small-loss trick of co-teaching, Han et al. 2018), ``keep``
  chosen by clean-validation accuracy from the recipe's ``keep_grid`` — sized to the compute of
  learning to reweight: a reweighted step costs about three plain ones (a lookahead
  forward/backward and its reverse pass, then the update), so the recipe's grid has three
  values; the measured seconds of every method are reported next to the accuracies;
* ``clean examples only``: training on the ``val_size`` clean examples alone.

Each is scored by test accuracy at the end; the fraction of weight learning to reweight puts
on mislabelled examples is reported too.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

from innerloop.bilevel.experiments.data import Splits
from innerloop.bilevel.experiments.learning_rate import initial_weights, mlp_logits
from innerloop.bilevel.learning_to_reweight import example_weights
from innerloop.functional.params import Params


def _per_example(weights: Params, inputs: Tensor, labels: Tensor) -> Tensor:
    return torch.nn.functional.cross_entropy(mlp_logits(weights, inputs), labels, reduction="none")


def _accuracy(weights: Params, inputs: Tensor, labels: Tensor) -> float:
    with torch.no_grad():
        return float((mlp_logits(weights, inputs).argmax(1) == labels).float().mean())


def _train(splits: Splits, settings: dict[str, Any], seed: int, rule: str, keep: float = 1.0,
           inputs: Tensor | None = None, labels: Tensor | None = None) -> dict[str, Any]:
    inputs = splits.train_x if inputs is None else inputs
    labels = splits.train_y if labels is None else labels
    weights = initial_weights(inputs.shape[1], settings["hidden_units"], seed)
    generator = torch.Generator().manual_seed(20_000 + seed)  # the training batches: the same for every method
    clean_generator = torch.Generator().manual_seed(30_000 + seed)  # learning to reweight's clean batches
    lr, batch_size = settings["lr"], min(settings["batch_size"], len(labels))
    weight_on_noisy, weight_total = 0.0, 0.0
    began = time.perf_counter()
    for _ in range(settings["train_steps"]):
        batch = torch.randint(len(labels), (batch_size,), generator=generator)
        batch_x, batch_y = inputs[batch], labels[batch]
        if rule == "reweight":
            clean = torch.randint(len(splits.val_y), (settings["clean_batch"],), generator=clean_generator)
            coefficients = example_weights(_per_example, weights, batch_x, batch_y, splits.val_x[clean],
                                           splits.val_y[clean], inner_lr=lr)
            noisy = splits.noisy[batch].float()
            weight_on_noisy += float((coefficients * noisy).sum())
            weight_total += float(coefficients.sum())
        elif rule == "small-loss":
            with torch.no_grad():
                losses = _per_example(weights, batch_x, batch_y)
            kept = losses.argsort()[: max(1, round(keep * batch_size))]
            coefficients = torch.zeros(batch_size).index_fill_(0, kept, 1.0 / len(kept))
        else:
            coefficients = torch.full((batch_size,), 1.0 / batch_size)
        gradient = torch.func.grad(lambda w: (coefficients * _per_example(w, batch_x, batch_y)).sum())(weights)
        weights = {name: weights[name] - lr * gradient[name] for name in weights}
    result = {"test_accuracy": _accuracy(weights, splits.test_x, splits.test_y),
              "val_accuracy": _accuracy(weights, splits.val_x, splits.val_y),
              "seconds": time.perf_counter() - began}
    if rule == "reweight":
        result["weight_on_mislabelled"] = weight_on_noisy / max(weight_total, 1e-12)
    if rule == "small-loss":
        result["keep"] = keep
    return result


def run_seed(splits: Splits, settings: dict[str, Any], seed: int) -> dict[str, dict[str, Any]]:
    results = {"learning to reweight": _train(splits, settings, seed, "reweight"),
               "uniform weights": _train(splits, settings, seed, "uniform")}
    grid = settings["keep_grid"]
    runs = [_train(splits, settings, seed, "small-loss", keep=keep) for keep in grid]
    best = max(runs, key=lambda run: run["val_accuracy"])
    best = dict(best, seconds=sum(run["seconds"] for run in runs))
    results[f"small-loss selection, grid search ({len(grid)} values)"] = best
    results["clean examples only"] = _train(splits, settings, seed, "uniform", inputs=splits.val_x, labels=splits.val_y)
    if not all(math.isfinite(result["test_accuracy"]) for result in results.values()):
        raise FloatingPointError("a training run diverged")
    return results
