"""Meta-SGD (Li, Zhou, Chen & Li, 2017): learn the initialization and per-parameter inner rates.

Every adapted parameter ``params[name]`` has a learned rate tensor ``rates[name]`` of the same
shape. Inner loop, for each task:

    adapted = params
    repeat num_steps:  adapted[name] = adapted[name] - rates[name] * grad(support_loss)(adapted)[name]

Outer loop: minimise ``mean_t query_loss(adapted_t)`` with respect to both ``params`` and
``rates`` (the paper uses one inner step). The rates start at ``inner_lr``; they are ordinary
parameters of the module, so the Trainer's outer optimizer updates them with the rest.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from innerloop.algorithms.optimization.gradient_learner import GradientLearner, rate_key
from innerloop.functional import InnerOptimizer, PerParameterSGD


class MetaSGD(GradientLearner):
    """Meta-SGD: MAML with a learned learning rate for every parameter entry."""

    name = "metasgd"
    default_adapt = "all"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.inner_optimizer_name != "sgd":
            raise ValueError("Meta-SGD learns its own per-parameter rates: use the sgd inner optimizer")
        self.rates = nn.ParameterDict({
            rate_key(name): nn.Parameter(torch.full_like(parameter, self.inner_lr))
            for name, parameter in self.network.named_parameters() if name in self.adapted_names
        })

    def inner_optimizer(self) -> InnerOptimizer:
        return PerParameterSGD({name: self.rates[rate_key(name)] for name in self.adapted_names})
