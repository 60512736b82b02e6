"""Problem families for learned optimizers: what an optimizer is meta-trained and tested on.

A :class:`Problem` is a starting point and a loss, ``loss(params, step)`` (the step selects the
minibatch of stochastic problems), in the functional core's parameter-dict form. Families sample
problems from a ``torch.Generator``, so a held-out set is a seed.

* :class:`QuadraticProblems` — ``f(theta) = ||W theta - y||^2`` with ``W [dim, dim]`` and
  ``y [dim]`` standard normal, ``theta`` starting standard normal (Andrychowicz et al. 2016, 3.1).
* :class:`ClassifierProblems` — a small MLP (one sigmoid hidden layer) trained with
  cross-entropy on minibatches of a classification episode drawn from a real class split
  (Omniglot, flattened images): the classes of a meta-training split for meta-training, those
  of the test split for the held-out task (the paper's MNIST experiment, on Omniglot here).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from innerloop.functional import Params
from innerloop.tasks.sampler import EpisodeSampler


@dataclass(frozen=True)
class Problem:
    params: Params  # the starting point
    loss: Callable[[Params, int], Tensor]  # loss(params, step)


@dataclass(frozen=True)
class QuadraticProblems:
    dim: int = 10

    def sample(self, generator: torch.Generator) -> Problem:
        weights = torch.randn(self.dim, self.dim, generator=generator)
        targets = torch.randn(self.dim, generator=generator)
        start = torch.randn(self.dim, generator=generator)

        def loss(params: Params, step: int) -> Tensor:
            return (weights @ params["theta"] - targets).pow(2).sum()

        return Problem({"theta": start}, loss)


@dataclass(frozen=True)
class ClassifierProblems:
    """An MLP ``inputs -> hidden (sigmoid) -> ways`` on one episode of ``sampler``'s split;
    step ``k`` uses minibatch ``k`` of ``batch_size`` examples (a seeded permutation per epoch)."""

    sampler: EpisodeSampler
    hidden: int = 20
    batch_size: int = 64

    def sample(self, generator: torch.Generator) -> Problem:
        episode = self.sampler.sample(1, generator)
        inputs = torch.cat([episode.support_x[0], episode.query_x[0]]).flatten(1)
        targets = torch.cat([episode.support_y[0], episode.query_y[0]])
        features, ways = inputs.shape[1], episode.ways
        first = torch.randn(self.hidden, features, generator=generator) / features ** 0.5
        second = torch.randn(ways, self.hidden, generator=generator) / self.hidden ** 0.5
        start = {"hidden.weight": first, "hidden.bias": torch.zeros(self.hidden),
                 "output.weight": second, "output.bias": torch.zeros(ways)}
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
        count, size = inputs.shape[0], min(self.batch_size, inputs.shape[0])
        per_epoch = count // size

        def loss(params: Params, step: int) -> Tensor:
            epoch_order = torch.randperm(count, generator=torch.Generator().manual_seed(seed + step // per_epoch))
            rows = epoch_order[(step % per_epoch) * size:(step % per_epoch + 1) * size]
            hidden = torch.sigmoid(F.linear(inputs[rows], params["hidden.weight"], params["hidden.bias"]))
            return F.cross_entropy(F.linear(hidden, params["output.weight"], params["output.bias"]), targets[rows])

        return Problem(start, loss)
